"""The pipeline stages that jobs assemble: preflight, teacher fine-tune, precompute, student
init, distillation, evaluation, report. Each is a plain function of the typed config.

`distillray.preflight` checks the user's input and builds the `Task`, which no stage changes.
Each stage returns a typed result that carries its own wall time (`TeacherResult`,
`PrecomputeResult`, `FitResult`, `Evaluation`), and `finish` builds the report's timings from
them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillray import storage
from distillray.config import Config, ScheduleConfig
from distillray.data.text import TextDataset
from distillray.distributed.ray_train import FitOptions, FitResult
from distillray.errors import ShardError
from distillray.losses import LossWeights
from distillray.preflight import Task, local_run_dir, run_dest

if TYPE_CHECKING:
    from distillray.data.precompute import PrecomputeResult
    from distillray.tuning.results import TuneSummary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shards:
    """A checked teacher-logit shard dir and its manifest: what a distillation reads."""

    dir: str
    manifest: dict[str, Any]

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])


# ---------------------------------------------------------------------------------------------
# Stages


def teacher_init_dir(task: Task) -> tuple[str, bool]:
    """(dir, already_finetuned). A base teacher gets a seeded classifier head, saved once, so
    every worker and actor starts from the very same weights."""
    import torch

    from distillray.models import is_finetuned_for, load_classifier, load_tokenizer, resolve_model_dir, save_model_dir

    cfg = task.cfg
    from distillray.tasks.classification import TASK_KEY

    base = resolve_model_dir(cfg.teacher.model)
    qa = cfg.data.task == "qa"
    if qa:
        from distillray.tasks.qa import is_qa_model, load_qa_model

        if is_qa_model(base):  # a span head already: fine-tuned for extractive QA
            return str(base), True
    elif is_finetuned_for(base, task.labels.names, cfg.data.task):
        return str(base), True
    out = task.dest("work", "teacher-init")
    # what the dir was made from, in its distillray.json: a run of another task, base, label set
    # or seed in the same output dir rebuilds it rather than start from the wrong head
    want = {"base": str(base), "task": cfg.data.task, "labels": None if qa else list(task.labels.names),
            "seed": cfg.train.seed}
    made = _read_marker(storage.join(out, "distillray.json"))
    if storage.exists(storage.join(out, "config.json")) and made == want:
        return out, False
    if storage.exists(out):
        logger.info("teacher init %s was made for %s, this run needs %s: rebuilding it", out,
                    {k: made.get(k) for k in want} if made else "(no record)", want)
        storage.delete(out)
    torch.manual_seed(cfg.train.seed)
    model = (load_qa_model(base, allow_pickle=cfg.teacher.allow_pickle) if qa else
             load_classifier(base, task.id2label, allow_pickle=cfg.teacher.allow_pickle))
    setattr(model.config, TASK_KEY, cfg.data.task)  # exported with it: Serve reads it
    save_model_dir(model, load_tokenizer(base), out, extra=want)
    return out, False


def _read_marker(path: str) -> dict[str, Any] | None:
    """A model dir's distillray.json (None when absent or unreadable)."""
    try:
        return json.loads(storage.read_bytes(path)) if storage.is_file(path) else None
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class TeacherResult:
    """The teacher a run distils from: its dir, and the fine-tune's Ray Train run (None when
    `teacher.model` was used as is)."""

    dir: str
    fit: FitResult | None = None

    @property
    def seconds(self) -> float:
        return self.fit.seconds if self.fit else 0.0


