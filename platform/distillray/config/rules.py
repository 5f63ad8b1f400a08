"""The config tree's cross-field rules: what pydantic's per-field checks cannot express. Each
failure is a one-line `ConfigError` naming the field, the value and the fix. `distillray.config.tree`
runs `check` on every loaded config."""

from __future__ import annotations

import json

from pydantic import BaseModel

from distillray.config.sections import AugmentConfig, DataConfig, SpaceSpec
from distillray.errors import ConfigError


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _known_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys



def check(cfg: BaseModel) -> None:
    """Cross-field rules of a loaded root `Config` that pydantic's per-field checks cannot express."""
    d = cfg.distill
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
    _check_layer_distill(cfg)
    _check_precompute_backend(cfg)
    w, o = cfg.workers, cfg.optim
    for stage, key in ((cfg.train, "train"), (cfg.finetune, "finetune")):
        per = w.num_workers * o.grad_accum
        if stage.batch_size % per:
            good = max(per, stage.batch_size // per * per)
            raise ConfigError(
                f"config error: {key}.batch_size={stage.batch_size} is the global batch and "
                f"must divide evenly over workers.num_workers={w.num_workers} x "
                f"optim.grad_accum={o.grad_accum}; fix: set {key}.batch_size={good}"
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
    _check_task(dl)
    if dl.task == "qa":
        _check_qa_tree(cfg)
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
    known = set(_known_keys(type(cfg)))
    for key, spec in cfg.tune.space.items():
        _check_space(key, spec, known)
    check_augment(cfg.augment)


def _check_layer_distill(cfg: BaseModel) -> None:
    """student.* shape keys and the intermediate-layer terms that go with them."""
    st, d = cfg.student, cfg.distill
    if st.layers is not None and st.num_layers is not None and len(st.layers) != st.num_layers:
        raise ConfigError(f"config error: student.layers={st.layers} has {len(st.layers)} layers but "
                          f"student.num_layers={st.num_layers}; fix: set one of them (or make them agree)")
    if st.init == "scratch" and st.layers is not None:
        raise ConfigError(f"config error: student.init=scratch copies no teacher layers, so student.layers="
                          f"{st.layers} means nothing; fix: set student.num_layers={len(st.layers)} instead")
    layer_terms = d.alpha_hidden > 0 or d.alpha_attn > 0
    if st.general_distill_steps and not layer_terms:
        raise ConfigError(f"config error: student.general_distill_steps={st.general_distill_steps} trains on "
                          "the intermediate layers only, but distill.alpha_hidden and alpha_attn are 0; "
                          "fix: set distill.alpha_hidden=1 (and/or distill.alpha_attn=1)")
    if d.layer_map is not None:
        n = st.num_layers or (len(st.layers) if st.layers is not None else None)
        if n is not None and len(d.layer_map) != n:
            raise ConfigError(f"config error: distill.layer_map={d.layer_map} names {len(d.layer_map)} student "
                              f"layers but the student has {n}; fix: one teacher layer (or -1) per student layer")
        if any(t < -1 for t in d.layer_map) or all(t == -1 for t in d.layer_map):
            raise ConfigError(f"config error: distill.layer_map={d.layer_map}: each entry is a 0-based teacher "
                              "layer or -1 (no match), and at least one must match; fix: e.g. distill.layer_map=[1,3,5]")
    if cfg.data.task == "qa" and layer_terms:
        raise ConfigError("config error: distill.alpha_hidden/alpha_attn are not wired for data.task=qa; "
                          "fix: set them to 0")


def _check_precompute_backend(cfg: BaseModel) -> None:
    """precompute.backend=onnx runs the teacher's fp32 logits-only export in ONNX Runtime on CPU:
    refuse what that export or runtime cannot give."""
    p, d = cfg.precompute, cfg.distill
    if p.backend != "onnx":
        return
    use_gpu = cfg.workers.use_gpu if p.use_gpu is None else p.use_gpu
    if use_gpu:
        via = "precompute.use_gpu=true" if p.use_gpu else "workers.use_gpu=true (precompute.use_gpu=null follows it)"
        raise ConfigError(f"config error: precompute.backend=onnx runs ONNX Runtime on CPU only, but {via}; "
                          "fix: set precompute.use_gpu=false, or precompute.backend=torch")
    if p.store_hidden:
        raise ConfigError("config error: precompute.backend=onnx exports logits only, but precompute.store_hidden=true "
                          "needs the teacher's hidden state; fix: set precompute.backend=torch")
    for key, value in (("distill.alpha_hidden", d.alpha_hidden), ("distill.alpha_attn", d.alpha_attn)):
        if value > 0:
            raise ConfigError(f"config error: precompute.backend=onnx exports logits only, but {key}={value} needs "
                              "the teacher's layer states in the shards; fix: set precompute.backend=torch")


_WORD_METHODS = ("mask", "neighbour", "dropout")  # one draw per word picks at most one of these


def check_augment(a: AugmentConfig) -> None:
    """The augment section's cross-field rules: methods that can act, word chances that add up."""
    if len(set(a.methods)) != len(a.methods):
        raise ConfigError(f"config error: augment.methods={a.methods} has repeats; fix: list each "
                          f"method once, e.g. augment.methods={sorted(set(a.methods))}")
    if a.copies > 0 and not a.methods:
        raise ConfigError("config error: augment.copies>0 but augment.methods=[] is empty; fix: set "
                          "augment.methods=[mask,neighbour,ngram], or augment.copies=0")
    for m in a.methods:
        if getattr(a, f"p_{m}") <= 0:
            raise ConfigError(f"config error: augment.methods has {m} but augment.p_{m}=0, so it "
                              f"never acts; fix: set augment.p_{m} above 0, or drop {m} from augment.methods")
    total = sum(getattr(a, f"p_{m}") for m in a.methods if m in _WORD_METHODS)
    if total > 1:
        raise ConfigError(f"config error: augment.p_mask + p_neighbour + p_dropout of the methods on "
                          f"is {total:g}, above 1 (each word draws once among them); fix: lower them")


def _check_task(dl: DataConfig) -> None:
    """data.task and the keys that only make sense with one task."""
    if dl.task == "qa":
        _check_qa(dl)
        return
    if dl.format == "squad":
        raise ConfigError(
            f"config error: data.format=squad is SQuAD question answering but data.task={dl.task}; "
            "fix: set data.task=qa (and data.metric=f1), or a table format such as data.format=tsv")
    if dl.task == "pair" and dl.text_pair_column is None:
        raise ConfigError(
            "config error: data.task=pair needs the second text's column; fix: set "
            "data.text_pair_column, e.g. data.text_pair_column=sentence2 (or a 0-based index)")
    if dl.task == "single" and dl.text_pair_column is not None:
        raise ConfigError(
            f"config error: data.text_pair_column={json.dumps(dl.text_pair_column)} is set but "
            "data.task=single reads one text per row; fix: set data.task=pair, or "
            "data.text_pair_column=null")
    if dl.metric == "f1" and dl.labels is not None and len(dl.labels) != 2:
        raise ConfigError(
            f"config error: data.metric=f1 is the F1 of the positive class of a binary task, but "
            f"data.labels={dl.labels} has {len(dl.labels)} classes; fix: set data.metric=accuracy")


def _check_qa(dl: DataConfig) -> None:
    """data.task=qa: SQuAD v1.1 JSON in, SQuAD F1 out, windows that advance."""
    for key in ("train", "dev"):
        path = getattr(dl, key)
        suffix = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
        if dl.format not in ("auto", "squad") or (dl.format == "auto" and path and suffix != "json"):
            shown = dl.format if dl.format != "auto" else f"a .{suffix or '?'} file"
            raise ConfigError(
                f"config error: data.task=qa reads SQuAD v1.1 JSON but data.{key}={path} is {shown}; "
                "fix: point data.train/data.dev at SQuAD .json files (data.format=squad), or set "
                "data.task=single/pair for a table")
    for key in ("text_pair_column", "labels", "label_names"):
        if getattr(dl, key) is not None:
            raise ConfigError(
                f"config error: data.{key} is set but data.task=qa takes questions, contexts and "
                f"answers from the SQuAD JSON; fix: set data.{key}=null")
    if dl.sample != "head":
        raise ConfigError("config error: data.sample=random is not supported for data.task=qa (data.max_rows "
                          "takes the first questions of the file); fix: set data.sample=head")
    if dl.metric != "f1":
        raise ConfigError(
            f"config error: data.metric={dl.metric} but data.task=qa is scored by the SQuAD v1.1 "
            "F1 (and EM); fix: set data.metric=f1")
    if dl.doc_stride >= dl.max_length:
        raise ConfigError(
            f"config error: data.doc_stride={dl.doc_stride} must be below data.max_length="
            f"{dl.max_length} (windows overlap by doc_stride tokens); fix: set data.doc_stride="
            f"{max(1, dl.max_length // 3)}")


def _check_qa_tree(cfg: BaseModel) -> None:
    """Sections that only classification can use (no [CLS] state or rows to augment in QA)."""
    d, a = cfg.distill, cfg.augment
    for key, value in (("distill.alpha_cos", d.alpha_cos), ("distill.alpha_mse", d.alpha_mse)):
        if value > 0:
            raise ConfigError(f"config error: {key}={value} is not defined for data.task=qa (its loss "
                              f"is KD + CE on the start/end distributions); fix: set {key}=0")
    if cfg.precompute.store_hidden:
        raise ConfigError("config error: precompute.store_hidden=true is not used by data.task=qa; "
                          "fix: set precompute.store_hidden=false")
    if a.copies > 0 or a.unlabelled or a.corpus:
        raise ConfigError("config error: augment.copies/augment.unlabelled/augment.corpus are for text "
                          "classification, not data.task=qa; fix: set augment.copies=0 augment.unlabelled=[] "
                          "augment.corpus=null")


_UNSEARCHABLE = {"train.log_every", "train.eval_every"}


def _check_space(key: str, spec: SpaceSpec, known: set[str]) -> None:
    # Only what a trial can change on the same shards: loss, optimisation and student shape.
    # Teacher, precompute and data keys would need other logits; workers and checkpoints are the trial's.
    if (key not in known or not key.startswith(("distill.", "train.", "optim.", "student."))
            or key in _UNSEARCHABLE):
        raise ConfigError(
            f"config error: tune.space key {key!r} is not a searchable config key; fix: use "
            "keys such as distill.temperature, distill.alpha_kd, train.lr, optim.weight_decay, student.layers"
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
