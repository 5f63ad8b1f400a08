"""Ray Train wiring: the driver-side `fit` that launches the one train loop on N workers, and
the worker-side helpers the loop calls (context, data shards, report, checkpoints, export).

Backend and devices come from config and hardware: gloo on CPU, NCCL on GPU. Checkpoints are
DeepSpeed's, registered with Ray Train so a restarted worker group resumes from the latest one
(`train.max_failures`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import torch

from distillray import storage
from distillray.config import TrainConfig

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Worker side


@dataclass
class WorkerContext:
    rank: int
    world: int
    device: torch.device


def worker_context(train: TrainConfig) -> WorkerContext:
    import ray.train
    import ray.train.torch

    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False  # one bar per worker per eval is noise
    ctx = ray.train.get_context()
    device = ray.train.torch.get_device() if train.use_gpu else torch.device("cpu")
    if device.type == "cpu":
        # Ray reserves cpus_per_worker logical CPUs per worker: use that many threads, not all cores.
        torch.set_num_threads(max(1, int(train.cpus_per_worker)))
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

    it = ray.train.get_dataset_shard("dev")
    if it is None:
        return None
    rows: dict[str, list] = {"input_ids": [], "label": []}
    for b in it.iter_batches(batch_size=4096, batch_format="numpy"):
        rows["input_ids"].extend(b["input_ids"])
        rows["label"].extend(b["label"].tolist())
    return rows


def export_model(model_init: str, state_dict: dict[str, torch.Tensor], export_dir: str) -> str:
    """Write a plain Hugging Face model dir (safetensors, config, tokenizer) to local or remote
    storage."""
    from transformers import AutoModelForSequenceClassification

    from distillray.models import load_tokenizer, model_config, save_model_dir

    cfg = model_config(model_init)
    model = AutoModelForSequenceClassification.from_config(cfg)
    model.load_state_dict(state_dict, strict=True)
    return save_model_dir(model, load_tokenizer(model_init), export_dir)


# ---------------------------------------------------------------------------------------------
# Driver side


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    final: dict[str, float]
    steps: int
    resumes: int
    export_dir: str | None
    run_name: str
    storage_path: str


def run_id(spec_dict: dict[str, Any]) -> str:
    """A short hash of what the run trains: same inputs resume the same Ray Train run, changed
    inputs start a new one (Ray Train V2 restores a run by name + storage path)."""
    keep = {k: v for k, v in spec_dict.items() if k != "config"}
    keep["config"] = {k: v for k, v in spec_dict["config"].items() if k in ("distill", "student", "data")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:8]


def fit(spec, datasets: dict[str, Any], name: str, storage_path: str,
        callbacks: list | None = None, gpus_per_worker: float = 1.0) -> FitResult:
    """Run `train_loop_per_worker` on `train.num_workers` workers and wait for it.
    `gpus_per_worker` < 1 packs several runs on one GPU (Tune trials)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from distillray.training.loop import train_loop_per_worker

    tcfg: TrainConfig = spec.train_cfg
    spec_dict = spec.to_dict()
    resources = {"CPU": tcfg.cpus_per_worker}
    if tcfg.use_gpu:
        resources["GPU"] = gpus_per_worker
    storage_path, fs = storage.for_ray(storage_path)  # s3://, gs://: checkpoints go straight there
    run_name = f"{name}-{run_id(spec_dict)}"
    trainer = TorchTrainer(
        train_loop_per_worker=train_loop_per_worker,
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
    result = trainer.fit()
    if result.error:
        raise result.error
    ret = result.return_value or {}
    return FitResult(history=ret.get("history", []), final=ret.get("final", {}),
                     steps=ret.get("steps", 0), resumes=ret.get("resumes", 0),
                     export_dir=ret.get("export_dir"), run_name=run_name, storage_path=storage_path)