def finetune_teacher(task: Task, init_dir: str) -> TeacherResult:
    """Fine-tune the teacher on hard labels with the one train loop; export to output/teacher."""
    from distillray.data.batches import qa_windows_dataset, tokenized_dataset
    from distillray.data.text import subset
    from distillray.distributed.ray_train import fit
    from distillray.training.loop import LoopSpec, train_loop_per_worker

    cfg = task.cfg
    t0 = time.time()
    if cfg.data.task == "qa":
        train = task.train if cfg.finetune.max_rows is None else dataclasses.replace(
            task.train, examples=task.train.examples[:cfg.finetune.max_rows])
        datasets = {"train": qa_windows_dataset(train, init_dir, cfg.data.max_length, cfg.data.doc_stride,
                                                "finetune-train")}
        train_rows = datasets["train"].count()  # windows, not questions: the loop's rows
    else:
        train = subset(task.train, cfg.finetune.max_rows, cfg.data.sample, cfg.data.sample_seed)
        datasets = {"train": tokenized_dataset(train.to_arrow(), init_dir, cfg.data.max_length, "finetune-train")}
        train_rows = len(train)
    if task.dev is not None:
        datasets["dev"] = dev_dataset(cfg, task.dev, init_dir)
    spec = LoopSpec(config=cfg.to_dict(), stage="finetune", schedule=ScheduleConfig.of(cfg.finetune).model_dump(),
                    freeze_embeddings=False,
                    weights=vars(LossWeights.hard_labels()).copy(), model_init=init_dir,
                    export_dir=task.dest("teacher"), train_rows=train_rows)
    result = fit(train_loop_per_worker, spec, datasets, name=f"{cfg.run_name}-teacher", storage_path=task.dest("ray"))
    _write_history(task.out / "metrics" / "finetune.jsonl", result.history)
    result = dataclasses.replace(result, seconds=time.time() - t0)
    return TeacherResult(result.export_dir or task.dest("teacher"), result)


def precompute(task: Task, teacher_dir: str) -> PrecomputeResult:
    """Teacher logits for task.train, as shards in the cache (reused when complete); linked
    from the run dir as output/logits."""
    from distillray.data.precompute import run_precompute
    from distillray.data.precompute_qa import run_qa_precompute

    t0 = time.time()
    run = run_qa_precompute if task.cfg.data.task == "qa" else run_precompute
    res = run(task.cfg, task.train, teacher_dir)
    link_logits(task.out, res.shard_dir)
    return dataclasses.replace(res, seconds=time.time() - t0)


def link_logits(out: Path, shard_dir: str) -> None:
    """output/logits points at the shard dir in the cache (a symlink, or a note for URIs)."""
    out.mkdir(parents=True, exist_ok=True)
    link = out / "logits"
    local = storage.local_path(shard_dir)
    if link.is_symlink() or link.is_file():
        link.unlink()
    if local is not None and not link.exists():
        link.symlink_to(local, target_is_directory=True)
    (out / "logits.json").write_text(json.dumps({"shard_dir": shard_dir}, indent=2))


def student_init_dir(task: Task, teacher_dir: str, layers: list[int] | None) -> str:
    """Build the student from the teacher once, on the driver, and save it: train workers and
    Tune trials load this dir and never the teacher. Its shape and init are `student.*`'s, with
    `layers` (a Tune trial's) in place of student.layers."""
    from distillray.models import build_student, load_classifier, load_tokenizer, model_config, save_model_dir, source_layers
    from distillray.tasks.classification import TASK_KEY

    st = task.cfg.student.model_copy(update={"layers": layers}) if layers is not None else task.cfg.student
    layers = source_layers(st, model_config(teacher_dir).num_hidden_layers)
    name = f"student-init-{'-'.join(map(str, layers))}"
    shaped = st.init != "copy" or st.hidden_size is not None
    if shaped:
        name = f"student-init-{st.init}-L{len(layers)}-H{st.hidden_size or 'T'}-{'-'.join(map(str, layers))}"
    out = task.dest("work", name)
    marker = storage.join(out, "distillray.json")
    want = {"teacher": str(teacher_dir), "layers": layers, "task": task.cfg.data.task}
    if shaped:
        want |= {"init": st.init, "hidden_size": st.hidden_size, "seed": task.cfg.train.seed}
    if not (storage.is_file(marker) and {k: json.loads(storage.read_bytes(marker)).get(k) for k in want} == want):
        if task.cfg.data.task == "qa":
            from distillray.tasks.qa import build_qa_student, load_qa_model

            student = build_qa_student(load_qa_model(teacher_dir, allow_pickle=task.cfg.teacher.allow_pickle), layers)
        else:
            teacher = load_classifier(teacher_dir, allow_pickle=task.cfg.teacher.allow_pickle)
            student = build_student(teacher, layers, student=st if shaped else None, seed=task.cfg.train.seed)
        setattr(student.config, TASK_KEY, task.cfg.data.task)  # the exported student's config records it
        save_model_dir(student, load_tokenizer(teacher_dir), out, extra=want)
    return out


