"""DeepSpeed: config, engine setup, collective checkpoints and a full-weight export.

One place decides precision and backend from the hardware: bf16 on GPUs (fp32 master weights
in the optimizer), fp32 on CPU; ZeRO stage 0-3 from `workers.zero_stage`. The optimizer (AdamW,
weight decay on matrices only) and the warm-up + linear-decay schedule are DeepSpeed's, built
from the config dict.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from distillray.config import OptimConfig, ScheduleConfig, WorkersConfig

logger = logging.getLogger(__name__)

CKPT_TAG = "ckpt"
_STATE_KEY = "distillray_loop_state"  # DeepSpeed adds its own keys to client_state


def resolve_precision(workers: WorkersConfig, on_gpu: bool) -> str:
    if workers.precision == "auto":
        return "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "fp32"
    if workers.precision in ("bf16", "fp16") and not on_gpu:
        return "fp32"  # CPU kernels for half precision training are slow or missing
    return workers.precision


def build_ds_config(schedule: ScheduleConfig, optim: OptimConfig, workers: WorkersConfig, world_size: int,
                    total_steps: int, on_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed config dict for one run. `schedule.batch_size` is the global batch."""
    micro = schedule.batch_size // (world_size * optim.grad_accum)
    precision = resolve_precision(workers, on_gpu)
    # DeepSpeed's WarmupDecayLR refuses 0 warm-up steps (a short run, or warmup_ratio=0): one step at least
    warmup = max(1, int(round(optim.warmup_ratio * total_steps)))
    zero: dict[str, Any] = {"stage": workers.zero_stage}
    if workers.zero_stage >= 2:
        zero.update(overlap_comm=on_gpu, contiguous_gradients=True, reduce_scatter=True)
    if workers.zero_stage == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=False)
    cfg: dict[str, Any] = {
        "train_batch_size": schedule.batch_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": optim.grad_accum,
        "optimizer": {
            "type": "AdamW",
            # torch's fused AdamW kernel (CPU and CUDA): no JIT-compiled op, same code on both.
            # On CPU, DeepSpeed's torch_adam otherwise runs the per-tensor loop: for the 17M-param
            # student on 2 cores the bare AdamW step went 0.15 -> 0.02 s, and ZeRO-2's whole
            # optimizer step 0.31 -> 0.16 s.
            "params": {"lr": schedule.lr, "betas": [0.9, 0.999], "eps": 1e-8,
                       "weight_decay": optim.weight_decay, "torch_adam": True, "adam_w_mode": True,
                       "fused": True},
        },
        "scheduler": {
            "type": "WarmupDecayLR",
            "params": {"warmup_min_lr": 0.0, "warmup_max_lr": schedule.lr, "warmup_num_steps": warmup,
                       "total_num_steps": max(total_steps, warmup + 1), "warmup_type": "linear"},
        },
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if optim.max_grad_norm > 0:
        cfg["gradient_clipping"] = optim.max_grad_norm
    return cfg


def setup_engine(model: torch.nn.Module, param_groups: list[dict[str, Any]], ds_config: dict[str, Any]):
    """Wrap `model` in a DeepSpeed engine (torch.distributed is already up, from Ray Train)."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=param_groups, config=ds_config)
    return engine


def save_checkpoint(engine, path: str | Path, client_state: dict[str, Any]) -> None:
    """Collective: every rank must call it (each writes its own optimizer shard)."""
    engine.save_checkpoint(str(path), tag=CKPT_TAG, client_state={_STATE_KEY: client_state})


def load_checkpoint(engine, path: str | Path) -> dict[str, Any]:
    """Collective. Restores model, optimizer, scheduler; returns the saved client state."""
    load_path, client_state = engine.load_checkpoint(str(path), tag=CKPT_TAG)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint with tag {CKPT_TAG!r} under {path}")
    return (client_state or {}).get(_STATE_KEY, {})


def full_state_dict(engine) -> dict[str, torch.Tensor]:
    """Collective: the complete fp32 weights on every rank (gathers ZeRO-3 partitions)."""
    module = engine.module
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
    return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
