"""The one train loop: teacher fine-tuning, distillation and every Tune trial, on one CPU or many
GPUs. It runs inside each Ray Train worker: `distillray.distributed.ray_train.fit(train_loop_per_worker, spec, ...)`.

What differs between uses is data, not code: a distillation run's rows carry teacher logits and
the loss weights use them; a fine-tuning run's rows do not and only `alpha_ce` is on. The loop
never loads a teacher model: whatever the teacher knows arrives in the shards.

    setup_model -> setup_engine (DeepSpeed) -> load_checkpoint?
    for epoch: for micro-batch: train_step; every N steps: report / evaluate / save_checkpoint
    evaluate -> export_model (rank 0 writes a plain HF model dir)
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from distillray.config import Config, ScheduleConfig, WorkersConfig
from distillray.data.batches import StateLayout, batch_rows, bucketed_batches, collate, to_device
from distillray.losses import LayerOutputs, LossWeights, distill_loss, qa_distill_loss
from distillray.metrics import record_train
from distillray.tasks.classification import POSITIVE, f1_from_counts

logger = logging.getLogger(__name__)


class TrainingDivergedError(FloatingPointError):
    """The loss went NaN or infinite: more steps cannot recover (an absurd lr, for one)."""


def check_finite(loss: torch.Tensor, stage: str, step: int, lr: float) -> None:
    """Raise at the first report point (log, eval, checkpoint; the last step always logs) after
    the loss stops being finite, before it is checkpointed or scored. Only there: on a GPU each
    check is a host sync."""
    value = float(loss)
    if not math.isfinite(value):
        raise TrainingDivergedError(
            f"{stage}: training diverged: train loss is {value} at step {step} (lr {lr:g}); "
            "fix: lower train.lr (finetune.lr for the teacher) or raise distill.temperature")


@dataclass
class LoopSpec:
    """Everything a worker needs, as plain data (it crosses into Ray workers as a dict)."""

    config: dict[str, Any]  # Config.to_dict() of the run
    stage: str  # "finetune" | "general" | "distill" (names metrics and checkpoints)
    schedule: dict[str, Any]  # this stage's ScheduleConfig (train or finetune)
    freeze_embeddings: bool  # train.freeze_embeddings for the student; never for the teacher
    weights: dict[str, float]  # LossWeights fields
    model_init: str  # HF model dir the run starts from
    export_dir: str | None  # where rank 0 writes the final model (None: do not export)
    train_rows: int
    # intermediate-layer terms (`layer_spec`): student layers, the index of each one's teacher layer
    # among the stored ones, and the stored layers' shape; None when those terms are off
    layers: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopSpec:
        return cls(**d)

    @property
    def schedule_cfg(self) -> ScheduleConfig:
        return ScheduleConfig.model_validate(self.schedule)

    @property
    def workers(self) -> WorkersConfig:
        return WorkersConfig.model_validate(self.config["workers"])


def steps_per_epoch(train_rows: int, train: ScheduleConfig) -> int:
    """Optimizer steps per epoch: full global batches only, the same count on every worker."""
    return max(1, train_rows // train.batch_size)


def total_steps(train_rows: int, train: ScheduleConfig) -> int:
    n = steps_per_epoch(train_rows, train) * train.epochs
    return min(n, train.max_steps) if train.max_steps else n


@dataclass
class LoopState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    micro_in_epoch: int = 0  # micro-batches consumed in this epoch (data position)
    resumes: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on matrices (weights, embeddings); none on biases and LayerNorm."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def layer_spec(pairs: list[tuple[int, int]], layer_states: dict[str, Any]) -> dict[str, Any]:
    """LoopSpec.layers for (student layer, teacher layer) pairs and the shards' `layer_states`."""
    stored = list(layer_states["layers"])
    return {"student_layers": [s for s, _ in pairs], "teacher_index": [stored.index(t) for _, t in pairs],
            "stored": len(stored), "hidden_size": layer_states["hidden_size"], "heads": layer_states["heads"]}


def setup_model(model_init: str, freeze_embeddings: bool = False, task: str = "single",
                layers: dict[str, Any] | None = None, w: LossWeights | None = None) -> torch.nn.Module:
    """The student to train; with `layers` (LoopSpec.layers) wrapped to also return its mapped
    layers (`LayerDistillModel`: the projection to the teacher's width trains with it)."""
    from distillray.models import LayerDistillModel, freeze_word_embeddings, load_classifier

    if task == "qa":
        from distillray.tasks.qa import load_qa_model

        model = load_qa_model(model_init)
    else:
        model = load_classifier(model_init)
    if freeze_embeddings:
        freeze_word_embeddings(model)
    if layers is not None and w is not None and w.layer_terms:
        model = LayerDistillModel(model, layers["student_layers"], layers["hidden_size"],
                                  hidden=w.alpha_hidden > 0, attention=w.alpha_attn > 0)
    model.train()
    return model