def check_shards(task: Task, shard_dir: str, teacher_dir: str | None) -> Shards:
    """Load and verify a shard dir's manifest and refuse one made for other inputs."""
    from distillray.data.shards import check_compatible, load_manifest
    from distillray.models import content_hash, tokenizer_hash

    manifest = load_manifest(shard_dir, verify=True)
    check_compatible(manifest, shard_dir,
                     teacher_hash=content_hash(teacher_dir) if teacher_dir else None,
                     tokenizer_hash=tokenizer_hash(teacher_dir) if teacher_dir else None,
                     max_length=task.cfg.data.max_length,
                     label_names=task.labels.names if task.labels else None, task=task.cfg.data.task,
                     doc_stride=task.cfg.data.doc_stride if task.cfg.data.task == "qa" else None)
    if task.cfg.distill.alpha_cos > 0 and not manifest.get("store_hidden"):
        raise ShardError(f"{shard_dir}: distill.alpha_cos>0 needs teacher hidden states, which these "
                         "shards lack; fix: run precompute with precompute.store_hidden=true")
    from distillray.data.shards import check_layer_states

    check_layer_states(manifest, shard_dir, _wanted_layer_states(task.cfg, manifest))
    return Shards(shard_dir, manifest)


def _wanted_layer_states(cfg: Config, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The teacher layers this run's intermediate-layer losses read (None: those terms are off)."""
    d = cfg.distill
    if not (d.alpha_hidden > 0 or d.alpha_attn > 0):
        return None
    from distillray.models import distill_layer_map

    n = int((manifest.get("layer_states") or {}).get("teacher_layers") or _teacher_layers(manifest))
    pairs = distill_layer_map(cfg.student, d.layer_map, n)
    return {"layers": sorted({t for _, t in pairs}), "hidden": d.alpha_hidden > 0, "attention": d.alpha_attn > 0,
            "hidden_size": manifest["teacher"].get("hidden_size"), "pairs": pairs}


def _teacher_layers(manifest: dict[str, Any]) -> int:
    from distillray.models import model_config

    return model_config(manifest["teacher"]["path"]).num_hidden_layers


def _layers_for_loop(cfg: Config, shards: Shards) -> dict[str, Any] | None:
    """LoopSpec.layers: the layer map against the layers stored in `shards` (None: terms off)."""
    from distillray.training.loop import layer_spec

    want = _wanted_layer_states(cfg, shards.manifest)
    return layer_spec(want["pairs"], shards.manifest["layer_states"]) if want else None


def general_distill(cfg: Config, shards: Shards, init_dir: str, out_dir: str) -> tuple[str, FitResult | None]:
    """The task-agnostic stage (`student.general_distill_steps`; TinyBERT's general distillation):
    the one train loop, on every shard row (augmented and unlabelled text included), with the
    intermediate-layer terms only: no labels, no logits. Returns the dir the task stage starts
    from (`init_dir` itself when the stage is off) and its run."""
    from distillray.data.batches import shard_dataset, should_cache
    from distillray.data.shards import shard_paths
    from distillray.distributed.ray_train import fit
    from distillray.training.loop import LoopSpec, steps_per_epoch, train_loop_per_worker

    steps = cfg.student.general_distill_steps
    if not steps:
        return init_dir, None
    t0 = time.time()
    paths = shard_paths(shards.dir, shards.manifest)
    train_ds = shard_dataset(paths, cfg.train.seed, "general-shards", cache=should_cache(paths, cfg.train.cache_shards))
    per_epoch = steps_per_epoch(shards.rows, cfg.train)
    schedule = ScheduleConfig(epochs=-(-steps // per_epoch), max_steps=steps, batch_size=cfg.train.batch_size,
                              lr=cfg.train.lr)
    spec = LoopSpec(config=cfg.to_dict(), stage="general", schedule=schedule.model_dump(),
                    freeze_embeddings=cfg.train.freeze_embeddings,
                    weights=vars(LossWeights.from_config(cfg.distill).general()).copy(), model_init=init_dir,
                    export_dir=out_dir, train_rows=shards.rows, layers=_layers_for_loop(cfg, shards))
    result = fit(train_loop_per_worker, spec, {"train": train_ds}, name=f"{cfg.run_name}-general",
                 storage_path=run_dest(cfg, "ray"))
    _write_history(local_run_dir(cfg) / "metrics" / "general.jsonl", result.history)
    return result.export_dir or out_dir, dataclasses.replace(result, seconds=time.time() - t0)


def distill_student(cfg: Config, shards: Shards, init_dir: str, dev: TextDataset | None,
                    export_dir: str | None = None, options: FitOptions | None = None) -> FitResult:
    """Train a student from `shards` with the one train loop, starting from `init_dir` and
    evaluating on `dev`; rank 0 exports it to `export_dir` (None: no export). Ray Train runs and
    metrics go under `cfg`'s run.output_dir. Also each Tune trial's body (`options` names the
    run and carries Tune's report callback)."""
    from distillray.data.augment import labelled_only
    from distillray.data.batches import shard_dataset, should_cache
    from distillray.data.shards import shard_paths
    from distillray.distributed.ray_train import fit
    from distillray.training.loop import LoopSpec, train_loop_per_worker

    options = options or FitOptions()
    t0 = time.time()
    paths = shard_paths(shards.dir, shards.manifest)
    train_ds = shard_dataset(paths, cfg.train.seed, "distill-shards", cache=should_cache(paths, cfg.train.cache_shards))
    train_ds, train_rows = labelled_only(train_ds, shards.manifest, cfg.distill)
    datasets = {"train": train_ds}
    if dev is not None:
        datasets["dev"] = dev_dataset(cfg, dev, init_dir)
    spec = LoopSpec(config=cfg.to_dict(), stage="distill", schedule=ScheduleConfig.of(cfg.train).model_dump(),
                    freeze_embeddings=cfg.train.freeze_embeddings,
                    weights=vars(LossWeights.from_config(cfg.distill)).copy(), model_init=init_dir,
                    export_dir=export_dir, train_rows=train_rows, layers=_layers_for_loop(cfg, shards))
    result = fit(train_loop_per_worker, spec, datasets, name=options.name or f"{cfg.run_name}-student",
                 storage_path=run_dest(cfg, "ray"), callbacks=options.callbacks,
                 gpus_per_worker=options.gpus_per_worker)
    _write_history(local_run_dir(cfg) / "metrics" / "distill.jsonl", result.history)
    return dataclasses.replace(result, seconds=time.time() - t0)


def dev_dataset(cfg: Config, dev: Any, tokenizer_dir: str):
    """The dev split as the loop evaluates it: tokenised rows, or (QA) scored windows."""
    from distillray.data.batches import qa_windows_dataset, tokenized_dataset

    if cfg.data.task == "qa":
        return qa_windows_dataset(dev, tokenizer_dir, cfg.data.max_length, cfg.data.doc_stride, "dev", scoring=True)
    return tokenized_dataset(dev.to_arrow(), tokenizer_dir, cfg.data.max_length, "dev")


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(h) + "\n" for h in history))


