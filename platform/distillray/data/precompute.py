"""Teacher logits, computed once by Ray Data into Arrow shards.

    rows (driver, text only) -> from_arrow, length-sorted shard-sized blocks
      -> map_batches(TeacherLogits) on an actor pool (one per GPU, or CPU actors; with
         precompute.backend=onnx, OnnxTeacherLogits: the teacher's fp32 export in ONNX Runtime)
      -> write_datasink(ShardDatasink): one content-addressed Parquet file per block

Extractive QA (windows, start/end logits) is the same pipeline in `data.precompute_qa`.

The driver never holds logits: they stream from the actors straight into shard files. A rerun
first checks the shards already on disk (by checksum) and sends only the missing rows through
the pipeline, so an interrupted run resumes with no duplicates and no gaps, and a finished one
is a no-op.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data import Datasink

from distillray import storage
from distillray.config import Config
from distillray.data import augment, shards
from distillray.data.text import TextDataset
from distillray.errors import ShardError
from distillray.metrics import record_precompute

logger = logging.getLogger(__name__)


class TeacherLogits:
    """Ray Data actor: tokenise a block of texts and run the teacher over it."""

    def __init__(self, model_dir: str, max_length: int, batch_size: int, logits_dtype: str,
                 store_hidden: bool, use_gpu: bool, threads: int, run_name: str = "",
                 layer_states: dict[str, Any] | None = None) -> None:
        import torch

        from distillray.inference import pick_device
        from distillray.models import load_classifier, load_tokenizer

        if not use_gpu:
            torch.set_num_threads(max(1, threads))
        self.device = pick_device(use_gpu)
        self.model = load_classifier(model_dir).to(self.device).eval()
        self.tokenizer = load_tokenizer(model_dir)
        self.max_length, self.batch_size = max_length, batch_size
        self.logits_dtype, self.store_hidden = logits_dtype, store_hidden
        self.run_name = run_name
        self.layer_states = layer_states
        if layer_states and layer_states["attention"]:
            self.model.set_attn_implementation("eager")  # sdpa returns no attention probabilities

    def __call__(self, batch: pa.Table) -> pa.Table:
        from distillray.inference import forward_sorted
        from distillray.tasks.classification import tokenize

        t0 = time.time()
        texts = batch.column("text").to_pylist()
        items = list(zip(texts, batch.column("text_pair").to_pylist())) if "text_pair" in batch.column_names else texts
        seqs, types = tokenize(self.tokenizer, items, self.max_length)
        pad_id = self.tokenizer.pad_token_id or 0
        states = attn = None
        if self.layer_states:
            logits, hidden, states, attn = forward_layers(self.model, seqs, self.batch_size, pad_id, self.device,
                                                          self.store_hidden, types, self.layer_states)
        else:
            logits, hidden = forward_sorted(self.model, seqs, self.batch_size, pad_id, self.device,
                                            self.store_hidden, types)
        table = shards.make_table(batch.column("id").to_numpy(), seqs, batch.column("label").to_numpy(),
                                  logits, hidden, self.logits_dtype, types, states, attn)
        record_precompute(table.num_rows, time.time() - t0, self.run_name)
        return table


class OnnxTeacherLogits:
    """`TeacherLogits` through ONNX Runtime (precompute.backend=onnx): the fp32 export the driver
    checked against torch (`onnx_teacher`), shipped as bytes through the object store so every
    node runs that file whatever holds the teacher dir; `threads` intra-op threads."""

    def __init__(self, model_dir: str, model_ref: list, max_length: int, batch_size: int, logits_dtype: str,
                 threads: int, run_name: str = "") -> None:
        from distillray.models import load_tokenizer
        from distillray.models.onnx import onnx_session

        self.session = onnx_session(ray.get(model_ref[0]), threads=max(1, threads))
        self.tokenizer = load_tokenizer(model_dir)
        self.max_length, self.batch_size = max_length, batch_size
        self.logits_dtype, self.run_name = logits_dtype, run_name

    def __call__(self, batch: pa.Table) -> pa.Table:
        from distillray.models.onnx import onnx_logits
        from distillray.tasks.classification import tokenize

        t0 = time.time()
        texts = batch.column("text").to_pylist()
        items = list(zip(texts, batch.column("text_pair").to_pylist())) if "text_pair" in batch.column_names else texts
        seqs, types = tokenize(self.tokenizer, items, self.max_length)
        logits = onnx_logits(self.session, seqs, self.batch_size, self.tokenizer.pad_token_id or 0, types)
        table = shards.make_table(batch.column("id").to_numpy(), seqs, batch.column("label").to_numpy(),
                                  logits, None, self.logits_dtype, types)
        record_precompute(table.num_rows, time.time() - t0, self.run_name)
        return table


PARITY_ROWS = 32  # training rows the driver runs through torch and the export before trusting it


def onnx_teacher(teacher_dir: str, items: list, max_length: int, doc_stride: int | None = None) -> Path:
    """The teacher's fp32 ONNX export for precompute.backend=onnx: exported into the teacher dir
    when missing (as jobs/export_onnx.py would), then checked against torch on `items` (a few
    training rows; for a QA teacher, (question, context) pairs read in windows of `max_length`
    with `doc_stride`), since a stale export of an earlier teacher in the same dir would silently
    teach another model's logits under this teacher's shard key."""
    from distillray.errors import ModelError
    from distillray.models.onnx import PARITY_TOL, export_onnx, max_logit_diff, onnx_path, qa_max_logit_diff

    path = onnx_path(teacher_dir)
    if not path.is_file():
        logger.info("precompute: exporting the teacher to %s for ONNX Runtime", path)
        export_onnx(teacher_dir)
    if doc_stride is None:
        diff = max_logit_diff(teacher_dir, items, "fp32", max_length)
    else:
        diff = qa_max_logit_diff(teacher_dir, [q for q, _ in items], [c for _, c in items], "fp32", max_length,
                                 doc_stride)
    if not diff <= PARITY_TOL:  # also catches NaN
        raise ModelError(f"{path}: its logits differ from the teacher's by up to {diff:.1e} on {len(items)} "
                         f"training rows (allowed {PARITY_TOL:.0e}), so it is not this teacher's export; fix: "
                         f"delete {path.parent} (precompute re-exports it), or set precompute.backend=torch")
    logger.info("precompute: ONNX export checked: largest logit difference from torch %.1e on %d rows",
                diff, len(items))
    return path


def forward_layers(model, seqs: list, batch_size: int, pad_id: int, device, want_hidden: bool,
                   types: list | None, layer_states: dict[str, Any]):
    """`forward_sorted` plus, per row, the stored teacher layers' hidden states (layers, len,
    hidden) and attention distributions (layers, heads, len, len) as fp16, unpadded (None for a
    kind not stored)."""
    import torch

    from distillray.inference import pad

    layers, want_states, want_attn = layer_states["layers"], layer_states["hidden"], layer_states["attention"]
    order = np.argsort([len(x) for x in seqs], kind="stable")
    logits = np.empty((len(seqs), model.config.num_labels), dtype=np.float32)
    hidden = np.empty((len(seqs), model.config.hidden_size), dtype=np.float32) if want_hidden else None
    states: list = [None] * len(seqs)
    attn: list = [None] * len(seqs)
    with torch.inference_mode():
        for start in range(0, len(seqs), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = pad([seqs[i] for i in idx], pad_id)
            extra = {} if types is None else {"token_type_ids": pad([types[i] for i in idx], 0)[0].to(device)}
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True,
                        output_attentions=want_attn, **extra)
            logits[idx] = out.logits.float().cpu().numpy()
            if want_hidden:
                hidden[idx] = out.hidden_states[-1][:, 0].float().cpu().numpy()
            hs = torch.stack([out.hidden_states[t + 1] for t in layers], 1).half().cpu().numpy() if want_states else None
            at = torch.stack([out.attentions[t] for t in layers], 1).half().cpu().numpy() if want_attn else None
            for k, i in enumerate(idx):
                n = len(seqs[i])
                if hs is not None:
                    states[i] = hs[k, :, :n]  # (layers, len, hidden)
                if at is not None:
                    attn[i] = at[k, :, :, :n, :n]  # (layers, heads, len, len)
    return logits, hidden, states if want_states else None, attn if want_attn else None


def layer_states_meta(cfg: Config, teacher_dir: str) -> dict[str, Any] | None:
    """Which teacher layers (and which of hidden states / attention) the shards must store for
    the run's intermediate-layer losses; None when those are off (the logits-only default)."""
    d = cfg.distill
    if not (d.alpha_hidden > 0 or d.alpha_attn > 0):
        return None
    from distillray.models import distill_layer_map, model_config

    mcfg = model_config(teacher_dir)
    pairs = distill_layer_map(cfg.student, d.layer_map, mcfg.num_hidden_layers)
    return {"layers": sorted({t for _, t in pairs}), "hidden": d.alpha_hidden > 0, "attention": d.alpha_attn > 0,
            "hidden_size": mcfg.hidden_size, "heads": mcfg.num_attention_heads, "dtype": "float16",
            "teacher_layers": mcfg.num_hidden_layers}


