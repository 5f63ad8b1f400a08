"""The pipeline stages that jobs assemble: preflight, teacher fine-tune, precompute, student
init, distillation, evaluation. Each is a plain function of the typed config.

`preflight` does every check that can fail on user input (config, data, model dirs, resources)
before Ray starts and before anything is written under `run.output_dir`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillray import storage
from distillray.config import Config, TrainConfig
from distillray.data.text import LabelSet, TextDataset, load_split, load_task
from distillray.distributed.ray_train import FitOptions, FitResult
from distillray.errors import ConfigError, ShardError
from distillray.losses import LossWeights

logger = logging.getLogger(__name__)


@dataclass
class Task:
    """What every stage of one run shares, loaded once on the driver."""

    cfg: Config
    train: TextDataset | None
    dev: TextDataset | None
    labels: LabelSet
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        """The local run dir: run.output_dir itself, or, when that is object storage, a local
        staging dir whose files `publish` uploads (report, metrics, plots, tune results)."""
        return local_run_dir(self.cfg)

    @property
    def remote(self) -> bool:
        return storage.is_remote(self.cfg.run.output_dir)

    def dest(self, *parts: str) -> str:
        """Where something every node reads goes (model dirs, Ray Train runs): under
        run.output_dir, local, shared or remote."""
        return run_dest(self.cfg, *parts)

    def publish(self) -> None:
        """Upload the staged driver-side files to a remote run.output_dir (no-op when local)."""
        if self.remote and self.out.is_dir():
            storage.upload_dir(self.out, self.cfg.run.output_dir)
            logger.info("published %s to %s", self.out, self.cfg.run.output_dir)


    @property
    def id2label(self) -> dict[int, str]:
        return self.labels.id2label()


def local_run_dir(cfg: Config) -> Path:
    """run.output_dir as a local path, or the local staging dir of a remote one."""
    out = cfg.run.output_dir
    return storage.staging_dir(out) if storage.is_remote(out) else storage.local_path(out)


def run_dest(cfg: Config, *parts: str) -> str:
    """A path under run.output_dir that every node reads (model dirs, Ray Train runs)."""
    out = cfg.run.output_dir
    return storage.join(out, *parts) if storage.is_remote(out) else str(local_run_dir(cfg).joinpath(*parts))


@dataclass(frozen=True)
class Shards:
    """A checked teacher-logit shard dir and its manifest: what a distillation reads."""

    dir: str
    manifest: dict[str, Any]

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])


# ---------------------------------------------------------------------------------------------
# Preflight


def check_output_dir(cfg: Config) -> None:
    out = cfg.run.output_dir
    if storage.is_remote(out):
        # Models, checkpoints and the report go there: a bad bucket, credentials or permissions
        # must fail now, not after training.
        try:
            storage.check_writable(out)
        except Exception as e:  # noqa: BLE001 - pyarrow raises OSError/ArrowInvalid/ValueError
            raise ConfigError(
                f"config error: run.output_dir={out} cannot be written ({str(e).splitlines()[0]}); fix: "
                "check the bucket exists and this machine (and every node) has credentials for it "
                "(e.g. AWS_* env or an instance role), or use a local/shared path") from None
        return
    local = storage.local_path(out)
    if local is not None and local.exists() and not local.is_dir():
        raise ConfigError(f"config error: run.output_dir={out} is a file, not a directory; "
                          "fix: set run.output_dir to a new or existing directory path")


def check_teacher(cfg: Config) -> None:
    from distillray.models import model_config
    from distillray.models.student import check_layers, default_layers

    mcfg = model_config(cfg.teacher.model)
    n = mcfg.num_hidden_layers
    check_layers(cfg.student.layers if cfg.student.layers is not None else default_layers(n), n)
    limit = getattr(mcfg, "max_position_embeddings", None)
    if limit and cfg.data.max_length > limit:
        raise ConfigError(f"config error: data.max_length={cfg.data.max_length} exceeds the teacher's "
                          f"{limit} positions; fix: set data.max_length={min(limit, 512)}")


def check_resources(cfg: Config, train: TrainConfig | None = None) -> None:
    """Refuse worker counts the cluster can never place (Ray would wait forever)."""
    import torch

    from distillray.ray_utils import local_num_cpus

    t = train or cfg.train
    local = not (cfg.run.address or os.environ.get("RAY_ADDRESS"))
    if local and t.use_gpu and torch.cuda.device_count() < t.num_workers:
        raise ConfigError(
            f"config error: train.use_gpu=true with train.num_workers={t.num_workers}, but this machine "
            f"has {torch.cuda.device_count()} GPU(s); fix: set train.use_gpu=false, or lower "
            "train.num_workers, or submit to a GPU cluster"
        )
    if local:
        cpus = local_num_cpus(cfg)
        need = t.num_workers * t.cpus_per_worker
        if need > cpus - 1:  # one CPU stays free for Ray Data's read tasks
            fit = max(1, int((cpus - 1) // t.cpus_per_worker))
            raise ConfigError(
                f"config error: train.num_workers={t.num_workers} x train.cpus_per_worker="
                f"{t.cpus_per_worker} needs {need:g} CPUs but the local Ray instance has {cpus} "
                f"(one kept for data loading); fix: set train.num_workers={fit}, or lower "
                "train.cpus_per_worker, or set run.num_cpus"
            )


def check_cluster(cfg: Config) -> None:
    """After connecting: the same resource check against the real cluster."""
    from distillray.ray_utils import cluster_cpus, cluster_gpus

    t = cfg.train
    if t.use_gpu and cluster_gpus() < t.num_workers:
        raise ConfigError(
            f"config error: train.num_workers={t.num_workers} GPU workers but the cluster has "
            f"{cluster_gpus():g} GPU(s) now; fix: lower train.num_workers (autoscaling clusters: "
            "raise the GPU worker type's max_workers)"
        )
    if not t.use_gpu and t.num_workers * t.cpus_per_worker > cluster_cpus():
        raise ConfigError(
            f"config error: train.num_workers={t.num_workers} x {t.cpus_per_worker:g} CPUs exceeds "
            f"the cluster's {cluster_cpus():g} CPUs; fix: lower train.num_workers"
        )


def preflight(cfg: Config, need_train: bool = True, need_dev: bool = True,
              teacher: bool = True) -> Task:
    """Every user-input check, before Ray starts or anything is written."""
    check_output_dir(cfg)
    if teacher:
        check_teacher(cfg)
    check_resources(cfg)
    if cfg.tune.enabled:
        from distillray.tuning.space import check_tune

        check_tune(cfg, cfg.teacher.model if teacher else None)
    t0 = time.time()
    if need_train:
        train, dev, labels = load_task(cfg.data, local_run_dir(cfg), need_dev=need_dev)
    else:
        train, dev, labels = None, None, None  # type: ignore[assignment]
    task = Task(cfg=cfg, train=train, dev=dev, labels=labels)  # type: ignore[arg-type]
    task.timings["load_data"] = time.time() - t0
    if train is not None:
        logger.info("data: train %d rows (%s), dev %s rows, labels %s", len(train), train.source,
                    len(dev) if dev else 0, labels.names)
    return task


def load_dev_for_labels(cfg: Config, labels: LabelSet) -> TextDataset:
    from distillray.data.text import resolve_source

    dev, _ = load_split(resolve_source(cfg.data.dev, local_run_dir(cfg), "dev"), cfg.data, labels,
                        cfg.data.dev_max_rows)
    return dev


# ---------------------------------------------------------------------------------------------
# Stages


def effective_train(cfg: Config, stage: str) -> TrainConfig:
    """The student's TrainConfig, or the teacher's: same resources, its own optimisation knobs."""
    if stage == "distill":
        return cfg.train
    f = cfg.finetune
    return cfg.train.model_copy(update={"epochs": f.epochs, "max_steps": f.max_steps,
                                        "batch_size": f.batch_size, "lr": f.lr, "freeze_embeddings": False})


def teacher_init_dir(task: Task) -> tuple[str, bool]:
    """(dir, already_finetuned). A base teacher gets a seeded classifier head, saved once, so
    every worker and actor starts from the very same weights."""
    import torch

    from distillray.models import is_finetuned_for, load_classifier, load_tokenizer, resolve_model_dir, save_model_dir

    cfg = task.cfg
    base = resolve_model_dir(cfg.teacher.model)
    if is_finetuned_for(base, task.labels.names):
        return str(base), True
    out = task.dest("work", "teacher-init")
    if not storage.exists(storage.join(out, "config.json")):
        torch.manual_seed(cfg.train.seed)
        model = load_classifier(base, task.id2label, allow_pickle=cfg.teacher.allow_pickle)
        save_model_dir(model, load_tokenizer(base), out, extra={"base": str(base)})
    return out, False


def finetune_teacher(task: Task, init_dir: str) -> tuple[str, Any]:
    """Fine-tune the teacher on hard labels with the one train loop; export to output/teacher."""
    from distillray.data.batches import tokenized_dataset
    from distillray.data.text import subset
    from distillray.distributed.ray_train import fit
    from distillray.training.loop import LoopSpec, train_loop_per_worker

    cfg = task.cfg
    t0 = time.time()
    train = subset(task.train, cfg.finetune.max_rows, cfg.data.sample, cfg.data.sample_seed)
    tcfg = effective_train(cfg, "finetune")
    datasets = {"train": tokenized_dataset(train.to_arrow(), init_dir, cfg.data.max_length, "finetune-train")}
    if task.dev is not None:
        datasets["dev"] = tokenized_dataset(task.dev.to_arrow(), init_dir, cfg.data.max_length, "dev")
    spec = LoopSpec(config=cfg.to_dict(), stage="finetune", train=tcfg.model_dump(mode="json"),
                    weights=vars(LossWeights.hard_labels()).copy(), model_init=init_dir,
                    export_dir=task.dest("teacher"), train_rows=len(train))
    result = fit(train_loop_per_worker, spec, datasets, name=f"{cfg.run_name}-teacher", storage_path=task.dest("ray"))
    task.timings["finetune_teacher"] = time.time() - t0
    _write_history(task.out / "metrics" / "finetune.jsonl", result.history)
    return result.export_dir or task.dest("teacher"), result


def precompute(task: Task, teacher_dir: str):
    from distillray.data.precompute import run_precompute

    t0 = time.time()
    res = run_precompute(task.cfg, task.train, teacher_dir)
    task.timings["precompute"] = time.time() - t0
    link_logits(task.out, res.shard_dir)
    return res


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
    Tune trials load this dir and never the teacher."""
    from distillray.models import build_student, default_layers, load_classifier, load_tokenizer, model_config, save_model_dir

    n = model_config(teacher_dir).num_hidden_layers
    layers = layers if layers is not None else default_layers(n)
    out = task.dest("work", f"student-init-{'-'.join(map(str, layers))}")
    marker = storage.join(out, "distillray.json")
    want = {"teacher": str(teacher_dir), "layers": layers}
    if not (storage.is_file(marker) and {k: json.loads(storage.read_bytes(marker)).get(k) for k in want} == want):
        teacher = load_classifier(teacher_dir, allow_pickle=task.cfg.teacher.allow_pickle)
        save_model_dir(build_student(teacher, layers), load_tokenizer(teacher_dir), out, extra=want)
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
                     label_names=task.labels.names if task.labels else None)
    if task.cfg.distill.alpha_cos > 0 and not manifest.get("store_hidden"):
        raise ShardError(f"{shard_dir}: distill.alpha_cos>0 needs teacher hidden states, which these "
                         "shards lack; fix: run precompute with precompute.store_hidden=true")
    return Shards(shard_dir, manifest)