def _read_history(path: Path) -> list[dict[str, Any]]:
    """A stage's per-step metrics written by an earlier run (re-evaluating without retraining)."""
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


@dataclass(frozen=True)
class Evaluation:
    """Per model name: accuracy, params, size, latency and throughput (`evaluate_dirs`)."""

    models: dict[str, dict[str, Any]]
    seconds: float


def evaluate_models(task: Task, dirs: dict[str, str], quantize_student: bool = True) -> Evaluation:
    """Evaluate each model dir (and the int8 student) on dev: accuracy, params, size, and latency
    and throughput measured side by side, so the speed-up is a fair ratio."""
    from distillray.evaluation import evaluate_dirs

    t0 = time.time()
    models = dict(dirs)
    if quantize_student and "student" in dirs:
        models["student_int8"] = dirs["student"]
    if task.cfg.data.task == "qa":
        from distillray.evaluation import evaluate_qa_dirs

        d = task.cfg.data
        out = evaluate_qa_dirs(models, task.dev, quantized=("student_int8",), max_length=d.max_length,
                               doc_stride=d.doc_stride, n_best=d.n_best, max_answer_length=d.max_answer_length)
        return Evaluation(out, time.time() - t0)
    out = evaluate_dirs(models, task.dev.inputs(), task.dev.labels, task.labels.names, quantized=("student_int8",),
                        max_length=task.cfg.data.max_length)
    return Evaluation(out, time.time() - t0)


