"""Teacher start/end logits of extractive QA windows, computed once by Ray Data into the same
content-addressed, resumable Arrow shards as `data.precompute` (which this reuses): the driver
cuts the questions into windows, actors (torch, or the teacher's fp32 export in ONNX Runtime)
keep each window's logits at its real tokens.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from distillray import storage
from distillray.config import Config
from distillray.data import shards
from distillray.data.precompute import (
    PARITY_ROWS,
    PrecomputeResult,
    ShardDatasink,
    num_actors,
    onnx_teacher,
    open_shard_dir,
    pending_blocks,
)
from distillray.errors import ShardError
from distillray.metrics import record_precompute

logger = logging.getLogger(__name__)


def _span_logits(batch: pa.Table, batch_size: int, run) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each window's start and end logits at its real tokens: the windows length-sorted, padded per
    batch, and `run(input_ids, attention_mask, token_type_ids)` (int64 tensors) -> (starts, ends)
    float32 arrays (batch, longest window)."""
    from distillray.inference import pad

    seqs = batch.column("input_ids").to_pylist()
    types = batch.column("token_type_ids").to_pylist()
    order = np.argsort([len(x) for x in seqs], kind="stable")
    starts: list[np.ndarray] = [np.empty(0)] * len(seqs)
    ends: list[np.ndarray] = [np.empty(0)] * len(seqs)
    for lo in range(0, len(seqs), batch_size):
        idx = order[lo:lo + batch_size]
        ids, mask = pad([seqs[i] for i in idx], 0)
        s, e = run(ids, mask, pad([types[i] for i in idx], 0)[0])
        for j, i in enumerate(idx):
            starts[i], ends[i] = s[j, :len(seqs[i])], e[j, :len(seqs[i])]
    return starts, ends


class QATeacherLogits:
    """Ray Data actor: run the QA teacher over a block of windows (tokenised on the driver) and
    keep each window's start and end logits at its real tokens."""

    def __init__(self, model_dir: str, batch_size: int, logits_dtype: str, use_gpu: bool, threads: int,
                 run_name: str = "") -> None:
        import torch

        from distillray.inference import pick_device
        from distillray.tasks.qa import load_qa_model

        if not use_gpu:
            torch.set_num_threads(max(1, threads))
        self.device = pick_device(use_gpu)
        self.model = load_qa_model(model_dir).to(self.device).eval()
        self.batch_size, self.logits_dtype, self.run_name = batch_size, logits_dtype, run_name

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        def run(ids, mask, types):
            with torch.inference_mode():
                out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                 token_type_ids=types.to(self.device))
            return out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()

        t0 = time.time()
        starts, ends = _span_logits(batch, self.batch_size, run)
        table = shards.make_qa_table(batch, starts, ends, self.logits_dtype)
        record_precompute(table.num_rows, time.time() - t0, self.run_name)
        return table


class OnnxQATeacherLogits:
    """`QATeacherLogits` through ONNX Runtime (precompute.backend=onnx): the QA teacher's fp32
    export, checked against torch by the driver (`onnx_teacher`) and shipped as bytes."""

    def __init__(self, model_ref: list, batch_size: int, logits_dtype: str, threads: int, run_name: str = "") -> None:
        from distillray.models.onnx import onnx_session

        self.session = onnx_session(ray.get(model_ref[0]), threads=max(1, threads))
        self.batch_size, self.logits_dtype, self.run_name = batch_size, logits_dtype, run_name

    def __call__(self, batch: pa.Table) -> pa.Table:
        from distillray.models.onnx import SPAN_OUTPUTS

        def run(ids, mask, types):
            feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
            return tuple(self.session.run(list(SPAN_OUTPUTS), feed))

        t0 = time.time()
        starts, ends = _span_logits(batch, self.batch_size, run)
        table = shards.make_qa_table(batch, starts, ends, self.logits_dtype)
        record_precompute(table.num_rows, time.time() - t0, self.run_name)
        return table


def qa_shard_meta(cfg: Config, train: Any, teacher_dir: str, windows: int) -> dict[str, Any]:
    """`shard_meta` of extractive QA: the window layout (max_length, doc_stride) and the logit
    layout (a start and an end logit per real token) instead of a label set."""
    from distillray.models import content_hash, model_config, tokenizer_hash

    mcfg = model_config(teacher_dir)
    return {
        "teacher": {"path": str(teacher_dir), "content_hash": content_hash(teacher_dir),
                    "num_labels": 2, "hidden_size": mcfg.hidden_size},
        "tokenizer_hash": tokenizer_hash(teacher_dir),
        "task": "qa",
        "logit_layout": shards.QA_LAYOUT,
        "max_length": cfg.data.max_length,
        "doc_stride": cfg.data.doc_stride,
        "logits_dtype": cfg.precompute.logits_dtype,
        "store_hidden": False,
        "dataset": {"source": train.source, "fingerprint": train.fingerprint(), "rows": len(train),
                    "windows": windows, "label_names": None, "raw_labels": None},
    }