def train_step(engine, batch: dict[str, torch.Tensor], w: LossWeights,
               teacher_index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Forward, loss, backward and (on accumulation boundaries) an optimizer step. The batch says
    the task: QA windows carry gold start/end positions, classification rows labels.
    `teacher_index`: per mapped student layer, its teacher layer's index in the stored states."""
    if "start_positions" in batch:
        out = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     token_type_ids=batch["token_type_ids"])
        loss, terms = qa_distill_loss(out.start_logits, out.end_logits, batch["start_positions"],
                                      batch["end_positions"], w, teacher_start=batch.get("teacher_start"),
                                      teacher_end=batch.get("teacher_end"), mask=batch["answer_mask"])
        engine.backward(loss)
        engine.step()
        return {"loss": loss.detach(), **terms}
    inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  token_type_ids=batch.get("token_type_ids"), output_hidden_states=w.alpha_cos > 0)
    layers = None
    if w.layer_terms:
        out, s_states, s_attn = engine(layer_outputs=True, **inputs)
        pick = (lambda key: batch[key].index_select(1, teacher_index.to(batch[key].device)))
        layers = LayerOutputs(mask=batch["attention_mask"], student_states=s_states, student_attn=s_attn,
                              teacher_states=pick("teacher_states") if s_states is not None else None,
                              teacher_attn=pick("teacher_attn") if s_attn is not None else None)
    else:
        out = engine(**inputs)
    loss, terms = distill_loss(
        out.logits, batch["labels"], w,
        teacher_logits=batch.get("teacher_logits"),
        student_hidden=out.hidden_states[-1][:, 0] if w.alpha_cos > 0 else None,
        teacher_hidden=batch.get("teacher_hidden"),
        layers=layers,
    )
    engine.backward(loss)
    engine.step()
    return {"loss": loss.detach(), **terms}


@torch.inference_mode()
def evaluate(engine, dev_rows: dict[str, Any] | None, micro: int, pad_id: int, rank: int, world: int,
             device: torch.device, f1: bool = False,
             qa_decoding: dict[str, int] | None = None) -> dict[str, float]:
    """Dev accuracy and CE loss (and, with `f1`, the positive class's F1). Batches are split
    round-robin over ranks; every rank runs the same number of forward passes (ZeRO-3 gathers
    weights collectively), then counts are summed."""
    if dev_rows is None:
        return {}
    if "start_position" in dev_rows:
        return evaluate_qa(engine, dev_rows, micro, pad_id, device, qa_decoding)
    import torch.distributed as dist

    n = len(dev_rows["label"])
    order = np.argsort([len(x) for x in dev_rows["input_ids"]], kind="stable")
    chunks = [order[i:i + micro] for i in range(0, n, micro)]
    per_rank = math.ceil(len(chunks) / world)
    sums = torch.zeros(6, dtype=torch.float64)  # correct, loss sum, rows, tp, fp, fn
    was_training = engine.module.training
    engine.module.eval()
    for k in range(per_rank):
        i = k * world + rank
        idx = chunks[i] if i < len(chunks) else chunks[0]  # a padding pass, not counted
        batch = to_device(collate(dev_rows, idx, pad_id), device)
        logits = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch.get("token_type_ids")).logits.float()
        if i < len(chunks):
            pred, gold = logits.argmax(-1), batch["labels"]
            sums[0] += (pred == gold).sum().item()
            sums[1] += torch.nn.functional.cross_entropy(logits, gold, reduction="sum").item()
            sums[2] += len(idx)
            sums[3] += ((pred == POSITIVE) & (gold == POSITIVE)).sum().item()
            sums[4] += ((pred == POSITIVE) & (gold != POSITIVE)).sum().item()
            sums[5] += ((pred != POSITIVE) & (gold == POSITIVE)).sum().item()
    if was_training:
        engine.module.train()
    if world > 1:
        dist.all_reduce(sums)
    out = {"dev_accuracy": float(sums[0] / sums[2]), "dev_loss": float(sums[1] / sums[2])}
    if f1:
        out["dev_f1"] = f1_from_counts(*sums[3:6].tolist())
    return out