def prepare_teacher(task: Task) -> TeacherResult:
    """The fine-tuned teacher under output/teacher: fine-tuned here unless `teacher.model`
    already classifies these labels (or teacher.finetune=false)."""
    import tempfile

    cfg = task.cfg
    init_dir, finetuned = teacher_init_dir(task)
    want = cfg.teacher.finetune is True or (cfg.teacher.finetune == "auto" and not finetuned)
    if want:
        return finetune_teacher(task, init_dir)
    if not finetuned:
        logger.warning("teacher.finetune=false but %s is not fine-tuned for %s: distilling from a "
                       "randomly initialised head", cfg.teacher.model, _target(task))
    from distillray.tasks.classification import record_task

    out = task.dest("teacher")
    if task.remote:
        with tempfile.TemporaryDirectory() as tmp:
            _copy_model_files(Path(init_dir), Path(tmp))
            record_task(Path(tmp), cfg.data.task)
            storage.upload_dir(tmp, out)
    elif Path(init_dir).resolve() != Path(out).resolve():
        _copy_model_files(Path(init_dir), Path(out))
        record_task(Path(out), cfg.data.task)
    logger.info("teacher: using %s as is (already fine-tuned for %s)", cfg.teacher.model, _target(task))
    return TeacherResult(out)


def _target(task: Task) -> Any:
    """What the teacher is fine-tuned for, for log lines: the labels, or extractive QA."""
    return task.labels.names if task.labels else f"data.task={task.cfg.data.task}"


def _copy_model_files(src: Path, dest: Path) -> None:
    import shutil

    shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.bin", "*.pt", "*.ckpt", "*.pkl"))


def _fit_summary(fit: FitResult | None) -> dict[str, Any] | None:
    if fit is None:
        return None
    return {"steps": fit.steps, "resumes": fit.resumes, "final": fit.final, "ray_train_run": fit.run_name}


def stage_timings(task: Task, teacher: TeacherResult | None, shards: PrecomputeResult,
                  student: FitResult | None, tune_summary: TuneSummary | None = None,
                  **more: float) -> dict[str, float]:
    """Wall seconds per stage, in run order, from the stages' own results (`more`: extra
    stages a caller ran, e.g. a benchmark's second student)."""
    timings = {"load_data": task.load_seconds}
    if teacher is not None and teacher.fit is not None:
        timings["finetune_teacher"] = teacher.seconds
    timings["precompute"] = shards.seconds
    if tune_summary is not None:
        timings["tune"] = tune_summary.wall_s
    if student is not None:
        timings["distill"] = student.seconds
    return {**timings, **more}