def distill_student(cfg: Config, shards: Shards, init_dir: str, dev: TextDataset | None,
                    export_dir: str | None = None, options: FitOptions | None = None) -> FitResult:
    """Train a student from `shards` with the one train loop, starting from `init_dir` and
    evaluating on `dev`; rank 0 exports it to `export_dir` (None: no export). Ray Train runs and
    metrics go under `cfg`'s run.output_dir. Also each Tune trial's body (`options` names the
    run and carries Tune's report callback)."""
    from distillray.data.batches import shard_dataset, tokenized_dataset
    from distillray.data.shards import shard_paths
    from distillray.distributed.ray_train import fit
    from distillray.training.loop import LoopSpec, train_loop_per_worker

    options = options or FitOptions()
    t0 = time.time()
    datasets = {"train": shard_dataset(shard_paths(shards.dir, shards.manifest), cfg.train.seed, "distill-shards")}
    if dev is not None:
        datasets["dev"] = tokenized_dataset(dev.to_arrow(), init_dir, cfg.data.max_length, "dev")
    spec = LoopSpec(config=cfg.to_dict(), stage="distill", train=cfg.train.model_dump(mode="json"),
                    weights=vars(LossWeights.from_config(cfg.distill)).copy(), model_init=init_dir,
                    export_dir=export_dir, train_rows=shards.rows)
    result = fit(train_loop_per_worker, spec, datasets, name=options.name or f"{cfg.run_name}-student",
                 storage_path=run_dest(cfg, "ray"), callbacks=options.callbacks,
                 gpus_per_worker=options.gpus_per_worker)
    _write_history(local_run_dir(cfg) / "metrics" / "distill.jsonl", result.history)
    return dataclasses.replace(result, seconds=time.time() - t0)


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(h) + "\n" for h in history))


