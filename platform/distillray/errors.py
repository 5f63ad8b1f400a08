"""The exceptions distillray raises for problems the user can fix.

Every message says what is wrong, where, and how to fix it, on one line. Entry points turn a
`UserError` into that line on stderr and exit code 2 (see `distillray.cli`).
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (config, data, model dir, request): never a bug."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


class DataError(UserError, ValueError):
    """A dataset file cannot be read as labelled text (names the file and line)."""


class ModelError(UserError, ValueError):
    """A model dir is missing, unsafe (pickle weights) or does not fit the task."""


class ShardError(UserError, ValueError):
    """A logit shard directory does not match the config, or is corrupt beyond repair."""