def finish(task: Task, teacher: TeacherResult | None, student: FitResult | None, shards: PrecomputeResult,
           tune_summary: TuneSummary | None = None, timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Evaluate teacher and student on dev, write report.json / report.md and plots, record the
    student's provenance, and upload the staged files (`publish`). `timings` defaults to
    `stage_timings` of the results given; the evaluation's own time is added."""
    evals = evaluate_models(task, {"teacher": task.dest("teacher"), "student": task.dest("student")})
    if timings is None:
        timings = stage_timings(task, teacher, shards, student, tune_summary)
    timings = {**timings, "evaluate": evals.seconds}
    report = write_run_report(task, evals, teacher.fit if teacher else None, student, shards, timings, tune_summary)
    prov = {"teacher": task.dest("teacher"), "layers": task.cfg.student.layers,
            "retention": report["retention"], "speedup": report["speedup"]}
    storage.write_bytes_atomic(storage.join(task.dest("student"), "distillray.json"),
                               json.dumps(prov, indent=2).encode())
    task.publish()
    return report


def write_run_report(task: Task, evals: Evaluation, teacher_fit: FitResult | None, student_fit: FitResult | None,
                     shards: PrecomputeResult, timings: dict[str, float],
                     tune_summary: TuneSummary | None = None) -> dict[str, Any]:
    """report.json, report.md and the plots under the local run dir; returns the report."""
    from distillray.report import build_report, write_report

    dataset = {"train": task.train.source, "train_rows": len(task.train), "dev": task.dev.source,
               "dev_rows": len(task.dev), "labels": task.labels.names if task.labels else None,
               "shard_dir": shards.shard_dir,
               "shard_rows_by_source": shards.manifest.get("sources"),
               "skipped_empty_rows": task.train.skipped_empty}
    training = {k: v for k, v in (("teacher_finetune", _fit_summary(teacher_fit)),
                                   ("distill", _fit_summary(student_fit))) if v}
    histories = {"finetune": teacher_fit.history if teacher_fit else _read_history(task.out / "metrics" / "finetune.jsonl"),
                 "distill": student_fit.history if student_fit else _read_history(task.out / "metrics" / "distill.jsonl")}
    report = build_report(evals.models, task.cfg.to_dict(), dataset, timings, training,
                          tune_summary.as_dict() if tune_summary else None)
    write_report(task.out, report, histories, evals.models, tune_summary.trials if tune_summary else None)
    return report


@dataclass(frozen=True)
class PruneResult:
    """A structurally pruned model dir, its size before and after, and its per-layer shape."""

    dir: str
    params_before: int
    params_after: int
    layer_heads: list[int]
    layer_intermediate: list[int]
    seconds: float


def prune_model(cfg: Config, model_dir: str, shards: Shards, out: str) -> PruneResult:
    """Structured pruning on the driver (`distillray.models.prune`): score heads and FFN neurons
    on a seeded sample of the shards' labelled rows, remove the `cfg.prune` fractions, save the
    smaller model dir (tokenizer included) to `out`. Recovery is `distill_student` from it."""
    from distillray.inference import count_params
    from distillray.models import load_classifier, load_tokenizer, save_model_dir
    from distillray.models.prune import importance_scores, layer_sizes, prune_structured

    t0 = time.time()
    if cfg.data.task == "qa":  # scored on the shards' windows with the start/end CE
        from distillray.tasks.qa import load_qa_model

        model = load_qa_model(model_dir, allow_pickle=cfg.teacher.allow_pickle)
    else:
        model = load_classifier(model_dir, allow_pickle=cfg.teacher.allow_pickle)
    tok = load_tokenizer(model_dir)
    before = count_params(model)
    batches = _shard_sample(shards, cfg.prune.importance_batches, cfg.train.batch_size, cfg.train.seed,
                            tok.pad_token_id or 0)
    scores = importance_scores(model, batches)
    pruned = prune_structured(model, scores, heads=cfg.prune.heads, ffn=cfg.prune.ffn, scope=cfg.prune.scope)
    heads, inter = layer_sizes(pruned)
    save_model_dir(pruned, tok, out, extra={"pruned_from": str(model_dir), "prune": cfg.prune.model_dump()})
    logger.info("pruned %s: %d -> %d parameters, heads per layer %s, FFN neurons per layer %s",
                model_dir, before, count_params(pruned), heads, inter)
    return PruneResult(out, before, count_params(pruned), heads, inter, time.time() - t0)


def _shard_sample(shards: Shards, n_batches: int, batch_size: int, seed: int, pad_id: int) -> list[dict[str, Any]]:
    """`n_batches` padded batches of a seeded random sample of shard rows (input_ids, label,
    token_type_ids for pairs; QA windows: their start/end positions), each batch of similar
    lengths (less padding)."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distillray.data.batches import collate
    from distillray.data.shards import shard_paths

    paths = shard_paths(shards.dir, shards.manifest)
    have = set(pq.read_schema(io.BytesIO(storage.read_bytes(paths[0]))).names)
    columns = [c for c in ("input_ids", "token_type_ids", "label", "start_position", "end_position") if c in have]
    table = pa.concat_tables(pq.read_table(io.BytesIO(storage.read_bytes(p)), columns=columns) for p in paths)
    rng = np.random.default_rng(seed)
    take = rng.choice(len(table), min(len(table), n_batches * batch_size), replace=False)
    rows = {c: table.column(c).to_pylist() if c in ("input_ids", "token_type_ids") else table.column(c).to_numpy()
            for c in columns}
    take = take[np.argsort([len(rows["input_ids"][i]) for i in take], kind="stable")]
    return [collate(rows, take[i:i + batch_size], pad_id) for i in range(0, len(take), batch_size)]