def _read_history(path: Path) -> list[dict[str, Any]]:
    """A stage's per-step metrics written by an earlier run (re-evaluating without retraining)."""
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def evaluate_models(task: Task, dirs: dict[str, str], quantize_student: bool = True) -> dict[str, Any]:
    """Evaluate each model dir (and the int8 student) on dev: accuracy, params, size, and latency
    and throughput measured side by side, so the speed-up is a fair ratio."""
    from distillray.evaluation import evaluate_dirs

    t0 = time.time()
    models = dict(dirs)
    if quantize_student and "student" in dirs:
        models["student_int8"] = dirs["student"]
    out = evaluate_dirs(models, task.dev.texts, task.dev.labels, task.labels.names, quantized=("student_int8",),
                        max_length=task.cfg.data.max_length)
    task.timings["evaluate"] = time.time() - t0
    return out


def prepare_teacher(task: Task) -> tuple[str, Any]:
    """The fine-tuned teacher dir under output/teacher: fine-tuned here unless `teacher.model`
    already classifies these labels (or teacher.finetune=false). Returns (dir, fit result)."""
    import tempfile

    cfg = task.cfg
    init_dir, finetuned = teacher_init_dir(task)
    want = cfg.teacher.finetune is True or (cfg.teacher.finetune == "auto" and not finetuned)
    if want:
        return finetune_teacher(task, init_dir)
    if not finetuned:
        logger.warning("teacher.finetune=false but %s is not fine-tuned for %s: distilling from a "
                       "randomly initialised head", cfg.teacher.model, task.labels.names)
    out = task.dest("teacher")
    if task.remote:
        with tempfile.TemporaryDirectory() as tmp:
            _copy_model_files(Path(init_dir), Path(tmp))
            storage.upload_dir(tmp, out)
    elif Path(init_dir).resolve() != Path(out).resolve():
        _copy_model_files(Path(init_dir), Path(out))
    logger.info("teacher: using %s as is (already fine-tuned for %s)", cfg.teacher.model, task.labels.names)
    return out, None