class ShardDatasink(Datasink):
    """Writes each block as one content-addressed shard (see `shards.write_shard`)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def write(self, blocks: Iterable[pa.Table], ctx: Any) -> list[dict[str, Any]]:
        return [shards.write_shard(self.out_dir, b) for b in blocks if b.num_rows]

    def get_name(self) -> str:
        return "TeacherLogitShards"


@dataclass
class PrecomputeResult:
    shard_dir: str
    manifest: dict[str, Any]
    rows_computed: int  # rows this run sent through the teacher (0 for a no-op)
    seconds: float
    reused: bool

    @property
    def bytes_per_row(self) -> float:
        """Shard bytes on disk per row (manifests before this figure existed: 0)."""
        return float(self.manifest.get("bytes_per_row", 0.0))


def shard_meta(cfg: Config, train: TextDataset, teacher_dir: str) -> dict[str, Any]:
    """Everything the shards depend on; its hash names the shard dir."""
    from distillray.models import content_hash, model_config, tokenizer_hash

    mcfg = model_config(teacher_dir)
    return {
        "teacher": {"path": str(teacher_dir), "content_hash": content_hash(teacher_dir),
                    "num_labels": mcfg.num_labels, "hidden_size": mcfg.hidden_size},
        "tokenizer_hash": tokenizer_hash(teacher_dir),
        "task": cfg.data.task,
        "max_length": cfg.data.max_length,
        "logits_dtype": cfg.precompute.logits_dtype,
        "store_hidden": cfg.precompute.store_hidden,
        "dataset": {"source": train.source, "fingerprint": train.fingerprint(), "rows": len(train),
                    "label_names": train.label_names, "raw_labels": train.raw_labels},
    }


def key_inputs(meta: dict[str, Any]) -> dict[str, Any]:
    """What identifies a shard dir: the teacher by content and the dataset by fingerprint, not by
    where they live (the same teacher copied into another run's output dir reuses the shards)."""
    return {k: v for k, v in meta.items() if k != "teacher"} | {
        "teacher": meta["teacher"]["content_hash"], "dataset": meta["dataset"]["fingerprint"]}


def shard_dir_for(cfg: Config, meta: dict[str, Any]) -> str:
    key = shards.shard_key(key_inputs(meta))
    stem = Path(meta["dataset"]["source"]).stem.replace(":", "-")[:40] or "data"
    return storage.join(cfg.precompute.cache_dir, f"{stem}-L{cfg.data.max_length}-{key}")


def open_shard_dir(cfg: Config, meta: dict[str, Any]) -> tuple[str, dict[str, Any] | None, Any]:
    """The shard dir for `meta`, created with its meta file (a dir holding other inputs' shards is
    refused), its manifest if one was written, and the shards found in it, checked against it."""
    out_dir = shard_dir_for(cfg, meta)
    storage.makedirs(out_dir)
    meta_path = storage.join(out_dir, shards.META)
    old_meta = shards.read_json(meta_path)
    if old_meta is not None and key_inputs(old_meta) != key_inputs(meta):
        raise ShardError(f"{out_dir}: holds shards for other inputs than this run's (its {shards.META} "
                         "differs); fix: delete the dir, or set precompute.cache_dir elsewhere")
    if old_meta is None:
        shards.write_json(meta_path, meta)
    old_manifest = shards.read_json(storage.join(out_dir, shards.MANIFEST))
    expected = {s["file"]: s["sha256"] for s in old_manifest["shards"]} if old_manifest else None
    found = shards.scan(out_dir, expected)
    return out_dir, old_manifest, found


def num_actors(cfg: Config, use_gpu: bool) -> int:
    if cfg.precompute.num_actors:
        return cfg.precompute.num_actors
    if use_gpu:
        return max(1, int(ray.cluster_resources().get("GPU", 0)))
    from distillray.ray_utils import compute_cpus

    return max(1, int(compute_cpus() // cfg.precompute.cpus_per_actor))


def pending_blocks(table: pa.Table, done_ids: np.ndarray, shard_rows: int, min_blocks: int) -> list[pa.Table]:
    """Rows not yet in a shard, cut into blocks of at most `shard_rows` in dataset order, and into
    at least `min_blocks` so every actor has work. (Each actor sorts its block by length before
    batching; sorting globally would make every shard hold texts of one length, which would bias
    training batches.)"""
    if len(done_ids):
        table = table.filter(pc.invert(pc.is_in(table.column("id"), pa.array(done_ids))))
    n = table.num_rows
    if n == 0:
        return []
    rows = min(shard_rows, -(-n // max(1, min_blocks)))
    return [table.slice(i, rows) for i in range(0, n, rows)]


def run_precompute(cfg: Config, train: TextDataset, teacher_dir: str) -> PrecomputeResult:
    """Make sure the shard dir for (cfg, train, teacher) is complete; compute what is missing."""
    t0 = time.time()
    meta = shard_meta(cfg, train, teacher_dir)
    unlabelled = augment.load_unlabelled(cfg, train)
    if augment.enabled(cfg.augment):
        meta["augment"] = augment.shard_meta(cfg.augment, unlabelled)
    layer_states = layer_states_meta(cfg, teacher_dir)
    if layer_states:
        meta["layer_states"] = layer_states  # only then: the logits-only shard keys stay as they were
    out_dir, old_manifest, found = open_shard_dir(cfg, meta)
    use_gpu = cfg.workers.use_gpu if cfg.precompute.use_gpu is None else cfg.precompute.use_gpu
    n_actors = num_actors(cfg, use_gpu)
    if augment.enabled(cfg.augment):
        sources = augment.source_table(train.to_arrow(), unlabelled, cfg.augment.copies, found.done_ids)
        blocks = augment.pending_blocks(sources, cfg.precompute.shard_rows, n_actors)
    else:
        blocks = pending_blocks(train.to_arrow(), found.done_ids, cfg.precompute.shard_rows, n_actors)
    if old_manifest and not blocks and not found.removed:
        logger.info("precompute: %s is up to date (%d rows, %d shards, checksums verified): nothing to do",
                    out_dir, old_manifest["rows"], len(old_manifest["shards"]))
        return PrecomputeResult(out_dir, old_manifest, 0, time.time() - t0, reused=True)
    if found.removed:
        logger.warning("precompute: removed %d bad or partial file(s) in %s: %s", len(found.removed),
                       out_dir, ", ".join(found.removed))
    pending = sum(augment.output_rows(b) for b in blocks)
    if found.valid:
        logger.info("precompute: resuming: %d rows already in %d shards, %d to compute",
                    len(found.done_ids), len(found.valid), pending)
    if blocks:
        n_actors = min(n_actors, len(blocks))
        logger.info("precompute: %d rows -> %s with %d %s actor(s), %s", pending, out_dir, n_actors,
                    "GPU" if use_gpu else "CPU", cfg.precompute.backend)
        t_run = time.time()
        threads = int(max(1, cfg.precompute.cpus_per_actor))
        if cfg.precompute.backend == "onnx":  # config rules refused GPUs, hidden and layer states
            path = onnx_teacher(teacher_dir, train.inputs()[:PARITY_ROWS], cfg.data.max_length)
            actor, kwargs = OnnxTeacherLogits, dict(model_ref=[ray.put(path.read_bytes())])
        else:
            actor, kwargs = TeacherLogits, dict(store_hidden=cfg.precompute.store_hidden, use_gpu=use_gpu,
                                                layer_states=layer_states)
        ds = ray.data.from_arrow(blocks)
        ds = augment.add_stage(ds, cfg, teacher_dir)
        ds = ds.map_batches(
            actor,
            fn_constructor_kwargs=dict(
                model_dir=str(teacher_dir), max_length=cfg.data.max_length,
                batch_size=cfg.precompute.batch_size, logits_dtype=cfg.precompute.logits_dtype,
                threads=threads, run_name=cfg.run_name, **kwargs),
            batch_size=None,  # one call per block: a block becomes one shard
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            num_cpus=0 if use_gpu else cfg.precompute.cpus_per_actor,
            num_gpus=1 if use_gpu else 0,
        )
        ds.set_name(f"precompute-logits:{cfg.run_name}")
        ds.write_datasink(ShardDatasink(out_dir))
        secs = time.time() - t_run
        logger.info("precompute: %d rows in %.1fs (%.0f rows/s)", pending, secs, pending / max(secs, 1e-9))

    final = shards.scan(out_dir)
    want = np.sort(augment.expected_ids(train.ids, unlabelled, cfg.augment.copies))
    got = np.sort(final.done_ids)
    if not np.array_equal(want, got):
        missing = np.setdiff1d(want, got)
        extra = np.setdiff1d(got, want)
        raise ShardError(
            f"{out_dir}: after precompute the shards hold {len(got)} rows but the dataset has "
            f"{len(want)} ({len(missing)} missing, {len(extra)} unexpected); fix: run again "
            "(only the missing rows are recomputed)"
        )
    size = storage.size_of([storage.join(out_dir, v["file"]) for v in final.valid])
    manifest = shards.write_manifest(out_dir, {**meta, "sources": augment.source_counts(final.done_ids),
                                               "bytes_per_row": size / max(1, len(final.done_ids))}, final.valid)
    logger.info("precompute: %d rows, %.0f bytes per row on disk", len(final.done_ids), manifest["bytes_per_row"])
    return PrecomputeResult(out_dir, manifest, pending, time.time() - t0, reused=False)
