"""The `Task` a run's stages share, and `preflight`, which builds it: every check that can fail on
user input (config, data, model dirs, resources), before Ray starts and before anything is
written under `run.output_dir`. `task_from_shards` is the same for a run that starts from a
shard dir (its labels come from the shards' manifest)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillray import storage
from distillray.config import Config
from distillray.data.text import LabelSet, TextDataset, load_split, load_task
from distillray.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """What every stage of one run shares, loaded once on the driver (read-only: a stage that
    needs another config gets `dataclasses.replace(task, cfg=...)`)."""

    cfg: Config
    train: TextDataset | None
    dev: TextDataset | None
    labels: LabelSet | None
    load_seconds: float = 0.0  # wall time of loading the data

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
    if cfg.student.init == "copy" and cfg.student.num_layers is None:
        check_layers(cfg.student.layers if cfg.student.layers is not None else default_layers(n), n)
    elif cfg.student.layers is not None:
        check_layers(cfg.student.layers, n)
    check_student_shape(cfg, mcfg)
    limit = getattr(mcfg, "max_position_embeddings", None)
    if limit and cfg.data.max_length > limit:
        raise ConfigError(f"config error: data.max_length={cfg.data.max_length} exceeds the teacher's "
                          f"{limit} positions; fix: set data.max_length={min(limit, 512)}")


def check_student_shape(cfg: Config, teacher_cfg) -> None:
    """student.* depth, width and init, and distill.layer_map, against the teacher's shape."""
    from distillray.models import student_shape

    shape = student_shape(teacher_cfg, cfg.student)
    n, d = teacher_cfg.num_hidden_layers, cfg.distill
    if d.layer_map is not None:
        if len(d.layer_map) != shape["num_hidden_layers"]:
            raise ConfigError(f"config error: distill.layer_map={d.layer_map} names {len(d.layer_map)} student layers "
                              f"but the student has {shape['num_hidden_layers']}; fix: one teacher layer (or -1) each")
        if max(d.layer_map) >= n:
            raise ConfigError(f"config error: distill.layer_map={d.layer_map}: the teacher has layers 0..{n - 1}; "
                              "fix: use indexes in that range")
    heads = teacher_cfg.num_attention_heads
    if d.alpha_attn > 0 and heads % shape["num_attention_heads"]:
        raise ConfigError(f"config error: distill.alpha_attn>0 matches each student head with a group of teacher "
                          f"heads, but the student's {shape['num_attention_heads']} heads do not divide the "
                          f"teacher's {heads}; fix: pick student.hidden_size so they do, or distill.alpha_attn=0")