def _copy_model_files(src: Path, dest: Path) -> None:
    import shutil

    shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.bin", "*.pt", "*.ckpt", "*.pkl"))


def _fit_summary(fit: Any) -> dict[str, Any] | None:
    if fit is None:
        return None
    return {"steps": fit.steps, "resumes": fit.resumes, "final": fit.final, "ray_train_run": fit.run_name}


def finish(task: Task, teacher_fit: Any, student_fit: Any, shards: Any, tune_summary: Any = None) -> dict[str, Any]:
    """Evaluate teacher and student on dev, write report.json / report.md and plots."""
    from distillray.report import build_report, write_report

    evals = evaluate_models(task, {"teacher": task.dest("teacher"), "student": task.dest("student")})
    cfg = task.cfg
    dataset = {"train": task.train.source, "train_rows": len(task.train), "dev": task.dev.source,
               "dev_rows": len(task.dev), "labels": task.labels.names, "shard_dir": shards.shard_dir,
               "skipped_empty_rows": task.train.skipped_empty}
    training = {k: v for k, v in (("teacher_finetune", _fit_summary(teacher_fit)),
                                   ("distill", _fit_summary(student_fit))) if v}
    histories = {"finetune": teacher_fit.history if teacher_fit else _read_history(task.out / "metrics" / "finetune.jsonl"),
                 "distill": student_fit.history if student_fit else _read_history(task.out / "metrics" / "distill.jsonl")}
    report = build_report(evals, cfg.to_dict(), dataset, task.timings, training,
                          tune_summary.as_dict() if tune_summary else None)
    write_report(task.out, report, histories, evals, tune_summary.trials if tune_summary else None)
    prov = {"teacher": task.dest("teacher"), "layers": cfg.student.layers,
            "retention": report["retention"], "speedup": report["speedup"]}
    storage.write_bytes_atomic(storage.join(task.dest("student"), "distillray.json"),
                               json.dumps(prov, indent=2).encode())
    task.publish()
    return report
