"""The root of the config tree, and loading it: a preset (or YAML file) plus dotted `key=value`
overrides -> deprecated keys moved (`MOVED_KEYS`) -> pydantic validation -> the cross-field rules
(`check`) -> relative paths made absolute. Each failure is one-line `ConfigError` naming the
field, the bad value and the fix."""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from distillray.config.sections import (
    DEFAULT_TEACHER,
    SMOKE,
    AugmentConfig,
    CheckpointConfig,
    CompareConfig,
    DataConfig,
    DistillConfig,
    FinetuneConfig,
    OptimConfig,
    PrecomputeConfig,
    PruneConfig,
    RunConfig,
    ServeConfig,
    SpaceSpec,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
    TuneConfig,
    WorkersConfig,
    _default_space,
    _Section,
)
from distillray.config.rules import _known_keys, check
from distillray.errors import ConfigError

logger = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).resolve().parents[1] / "presets"


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    precompute: PrecomputeConfig = Field(default_factory=PrecomputeConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, for crossing into Ray workers and for reports."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Rebuild (and re-validate) a config from `to_dict()` output."""
        return _validate(d)

    @property
    def run_name(self) -> str:
        # Used in folder names under run.output_dir: never a path separator or a leading dot.
        name = self.run.name or Path(self.run.output_dir.partition("?")[0].rstrip("/")).name  # no URI query
        return re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip(".-") or "distillray"


# ---------------------------------------------------------------------------------------------
# Loading: preset + overrides -> validated Config


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-4 as a float (YAML 1.1 wants 1.0e-4)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_yaml(source: str) -> dict[str, Any]:
    path = Path(source)
    if not path.suffix and (PRESET_DIR / f"{source}.yaml").is_file():
        path = PRESET_DIR / f"{source}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"--config {source!r}: no such preset or YAML file; "
            f"use one of the presets {list_presets()} or a path to a .yaml file"
        )
    try:
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: not valid YAML ({e}); fix the file") from e
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config {path}: the top level must be a mapping of sections")
    return loaded


def parse_value(text: str) -> Any:
    """Parse an override's value: JSON first (1e-4, [0,2,4], true, null), then YAML, then str."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506
    except yaml.YAMLError:
        return text


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides to a nested dict (a copy)."""
    tree = json.loads(json.dumps(tree))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"config error: override {item!r} is not key=value; fix: write it like distill.temperature=4"
            )
        parts = _split_key(key)
        if parts[:2] == ["tune", "space"] and len(parts) > 2 and isinstance(tree.get("tune", {}), dict):
            # one dimension set or dropped: the others keep their (default) specs
            tree.setdefault("tune", {}).setdefault(
                "space", {k: v.model_dump(exclude_none=True) for k, v in _default_space().items()})
        node = tree
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: i + 1])
                raise ConfigError(f"override {item!r}: {prefix} is a value, not a section")
            node = child
        value = parse_value(raw)
        if value is None and parts[:2] == ["tune", "space"] and len(parts) == 3:
            node.pop(parts[-1], None)  # tune.space.<key>=null drops that dimension
        else:
            node[parts[-1]] = value
    return tree


def _split_key(key: str) -> list[str]:
    """Split a dotted override key. Under tune.space the rest is one config key, with an optional
    SpaceSpec field: tune.space.distill.temperature.values=[1,2] -> tune, space,
    distill.temperature, values."""
    parts = key.split(".")
    if parts[:2] != ["tune", "space"] or len(parts) < 4:
        return parts
    rest = parts[2:]
    if rest[-1] in SpaceSpec.model_fields and len(rest) > 1:
        return ["tune", "space", ".".join(rest[:-1]), rest[-1]]
    return ["tune", "space", ".".join(rest)]


def load_config(source: str | None = None, overrides: list[str] | None = None,
                base_dir: str | os.PathLike | None = None) -> Config:
    """Build a validated Config from a preset name or YAML path plus `key=value` overrides.

    Relative paths (data files, output and cache dirs) are made absolute against `base_dir`
    (default: the current directory), so the config means the same thing inside Ray workers.
    """
    tree = _read_yaml(source) if source else {}
    tree = apply_overrides(tree, overrides or [])
    cfg = _validate(tree)
    return resolve_paths(cfg, Path(base_dir or os.getcwd()))


def _default_of(loc: list[str]) -> Any:
    node: Any = Config()
    for part in loc:
        if not hasattr(node, part):
            return None
        node = getattr(node, part)
    return node if not isinstance(node, BaseModel) else None


def _dig(tree: Any, loc: tuple) -> Any:
    for part in loc:
        if isinstance(tree, dict) and part in tree:
            tree = tree[part]
        elif isinstance(tree, list) and isinstance(part, int) and part < len(tree):  # a list item
            tree = tree[part]
        else:
            return None
    return tree


# Keys that moved out of `train` (deprecated: they keep working, with a warning, for one release).
MOVED_KEYS = {
    "train.grad_accum": "optim.grad_accum",
    "train.weight_decay": "optim.weight_decay",
    "train.warmup_ratio": "optim.warmup_ratio",
    "train.max_grad_norm": "optim.max_grad_norm",
    "train.num_workers": "workers.num_workers",
    "train.use_gpu": "workers.use_gpu",
    "train.cpus_per_worker": "workers.cpus_per_worker",
    "train.zero_stage": "workers.zero_stage",
    "train.precision": "workers.precision",
    "train.max_failures": "workers.max_failures",
    "train.checkpoint_every": "checkpoint.every",
}


