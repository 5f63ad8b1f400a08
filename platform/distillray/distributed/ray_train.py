"""Ray Train wiring: the driver-side `fit` that launches a train loop on N workers, and the
worker-side helpers the loop calls (context, data shards, report, checkpoints).

`fit` takes the loop as an argument, as `TorchTrainer` does, so this package never imports
`distillray.training` (the loop imports the helpers here, not the other way round).

Backend and devices come from config and hardware: gloo on CPU, NCCL on GPU. Checkpoints are
DeepSpeed's, registered with Ray Train so a restarted worker group resumes from the latest one
(`workers.max_failures`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from distillray import storage
from distillray.config import WorkersConfig

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Worker side


@dataclass
class WorkerContext:
    rank: int
    world: int
    device: torch.device


def worker_context(workers: WorkersConfig) -> WorkerContext:
    import ray.train
    import ray.train.torch

    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False  # one bar per worker per eval is noise
    ctx = ray.train.get_context()
    device = ray.train.torch.get_device() if workers.use_gpu else torch.device("cpu")
    if device.type == "cpu":
        # Ray reserves cpus_per_worker logical CPUs per worker: use that many threads, not all cores.
        torch.set_num_threads(max(1, int(workers.cpus_per_worker)))
    return WorkerContext(ctx.get_world_rank(), ctx.get_world_size(), device)


class _Rank0Only(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0


def rank0_logger(rank: int) -> logging.Logger:
    """A logger that speaks on rank 0 only (Ray forwards worker logs to the driver and the
    dashboard; print() there is forwarded twice)."""
    log = logging.getLogger("distillray.train")
    log.setLevel(logging.INFO)
    log.filters.clear()
    log.addFilter(_Rank0Only(rank))
    return log


def get_checkpoint():
    import ray.train

    return ray.train.get_checkpoint()


def report(metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
    """A barrier across workers: every rank calls it the same number of times."""
    import ray.train

    ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    ray.train.report(metrics, checkpoint=ckpt)


def train_iterator():
    import ray.train

    return ray.train.get_dataset_shard("train")


def dev_rows() -> dict[str, list] | None:
    """The whole dev set, materialised once per worker (it is small and read at every eval)."""
    import ray.train

    try:
        it = ray.train.get_dataset_shard("dev")
    except KeyError:  # Ray Train v2: a run given no dev set (the task-agnostic stage)
        return None
    if it is None:
        return None
    rows: dict[str, list] = {"input_ids": [], "label": []}
    for b in it.iter_batches(batch_size=4096, batch_format="numpy"):
        if "start_position" in b:  # QA windows: every column (offsets, contexts, answers score them)
            rows.pop("label", None)
            for k, v in b.items():
                rows.setdefault(k, []).extend(v.tolist() if v.dtype != object else list(v))
            continue
        rows["input_ids"].extend(b["input_ids"])
        rows["label"].extend(b["label"].tolist())
        if "token_type_ids" in b:  # sentence pairs
            rows.setdefault("token_type_ids", []).extend(b["token_type_ids"])
    return rows


# ---------------------------------------------------------------------------------------------
# Driver side


@dataclass(frozen=True)
class FitOptions:
    """How one Ray Train run is launched, beyond its config: its name in the dashboard (default:
    `<run>-<stage>`), Ray Train callbacks (a Tune trial's report bridge), and the GPU share of
    each worker (< 1 packs several runs on one GPU, as Tune trials do)."""

    name: str | None = None
    callbacks: list | None = None
    gpus_per_worker: float = 1.0


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    final: dict[str, float]
    steps: int
    resumes: int
    export_dir: str | None
    run_name: str
    storage_path: str
    seconds: float = 0.0  # wall time of the stage that ran it


def run_id(spec_dict: dict[str, Any]) -> str:
    """A short hash of what the run trains: same inputs resume the same Ray Train run, changed
    inputs start a new one (Ray Train V2 restores a run by name + storage path)."""
    config = spec_dict["config"]
    keep = {k: v for k, v in spec_dict.items() if k != "config"}
    keep["config"] = {k: v for k, v in config.items() if k in ("distill", "student", "data", "optim", "workers",
                                                                "checkpoint")}
    # where the workers run is not what they train: a run moved to other nodes still resumes
    keep["config"]["workers"] = {k: v for k, v in config["workers"].items() if k != "resources"}
    # the run-wide part of `train` (cadence, shuffling, seed); each stage's schedule is in the spec
    keep["config"]["train"] = {k: v for k, v in config["train"].items()
                               if k not in spec_dict["schedule"] and k != "freeze_embeddings"}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:8]


def fit(loop_fn: Callable[[dict[str, Any]], dict[str, Any] | None], spec: Any, datasets: dict[str, Any],
        name: str, storage_path: str, callbacks: list | None = None, gpus_per_worker: float = 1.0) -> FitResult:
    """Run `loop_fn(spec.to_dict())` on `workers.num_workers` workers and wait for it.

    `spec` carries the run's plain data (`to_dict()`, `workers`, `stage`); `loop_fn` is the
    per-worker entry point (`distillray.training.loop.train_loop_per_worker`).
    `gpus_per_worker` < 1 packs several runs on one GPU (Tune trials)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    tcfg: WorkersConfig = spec.workers
    spec_dict = spec.to_dict()
    resources = {"CPU": tcfg.cpus_per_worker, **tcfg.resources}
    if tcfg.use_gpu:
        resources["GPU"] = gpus_per_worker
    storage_path, fs = storage.for_ray(storage_path)  # s3://, gs://: checkpoints go straight there
    run_name = f"{name}-{run_id(spec_dict)}"
    trainer = TorchTrainer(
        train_loop_per_worker=loop_fn,
        train_loop_config=spec_dict,
        scaling_config=ScalingConfig(num_workers=tcfg.num_workers, use_gpu=tcfg.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=tcfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks or None,
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
        torch_config=TorchConfig(backend="nccl" if tcfg.use_gpu else "gloo"),
    )
    logger.info("%s: Ray Train run %s on %d worker(s) (%s)", spec.stage, run_name, tcfg.num_workers,
                "GPU" if tcfg.use_gpu else "CPU")
    t0 = time.time()
    result = trainer.fit()
    if result.error:
        raise result.error
    ret = result.return_value or {}
    return FitResult(history=ret.get("history", []), final=ret.get("final", {}),
                     steps=ret.get("steps", 0), resumes=ret.get("resumes", 0),
                     export_dir=ret.get("export_dir"), run_name=run_name, storage_path=storage_path,
                     seconds=time.time() - t0)