@torch.inference_mode()
def evaluate_qa(engine, dev_rows: dict[str, Any], micro: int, pad_id: int, device: torch.device,
                decoding: dict[str, int] | None = None) -> dict[str, float]:
    """Dev SQuAD v1.1 EM and F1 (fractions) over every window of every question, and the CE on
    the gold start/end. Every rank runs every window (the same forward passes, as ZeRO-3 needs),
    so all ranks hold the same scores without a gather."""
    from distillray.tasks.qa import rows_to_windows
    from distillray.tasks.qa_decode import decode_windows
    from distillray.tasks.squad_metric import squad_scores

    n = len(dev_rows["input_ids"])
    width = max(len(x) for x in dev_rows["input_ids"])
    starts = np.full((n, width), -np.inf, dtype=np.float32)
    ends = np.full((n, width), -np.inf, dtype=np.float32)
    loss_sum = 0.0
    was_training = engine.module.training
    engine.module.eval()
    order = np.argsort([len(x) for x in dev_rows["input_ids"]], kind="stable")
    for lo in range(0, n, micro):
        idx = order[lo:lo + micro]
        batch = to_device(collate(dev_rows, idx, pad_id), device)
        out = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     token_type_ids=batch["token_type_ids"])
        loss, _ = qa_distill_loss(out.start_logits, out.end_logits, batch["start_positions"],
                                  batch["end_positions"], LossWeights.hard_labels(), mask=batch["answer_mask"])
        loss_sum += float(loss) * len(idx)
        seq = out.start_logits.shape[1]
        starts[idx, :seq] = out.start_logits.float().cpu().numpy()
        ends[idx, :seq] = out.end_logits.float().cpu().numpy()
    if was_training:
        engine.module.train()
    windows = rows_to_windows(dev_rows, range(n), width)
    n_examples = int(max(dev_rows["example_id"])) + 1
    contexts, gold = [""] * n_examples, [("", ())] * n_examples
    for i in range(n):
        ex = int(dev_rows["example_id"][i])
        contexts[ex], gold[ex] = dev_rows["context"][i], (str(ex), tuple(dev_rows["answers"][i]))
    answers = decode_windows(starts, ends, windows, contexts, **(decoding or {}))
    scores = squad_scores({str(i): a["answer"] for i, a in enumerate(answers)}, gold)
    return {"dev_exact_match": scores["exact_match"] / 100, "dev_f1": scores["f1"] / 100,
            "dev_loss": loss_sum / max(1, n)}


def _windows(it, micro: int, window_batches: int, shuffle_buffer: int, seed: int) -> Iterator[dict]:
    return it.iter_batches(batch_size=micro * max(1, window_batches), batch_format="numpy",
                           local_shuffle_buffer_size=shuffle_buffer or None,
                           local_shuffle_seed=seed if shuffle_buffer else None, drop_last=False)