def _migrate(tree: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Move deprecated keys (`MOVED_KEYS`, also as tune.space keys) to their new place, warning
    once per key. Returns the new tree and {new key: old key} for error messages."""
    moved: dict[str, str] = {}
    if not isinstance(tree, dict):
        return tree, moved
    tree = json.loads(json.dumps(tree))
    for old, new in MOVED_KEYS.items():
        (old_sec, old_name), (new_sec, new_name) = old.split("."), new.split(".")
        section = tree.get(old_sec)
        if not isinstance(section, dict) or old_name not in section:
            continue
        value = section.pop(old_name)
        target = tree.setdefault(new_sec, {})
        if not isinstance(target, dict):
            continue  # the section itself is wrong: validation names it
        if new_name in target and target[new_name] != value:
            raise ConfigError(
                f"config error: {old}={json.dumps(value)} and {new}={json.dumps(target[new_name])} are both "
                f"set; {old} is now {new}; fix: set only {new}")
        target[new_name] = value
        moved[new] = old
        _warn_moved(old, new)
    space = tree.get("tune", {}).get("space") if isinstance(tree.get("tune"), dict) else None
    if isinstance(space, dict) and any(k in MOVED_KEYS for k in space):
        tree["tune"]["space"] = {MOVED_KEYS.get(k, k): v for k, v in space.items()}
        for k in space:
            if k in MOVED_KEYS:
                _warn_moved(f"tune.space.{k}", f"tune.space.{MOVED_KEYS[k]}")
    return tree, moved


def _warn_moved(old: str, new: str) -> None:
    logger.warning("config key %s is deprecated and will be removed in the next release; use %s", old, new)


def _validate(tree: dict[str, Any]) -> Config:
    tree, moved = _migrate(tree)
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_explain(e, tree, moved)) from None
    check(cfg)
    return cfg


def _explain(e: ValidationError, tree: dict[str, Any], moved: dict[str, str] | None = None) -> str:
    """Turn the first pydantic error into one line: field, bad value, fix."""
    err = e.errors()[0]
    # Union/literal errors carry the union member in loc ('str', 'int', 'literal[...]'); drop it.
    loc = [str(p) for p in err["loc"] if not re.match(r"^(str|int|float|bool|list\[|literal\[|"
                                                       r"function-|none|is-instance)", str(p))]
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, _known_keys(Config), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see --print-config for every key"
        return f"config error: unknown key {key!r}; {hint}"
    value = _dig(tree, tuple(err["loc"][: len(loc)]))
    default = _default_of(loc)
    fix = f"set {key}={json.dumps(default)}" if default is not None else f"set {key} to a valid value"
    msg = err["msg"].rstrip(".").replace("Input should be", "must be")
    if err["type"] == "literal_error":
        msg = msg.replace("must be", "must be one of", 1)
    old = (moved or {}).get(key)
    if old:  # given under its deprecated name: say both
        return (f"config error: {old}={json.dumps(value)} is invalid ({msg}); {old} is now {key}; "
                f"fix: {fix}")
    return f"config error: {key}={json.dumps(value)} is invalid ({msg}); fix: {fix}"


def _is_local(path: str) -> bool:
    return bool(path) and path != SMOKE and not path.startswith("hf:") and "://" not in path


def resolve_paths(cfg: Config, base: Path) -> Config:
    """Make local relative paths absolute against `base`; URIs and hf: names pass through."""
    def fix(p: str) -> str:
        if p.startswith("file://"):
            return p
        if _is_local(p):
            return str((base / Path(p).expanduser()).resolve())
        return p

    d = cfg.to_dict()
    d["data"]["train"] = fix(cfg.data.train)
    d["data"]["dev"] = fix(cfg.data.dev)
    out = cfg.run.output_dir
    # file:// names the local (or a shared, mounted) filesystem: the run dir is a plain path there
    d["run"]["output_dir"] = str(Path(out[len("file://"):]).resolve()) if out.startswith("file://") else fix(out)
    d["precompute"]["cache_dir"] = fix(cfg.precompute.cache_dir)
    d["augment"]["unlabelled"] = [fix(p) for p in cfg.augment.unlabelled]
    if cfg.augment.corpus:
        d["augment"]["corpus"] = fix(cfg.augment.corpus)
    if cfg.serve.model:
        d["serve"]["model"] = fix(cfg.serve.model)
    teacher = cfg.teacher.model
    if teacher != DEFAULT_TEACHER and (teacher.startswith((".", "/", "~")) or (base / teacher).exists()):
        d["teacher"]["model"] = fix(teacher)
    return Config.model_validate(d)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def set_key(cfg: Config, key: str, value: Any) -> Config:
    """A copy of `cfg` with one dotted key set (used by Tune to apply a trial's params)."""
    return _validate(apply_overrides(cfg.to_dict(), [f"{key}={json.dumps(value)}"]))
