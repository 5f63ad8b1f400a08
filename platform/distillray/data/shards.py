"""The teacher-logit shard format: Parquet files of one Arrow schema, plus `manifest.json`.

A shard dir holds everything a student needs to learn from a teacher without running it:

    id              int64                    row id in the source dataset
    input_ids       list<int32>              tokens, truncated to max_length, NOT padded
    label           int64                    hard label id
    token_type_ids  list<int8>               sentence pairs only: segment of each token (0: a, 1: b)
    teacher_logits  fixed_size_list<f32|f16> raw logits at T = 1 (any T is applied later)
    teacher_hidden  fixed_size_list<f32|f16> optional: final-layer [CLS] hidden state
    teacher_states  list<f16>                optional: the mapped layers' hidden states, (layers, len, hidden) flat
    teacher_attn    list<f16>                optional: their attention distributions, (layers, heads, len, len) flat

Extractive QA shards (manifest `task: qa`, `logit_layout: qa_start_end`) hold one row per window
instead: id (window), example_id (its question), input_ids, token_type_ids, start_position /
end_position (gold token, 0 = [CLS]) and teacher_start / teacher_end (list<f32|f16>, one logit
per real token).

Shard files are content-addressed (`shard-<sha256 prefix>.parquet`) and moved into place only
when complete, so a file's name is its checksum: a truncated or bit-flipped shard is detected
and recomputed. The dir's name is a key over every input (teacher weights, tokenizer,
max_length, dataset, dtype, task), so changing any input gives a new dir, never a mixed one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distillray import storage
from distillray.errors import ShardError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
META = "meta.json"  # the key's inputs, written before the first shard (checked on resume)
_PREFIX, _SUFFIX = "shard-", ".parquet"
_HASH_CHARS = 20


def shard_schema(num_labels: int, logits_dtype: str, hidden_size: int | None,
                 token_types: bool = False, states: bool = False, attn: bool = False) -> pa.Schema:
    ftype = pa.float16() if logits_dtype == "float16" else pa.float32()
    fields = [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
    ]
    if token_types:
        fields.append(pa.field("token_type_ids", pa.list_(pa.int8()), nullable=False))
    fields += [
        pa.field("teacher_logits", pa.list_(ftype, num_labels), nullable=False),
    ]
    if hidden_size:
        fields.append(pa.field("teacher_hidden", pa.list_(ftype, hidden_size), nullable=False))
    fields += [pa.field(name, pa.list_(pa.float16()), nullable=False)
               for name, on in (("teacher_states", states), ("teacher_attn", attn)) if on]
    return pa.schema(fields)


def _flat_f16(arrays: list[np.ndarray]) -> pa.ListArray:
    """One list<f16> row per array (any shape, flattened)."""
    flat = [np.asarray(a, np.float16).ravel() for a in arrays]
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in flat])]).astype(np.int32)
    values = np.concatenate(flat) if flat else np.empty(0, np.float16)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.float16()))


def make_table(ids: np.ndarray, input_ids: list[list[int]], labels: np.ndarray,
               logits: np.ndarray, hidden: np.ndarray | None, logits_dtype: str,
               token_type_ids: list[list[int]] | None = None, states: list[np.ndarray] | None = None,
               attn: list[np.ndarray] | None = None) -> pa.Table:
    """Build one shard table. logits: (rows, num_labels); hidden: (rows, hidden) or None;
    token_type_ids: per row, for sentence pairs (None: single texts); states / attn: per row,
    (layers, len, hidden) / (layers, heads, len, len), stored as fp16."""
    np_dtype = np.float16 if logits_dtype == "float16" else np.float32
    schema = shard_schema(logits.shape[1], logits_dtype, hidden.shape[1] if hidden is not None else None,
                          token_types=token_type_ids is not None, states=states is not None,
                          attn=attn is not None)
    cols = {
        "id": pa.array(ids, pa.int64()),
        "input_ids": pa.array(input_ids, pa.list_(pa.int32())),
        "label": pa.array(labels, pa.int64()),
        "teacher_logits": pa.FixedSizeListArray.from_arrays(
            pa.array(logits.astype(np_dtype).ravel()), logits.shape[1]),
    }
    if token_type_ids is not None:
        cols["token_type_ids"] = pa.array(token_type_ids, pa.list_(pa.int8()))
    if hidden is not None:
        cols["teacher_hidden"] = pa.FixedSizeListArray.from_arrays(
            pa.array(hidden.astype(np_dtype).ravel()), hidden.shape[1])
    if states is not None:
        cols["teacher_states"] = _flat_f16(states)
    if attn is not None:
        cols["teacher_attn"] = _flat_f16(attn)
    return pa.Table.from_pydict(cols, schema=schema)


QA_LAYOUT = "qa_start_end"  # manifest logit_layout of QA shards: a start and an end logit per real token
QA_COLUMNS = ("id", "example_id", "input_ids", "token_type_ids", "start_position", "end_position")


def make_qa_table(windows: pa.Table, starts: list[np.ndarray], ends: list[np.ndarray],
                  logits_dtype: str) -> pa.Table:
    """One QA shard table: the window columns (`tasks.qa.windows_table`: id, example_id,
    input_ids, token_type_ids, start_position, end_position) and the teacher's start and end
    logits, one per real token of each window (padding positions are not stored)."""
    ftype = pa.float16() if logits_dtype == "float16" else pa.float32()
    np_dtype = np.float16 if logits_dtype == "float16" else np.float32
    cols = {k: windows.column(k) for k in QA_COLUMNS}
    cols["teacher_start"] = pa.array([x.astype(np_dtype) for x in starts], pa.list_(ftype))
    cols["teacher_end"] = pa.array([x.astype(np_dtype) for x in ends], pa.list_(ftype))
    return pa.table(cols)


def shard_key(inputs: dict[str, Any]) -> str:
    """A short key over everything the shards' contents depend on."""
    blob = json.dumps({**inputs, "schema_version": SCHEMA_VERSION}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_shard(out_dir: str, table: pa.Table) -> dict[str, Any]:
    """Write one shard atomically under its content hash; returns its manifest entry."""
    buf = io.BytesIO()
    pq.write_table(table.sort_by("id"), buf, compression="zstd")
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    name = f"{_PREFIX}{digest[:_HASH_CHARS]}{_SUFFIX}"
    storage.write_bytes_atomic(storage.join(out_dir, name), data)
    return {"file": name, "rows": table.num_rows, "sha256": digest}


@dataclass
class ShardScan:
    valid: list[dict[str, Any]]  # manifest entries of shards whose content matches their name
    done_ids: np.ndarray  # ids covered by valid shards
    removed: list[str]  # files deleted: partial writes, corrupt or duplicate shards


def scan(out_dir: str, expected: dict[str, str] | None = None) -> ShardScan:
    """Check every shard file in `out_dir` against its content hash; delete the bad ones.

    `expected` maps file name -> full sha256 (from a manifest) where one is known.
    """
    valid, removed, id_sets = [], [], {}
    for name in storage.listdir(out_dir):
        path = storage.join(out_dir, name)
        if name.startswith(".tmp-"):
            storage.delete(path)  # a write that never finished
            removed.append(name)
            continue
        if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
            continue
        digest = storage.sha256_of(path)
        want = (expected or {}).get(name)
        if not digest.startswith(name[len(_PREFIX):-len(_SUFFIX)]) or (want and want != digest):
            logger.warning("shard %s failed its checksum: deleting it; its rows will be recomputed", name)
            storage.delete(path)
            removed.append(name)
            continue
        try:
            ids = pq.read_table(io.BytesIO(storage.read_bytes(path)), columns=["id"]).column("id").to_numpy()
        except (pa.ArrowException, OSError):
            storage.delete(path)
            removed.append(name)
            continue
        valid.append({"file": name, "rows": len(ids), "sha256": digest})
        id_sets[name] = ids
    # Two shards with the same ids: a write task that Ray retried. Keep one of them.
    seen: dict[bytes, str] = {}
    for entry in list(valid):
        sig = np.sort(id_sets[entry["file"]]).tobytes()
        if sig in seen:
            storage.delete(storage.join(out_dir, entry["file"]))
            removed.append(entry["file"])
            valid.remove(entry)
            del id_sets[entry["file"]]
        else:
            seen[sig] = entry["file"]
    all_ids = np.concatenate(list(id_sets.values())) if id_sets else np.empty(0, np.int64)
    if len(np.unique(all_ids)) != len(all_ids):
        raise ShardError(
            f"{out_dir}: shards overlap (the same row in two shards), which happens when two "
            "precompute runs write one dir at once; fix: delete the dir and run precompute again"
        )
    return ShardScan(valid=valid, done_ids=all_ids, removed=removed)


def read_json(path: str) -> dict[str, Any] | None:
    if not storage.exists(path):
        return None
    try:
        return json.loads(storage.read_bytes(path))
    except ValueError as e:
        raise ShardError(f"{path}: not valid JSON ({e}); fix: delete the shard dir and rerun precompute") from None


def write_json(path: str, obj: dict[str, Any]) -> None:
    storage.write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def write_manifest(out_dir: str, meta: dict[str, Any], shards: list[dict[str, Any]]) -> dict[str, Any]:
    manifest = {
        **meta,
        "schema_version": SCHEMA_VERSION,
        "rows": int(sum(s["rows"] for s in shards)),
        "shards": sorted(shards, key=lambda s: s["file"]),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(storage.join(out_dir, MANIFEST), manifest)
    return manifest


def load_manifest(shard_dir: str, verify: bool = True) -> dict[str, Any]:
    """Read a finished shard dir's manifest; with `verify`, check every shard's sha256."""
    manifest = read_json(storage.join(shard_dir, MANIFEST))
    if manifest is None:
        raise ShardError(
            f"{shard_dir}: no {MANIFEST}, so not a finished shard dir (an interrupted precompute?); "
            "fix: run jobs/precompute_logits.py with the same config to finish it"
        )
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ShardError(
            f"{shard_dir}: shard schema version {manifest.get('schema_version')} but this "
            f"distillray reads version {SCHEMA_VERSION}; fix: run precompute again"
        )
    if verify:
        for s in manifest["shards"]:
            path = storage.join(shard_dir, s["file"])
            if not storage.exists(path) or storage.sha256_of(path) != s["sha256"]:
                raise ShardError(
                    f"{path}: missing or fails its sha256 checksum; fix: run precompute again "
                    "with the same config (it recomputes only the bad shards)"
                )
    return manifest


def shard_paths(shard_dir: str, manifest: dict[str, Any]) -> list[str]:
    return [storage.join(shard_dir, s["file"]) for s in manifest["shards"]]


def check_compatible(manifest: dict[str, Any], shard_dir: str, *, teacher_hash: str | None,
                     tokenizer_hash: str | None, max_length: int | None,
                     label_names: list[str] | None, task: str | None = None,
                     doc_stride: int | None = None) -> None:
    """Refuse shards computed for another task, or from another teacher, tokenizer, max_length,
    label set or (QA) window stride. (Manifests written before tasks existed hold single-text
    shards.)"""
    checks = [
        ("task", task, manifest.get("task", "single"),
         f"set data.task={manifest.get('task', 'single')}, or run precompute with this config "
         "(each task's shards hold other inputs)"),
        ("teacher", teacher_hash, manifest["teacher"]["content_hash"],
         f"run precompute with this teacher, or set teacher.model={manifest['teacher']['path']}"),
        ("tokenizer", tokenizer_hash, manifest["tokenizer_hash"],
         "use the tokenizer the shards were made with, or run precompute again"),
        ("max_length", max_length, manifest["max_length"],
         f"set data.max_length={manifest['max_length']}, or run precompute again"),
        ("labels", label_names, manifest["dataset"]["label_names"],
         "use the dataset the shards were made from, or run precompute again"),
        ("doc_stride", doc_stride, manifest.get("doc_stride"),
         f"set data.doc_stride={manifest.get('doc_stride')}, or run precompute again (windows "
         "of another stride are other rows)"),
    ]
    for what, want, have, fix in checks:
        if want is not None and want != have:
            shown = (lambda v: v[:12] if isinstance(v, str) and len(v) == 64 else v)
            raise ShardError(
                f"{shard_dir}: shards were computed with {what} {shown(have)!r}, but this run uses "
                f"{shown(want)!r}; fix: {fix}"
            )


def check_layer_states(manifest: dict[str, Any], shard_dir: str, want: dict[str, Any] | None) -> None:
    """Refuse shards that lack the teacher layers (or the kind of state) a run's intermediate-layer
    losses need. `want`: the run's `layer_states` (None: it needs none)."""
    if not want:
        return
    have = manifest.get("layer_states") or {}
    missing = sorted(set(want["layers"]) - set(have.get("layers", [])))
    kinds = [k for k in ("hidden", "attention") if want.get(k) and not have.get(k)]
    if missing or kinds or have.get("hidden_size") != want["hidden_size"]:
        raise ShardError(
            f"{shard_dir}: this run's intermediate-layer losses need the teacher's layers {want['layers']} "
            f"({', '.join(k for k in ('hidden', 'attention') if want.get(k))}), but the shards hold "
            f"{have or 'none'}; fix: run precompute with this run's distill.* and student.* settings")