def train_loop_per_worker(spec_dict: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train entry point (runs on every worker)."""
    from distillray.distributed import engine as deepspeed_engine
    from distillray.distributed import ray_train
    from distillray.models import export_model

    spec = LoopSpec.from_dict(spec_dict)
    cfg = Config.from_dict(spec.config)
    sched, optim, run = spec.schedule_cfg, cfg.optim, cfg.train  # run: cadence, shuffling, seed
    w = LossWeights(**spec.weights)
    wc = ray_train.worker_context(cfg.workers)
    torch.manual_seed(run.seed)
    log = ray_train.rank0_logger(wc.rank)

    model = setup_model(spec.model_init, spec.freeze_embeddings, cfg.data.task, spec.layers, w)
    states = teacher_index = None
    if spec.layers is not None and w.layer_terms:
        states = StateLayout(spec.layers["stored"], spec.layers["hidden_size"], spec.layers["heads"])
        teacher_index = torch.tensor(spec.layers["teacher_index"], dtype=torch.long)
    if spec.freeze_embeddings:
        log.info("%s: train.freeze_embeddings: %d parameters stay as loaded", spec.stage,
                 sum(p.numel() for p in model.parameters() if not p.requires_grad))
    pad_id = model.config.pad_token_id or 0
    n_steps = total_steps(spec.train_rows, sched)
    per_epoch = steps_per_epoch(spec.train_rows, sched)
    micro = sched.batch_size // (wc.world * optim.grad_accum)
    ds_config = deepspeed_engine.build_ds_config(sched, optim, cfg.workers, wc.world, n_steps,
                                                 wc.device.type == "cuda")
    engine = deepspeed_engine.setup_engine(model, param_groups(model, optim.weight_decay), ds_config)

    state = LoopState()
    ckpt = ray_train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            saved = deepspeed_engine.load_checkpoint(engine, d)
        state = LoopState(**{**saved, "resumes": saved.get("resumes", 0) + 1})
        log.info("%s: resumed from checkpoint at step %d (epoch %d, %d micro-batches in)",
                 spec.stage, state.step, state.epoch, state.micro_in_epoch)

    dev_rows = ray_train.dev_rows()
    train_it = ray_train.train_iterator()
    eval_every = run.eval_every or per_epoch
    want_f1 = cfg.data.metric == "f1"  # the headline metric: Tune and the report read dev_f1
    qa_decoding = {"n_best": cfg.data.n_best, "max_answer_length": cfg.data.max_answer_length}
    window_t0, window_rows, window_step = time.time(), 0, state.step

    def report(metrics: dict[str, Any], with_checkpoint: bool, to_ray: bool) -> None:
        """Every logged step goes to the history and the gauges; only eval, checkpoint and final
        points go to Ray Train (Tune reads them). A Ray Train report waits until the controller has
        taken the previous one, which it polls for every few seconds: reporting each logged step
        would pace training to that poll."""
        metrics = {"stage": spec.stage, "step": state.step, "epoch": state.epoch, **metrics}
        if wc.rank == 0:
            state.history.append(metrics)
            record_train(metrics, spec.stage, cfg.run_name)  # dashboard / Prometheus gauges
        if not to_ray:
            return
        if not with_checkpoint:
            ray_train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="distillray-ckpt-") as tmp:
            client = asdict(state)
            deepspeed_engine.save_checkpoint(engine, tmp, client)
            ray_train.report(metrics, checkpoint_dir=tmp)

    while state.step < n_steps and state.epoch < sched.epochs:
        batches = bucketed_batches(
            _windows(train_it, micro, 32, run.shuffle_buffer, run.seed + state.epoch),
            micro, seed=run.seed * 1000 + state.epoch, pad_id=pad_id, states=states)
        micro_limit = per_epoch * optim.grad_accum
        for k, batch in enumerate(batches):
            if k < state.micro_in_epoch:
                continue  # resuming mid-epoch: skip what was already trained on
            if k >= micro_limit or state.step >= n_steps:
                break
            out = train_step(engine, to_device(batch, wc.device), w, teacher_index)
            state.micro_in_epoch = k + 1
            window_rows += batch_rows(batch) * wc.world
            if (k + 1) % optim.grad_accum:
                continue  # not an optimizer step yet
            state.step += 1
            last = state.step == n_steps
            do_log = state.step % run.log_every == 0 or last
            do_eval = state.step % eval_every == 0 and not last  # the last eval comes below
            every = cfg.checkpoint.every
            do_ckpt = bool(every) and state.step % every == 0
            if not (do_log or do_eval or do_ckpt):
                continue
            check_finite(out["loss"], spec.stage, state.step, float(engine.get_lr()[0]))
            metrics: dict[str, Any] = {}
            if do_log:
                dt = time.time() - window_t0
                metrics.update({f"train_{name}": float(v) for name, v in out.items()})
                metrics.update(lr=float(engine.get_lr()[0]), examples_per_s=window_rows / max(dt, 1e-9),
                               step_time_s=dt / max(1, state.step - window_step))
                window_t0, window_rows, window_step = time.time(), 0, state.step
            if do_eval:
                metrics.update(evaluate(engine, dev_rows, micro, pad_id, wc.rank, wc.world, wc.device, want_f1,
                                        qa_decoding))
            report(metrics, with_checkpoint=do_ckpt, to_ray=do_eval or do_ckpt)
            log.info("%s step %d/%d %s", spec.stage, state.step, n_steps,
                     " ".join(f"{name}={v:.4g}" for name, v in metrics.items() if isinstance(v, float)))
        state.epoch += 1
        state.micro_in_epoch = 0

    final = evaluate(engine, dev_rows, micro, pad_id, wc.rank, wc.world, wc.device, want_f1, qa_decoding)
    weights = deepspeed_engine.full_state_dict(engine)
    if states is not None:
        from distillray.models import LayerDistillModel

        weights = LayerDistillModel.student_state(weights)  # the projection is not part of the student
    export = None
    if wc.rank == 0 and spec.export_dir:
        export = export_model(spec.model_init, weights, spec.export_dir)
    report({**final, "final": True}, with_checkpoint=True, to_ray=True)
    if wc.rank == 0:
        return {"history": state.history, "final": final, "steps": state.step,
                "resumes": state.resumes, "export_dir": export}
    return None