def run_qa_precompute(cfg: Config, train: Any, teacher_dir: str) -> PrecomputeResult:
    """`run_precompute` for extractive QA (`train`: a `tasks.qa.QADataset`): the questions are
    cut into windows on the driver, the teacher's start/end logits of each window go into the
    same content-addressed shards, resumable and cached by their inputs. The manifest adds
    `bytes_per_window` (shard bytes on disk) and `logit_bytes_per_window` (the logits alone)."""
    from distillray.models import load_tokenizer
    from distillray.tasks.qa import window_examples, windows_table

    t0 = time.time()
    tok = load_tokenizer(teacher_dir)
    windows = window_examples(tok, train.examples, labels=True, max_length=cfg.data.max_length,
                              doc_stride=cfg.data.doc_stride)
    table = windows_table(windows)
    meta = qa_shard_meta(cfg, train, teacher_dir, table.num_rows)
    out_dir, old_manifest, found = open_shard_dir(cfg, meta)
    use_gpu = cfg.workers.use_gpu if cfg.precompute.use_gpu is None else cfg.precompute.use_gpu
    n_actors = num_actors(cfg, use_gpu)
    blocks = pending_blocks(table, found.done_ids, cfg.precompute.shard_rows, n_actors)
    if old_manifest and not blocks and not found.removed:
        logger.info("precompute: %s is up to date (%d windows, %d shards, checksums verified): nothing to do",
                    out_dir, old_manifest["rows"], len(old_manifest["shards"]))
        return PrecomputeResult(out_dir, old_manifest, 0, time.time() - t0, reused=True)
    pending = sum(b.num_rows for b in blocks)
    if blocks:
        n_actors = min(n_actors, len(blocks))
        logger.info("precompute: %d windows of %d questions -> %s with %d %s actor(s), %s", pending, len(train),
                    out_dir, n_actors, "GPU" if use_gpu else "CPU", cfg.precompute.backend)
        kwargs = dict(batch_size=cfg.precompute.batch_size, logits_dtype=cfg.precompute.logits_dtype,
                      threads=int(max(1, cfg.precompute.cpus_per_actor)), run_name=cfg.run_name)
        if cfg.precompute.backend == "onnx":  # config rules refused GPUs
            items = [(ex.question, ex.context) for ex in train.examples[:PARITY_ROWS]]
            path = onnx_teacher(teacher_dir, items, cfg.data.max_length, cfg.data.doc_stride)
            actor, kwargs = OnnxQATeacherLogits, dict(kwargs, model_ref=[ray.put(path.read_bytes())])
        else:
            actor, kwargs = QATeacherLogits, dict(kwargs, model_dir=str(teacher_dir), use_gpu=use_gpu)
        ds = ray.data.from_arrow(blocks).map_batches(
            actor,
            fn_constructor_kwargs=kwargs,
            batch_size=None, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=n_actors),
            num_cpus=0 if use_gpu else cfg.precompute.cpus_per_actor, num_gpus=1 if use_gpu else 0)
        ds.set_name(f"precompute-qa-logits:{cfg.run_name}")
        ds.write_datasink(ShardDatasink(out_dir))
    final = shards.scan(out_dir)
    if not np.array_equal(np.sort(final.done_ids), np.arange(table.num_rows)):
        raise ShardError(f"{out_dir}: after precompute the shards hold {len(final.done_ids)} windows but the "
                         f"questions make {table.num_rows}; fix: run again (only the missing windows are recomputed)")
    real_tokens = int(pc.sum(pc.list_value_length(table.column("input_ids"))).as_py())
    itemsize = 2 if cfg.precompute.logits_dtype == "float16" else 4
    size = storage.size_of([storage.join(out_dir, s["file"]) for s in final.valid])
    extra = {"bytes_per_window": round(size / max(1, table.num_rows), 1),
             "logit_bytes_per_window": round(2 * itemsize * real_tokens / max(1, table.num_rows), 1),
             "tokens_per_window": round(real_tokens / max(1, table.num_rows), 1)}
    manifest = shards.write_manifest(out_dir, {**meta, **extra}, final.valid)
    logger.info("precompute: %d windows, %.0f bytes per window on disk (%.0f of them %s logits)",
                table.num_rows, extra["bytes_per_window"], extra["logit_bytes_per_window"],
                cfg.precompute.logits_dtype)
    return PrecomputeResult(out_dir, manifest, pending, time.time() - t0, reused=False)
