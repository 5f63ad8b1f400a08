"""Splitting one batched answer back into the requests it came from (used by both deployments)."""

from __future__ import annotations

from typing import Any


def split_like(requests: list[list[Any]], flat: list[Any]) -> list[list[Any]]:
    """`flat` holds one answer per item of the concatenated `requests`; give each request its own."""
    out, i = [], 0
    for items in requests:
        out.append(flat[i:i + len(items)])
        i += len(items)
    if i != len(flat):
        raise ValueError(f"{len(flat)} answers for {i} items")
    return out