def check_resources(cfg: Config) -> None:
    """Refuse worker counts the cluster can never place (Ray would wait forever)."""
    import torch

    from distillray.ray_utils import local_num_cpus

    t = cfg.workers
    local = not (cfg.run.address or os.environ.get("RAY_ADDRESS"))
    if local and t.use_gpu and torch.cuda.device_count() < t.num_workers:
        raise ConfigError(
            f"config error: workers.use_gpu=true with workers.num_workers={t.num_workers}, but this machine "
            f"has {torch.cuda.device_count()} GPU(s); fix: set workers.use_gpu=false, or lower "
            "workers.num_workers, or submit to a GPU cluster"
        )
    if local:
        cpus = local_num_cpus(cfg)
        need = t.num_workers * t.cpus_per_worker
        if need > cpus - 1:  # one CPU stays free for Ray Data's read tasks
            fit = max(1, int((cpus - 1) // t.cpus_per_worker))
            raise ConfigError(
                f"config error: workers.num_workers={t.num_workers} x workers.cpus_per_worker="
                f"{t.cpus_per_worker} needs {need:g} CPUs but the local Ray instance has {cpus} "
                f"(one kept for data loading); fix: set workers.num_workers={fit}, or lower "
                "workers.cpus_per_worker, or set run.num_cpus"
            )


def check_gpus(need: int, now: float, can_add: float | None) -> None:
    """GPU workers on a cluster with fewer GPUs now: fine when its autoscaler can provide them (a
    scale-from-zero GPU group starts with none), an error when it cannot or there is no autoscaler."""
    if can_add is not None and can_add >= need:
        logger.warning("workers.num_workers=%d GPU workers but the cluster has %g GPU(s) now: training waits "
                       "while the autoscaler adds GPU nodes (it can provide %g)", need, now, can_add)
        return
    limit = "" if can_add is None else f" and its autoscaler can provide at most {can_add:g}"
    raise ConfigError(
        f"config error: workers.num_workers={need} GPU workers but the cluster has {now:g} GPU(s) now{limit}; "
        "fix: lower workers.num_workers (autoscaling clusters: raise the GPU worker group's max_workers / maxReplicas)"
    )


def check_cluster(cfg: Config) -> None:
    """After connecting: the same resource check against the real cluster."""
    from distillray.ray_utils import autoscaler_max, cluster_cpus, cluster_gpus

    t = cfg.workers
    if t.use_gpu and cluster_gpus() < t.num_workers:
        check_gpus(t.num_workers, cluster_gpus(), autoscaler_max("GPU"))
    import ray

    total = ray.cluster_resources()
    for name, amount in t.resources.items():
        if t.num_workers * amount > total.get(name, 0):
            # a warning, not an error: an autoscaler adds such nodes only once the workers ask for them
            logger.warning("workers.resources needs %d x %g %r but the cluster offers %g now: training waits until "
                           "nodes with it join (an autoscaler adds them; otherwise start nodes with ray start "
                           "--resources, or rayStartParams on KubeRay)", t.num_workers, amount, name, total.get(name, 0))
    if not t.use_gpu and t.num_workers * t.cpus_per_worker > cluster_cpus():
        raise ConfigError(
            f"config error: workers.num_workers={t.num_workers} x {t.cpus_per_worker:g} CPUs exceeds "
            f"the cluster's {cluster_cpus():g} CPUs; fix: lower workers.num_workers"
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
    if not need_train:
        return Task(cfg=cfg, train=None, dev=None, labels=None)
    if cfg.data.task == "qa":
        train, dev = load_qa_task(cfg, need_dev, check_windows_with=cfg.teacher.model if teacher else None)
        return Task(cfg=cfg, train=train, dev=dev, labels=None, load_seconds=time.time() - t0)
    train, dev, labels = load_task(cfg.data, local_run_dir(cfg), need_dev=need_dev)
    if cfg.data.metric == "f1" and len(labels.names) != 2:
        raise ConfigError(f"config error: data.metric=f1 is the F1 of the positive class of a binary task, but "
                          f"{train.source} has {len(labels.names)} labels {labels.names}; fix: set data.metric=accuracy")
    if cfg.augment.unlabelled or cfg.augment.corpus:
        from distillray.data.augment import load_unlabelled

        load_unlabelled(cfg, train)  # its file errors, now rather than inside the precompute job
    logger.info("data: train %d rows (%s), dev %s rows, labels %s", len(train), train.source,
                len(dev) if dev else 0, labels.names)
    return Task(cfg=cfg, train=train, dev=dev, labels=labels, load_seconds=time.time() - t0)


def load_qa_task(cfg: Config, need_dev: bool = True, check_windows_with: str | None = None) -> tuple[Any, Any]:
    """data.task=qa: the SQuAD train and dev splits (`tasks.qa.QADataset`); with a model dir,
    check that its tokenizer leaves every window room for context beyond data.doc_stride after
    the longest question (a one-line ConfigError naming data.doc_stride otherwise)."""
    from distillray.errors import DataError
    from distillray.tasks.qa import check_window_sizes, load_qa_split, question_tokens

    d = cfg.data
    if not d.train:
        raise DataError("data.train is not set; fix: set data.train=path/to/train.json (SQuAD v1.1)")
    if need_dev and not d.dev:
        raise DataError("data.dev is not set; fix: set data.dev=path/to/dev.json (SQuAD v1.1)")
    train = load_qa_split(d.train, d.max_rows)
    dev = load_qa_split(d.dev, d.dev_max_rows) if d.dev else None
    if check_windows_with is not None:
        from distillray.models import load_tokenizer

        tok = load_tokenizer(check_windows_with)
        check_window_sizes(tok, d.max_length, d.doc_stride,
                           question_tokens(tok, [train] + ([dev] if dev is not None else [])))
    logger.info("data: train %d questions (%s), dev %s questions", len(train), train.source,
                len(dev) if dev else 0)
    return train, dev


def task_from_shards(cfg: Config, manifest: dict[str, Any], need_dev: bool = False) -> Task:
    """`preflight` for a run that starts from a shard dir instead of the training data: the labels
    come from the shards' manifest, dev from data.dev (loaded when set, or always with
    `need_dev`: an unset data.dev is then an error)."""
    task = preflight(cfg, need_train=False, teacher=False)
    if cfg.data.task == "qa":
        from distillray.tasks.qa import load_qa_split

        dev = load_qa_split(cfg.data.dev, cfg.data.dev_max_rows) if need_dev or cfg.data.dev else None
        return dataclasses.replace(task, dev=dev)
    meta = manifest["dataset"]
    labels = LabelSet(raw=meta.get("raw_labels", meta["label_names"]), names=meta["label_names"])
    dev = load_dev_for_labels(cfg, labels) if need_dev or cfg.data.dev else None
    return dataclasses.replace(task, labels=labels, dev=dev)


def load_dev_for_labels(cfg: Config, labels: LabelSet) -> TextDataset:
    from distillray.data.text import resolve_source

    dev, _ = load_split(resolve_source(cfg.data.dev, local_run_dir(cfg), "dev"), cfg.data, labels,
                        cfg.data.dev_max_rows)
    return dev
