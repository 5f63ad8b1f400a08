"""Turning streamed rows into padded training batches, and building the Ray Datasets that
feed the train loop.

Training batches are bucketed: a window of rows (many micro-batches' worth, already shuffled by
Ray Data's local shuffle buffer) is sorted by length, cut into micro-batches, and the
micro-batches are shuffled again. Each batch is padded only to its own longest row, so short
rows stop paying for long ones, while the order of batches stays random.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from distillray.inference import pad

Batch = dict[str, torch.Tensor]


def _stack(col: Any) -> np.ndarray:
    """A fixed-size list column arrives as a 2-D array or an object array of 1-D arrays."""
    arr = np.asarray(col)
    if arr.dtype == object:
        arr = np.stack(list(col))
    return arr.astype(np.float32)


@dataclass(frozen=True)
class StateLayout:
    """The shape of the stored teacher layers (shards' `layer_states`): a row's flat
    teacher_states is (layers, len, hidden), its teacher_attn (layers, heads, len, len)."""

    layers: int
    hidden: int
    heads: int


def _pad_states(flat: list, lengths: list[int], inner: tuple[int, ...], square: bool) -> torch.Tensor:
    """Rows of flat fp16 arrays -> one zero-padded float32 tensor: (batch, layers, len, hidden) or,
    with `square`, (batch, layers, heads, len, len)."""
    n = max(lengths)
    out = torch.zeros((len(flat), *inner, n, n) if square else (len(flat), inner[0], n, inner[1]))
    for b, (a, m) in enumerate(zip(flat, lengths)):
        a = torch.from_numpy(np.asarray(a, dtype=np.float32))
        if square:
            out[b, :, :, :m, :m] = a.view(*inner, m, m)
        else:
            out[b, :, :m] = a.view(inner[0], m, inner[1])
    return out


def collate(rows: dict[str, Any], idx: np.ndarray, pad_id: int, states: StateLayout | None = None) -> Batch:
    """Pad the chosen rows of a numpy batch into tensors.

    Returns input_ids, attention_mask (batch, len); labels (batch,); token_type_ids (batch, len)
    for sentence pairs; teacher_logits (batch, num_labels) and teacher_hidden (batch, hidden)
    when the rows carry them; with `states`, teacher_states (batch, layers, len, hidden) and
    teacher_attn (batch, layers, heads, len, len) when the rows carry them.
    """
    if "start_position" in rows:
        return collate_qa(rows, idx, pad_id)
    ids, mask = pad([rows["input_ids"][i] for i in idx], pad_id)
    out: Batch = {"input_ids": ids, "attention_mask": mask,
                  "labels": torch.as_tensor(np.asarray(rows["label"])[idx], dtype=torch.long)}
    if "token_type_ids" in rows:
        out["token_type_ids"] = pad([rows["token_type_ids"][i] for i in idx], 0)[0]
    for key in ("teacher_logits", "teacher_hidden"):
        if key in rows:
            out[key] = torch.from_numpy(_stack(rows[key])[idx])
    if states is not None:
        lengths = [len(rows["input_ids"][i]) for i in idx]
        if "teacher_states" in rows:
            out["teacher_states"] = _pad_states([rows["teacher_states"][i] for i in idx], lengths,
                                                (states.layers, states.hidden), square=False)
        if "teacher_attn" in rows:
            out["teacher_attn"] = _pad_states([rows["teacher_attn"][i] for i in idx], lengths,
                                              (states.layers, states.heads), square=True)
    return out


def collate_qa(rows: dict[str, Any], idx: np.ndarray, pad_id: int) -> Batch:
    """Pad the chosen QA window rows: input_ids, attention_mask, token_type_ids, answer_mask
    (batch, len); start_positions, end_positions (batch,); teacher_start / teacher_end
    (batch, len, 0 past a window's end: masked in the loss) when the rows carry them."""
    from distillray.tasks.qa import answer_mask_from_types

    ids, mask = pad([rows["input_ids"][i] for i in idx], pad_id)
    types = pad([rows["token_type_ids"][i] for i in idx], 0)[0]
    out: Batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
                  "answer_mask": answer_mask_from_types(types, mask),
                  "start_positions": torch.as_tensor(np.asarray(rows["start_position"])[idx], dtype=torch.long),
                  "end_positions": torch.as_tensor(np.asarray(rows["end_position"])[idx], dtype=torch.long)}
    for key in ("teacher_start", "teacher_end"):
        if key in rows:
            out[key] = torch.zeros(ids.shape, dtype=torch.float32)
            for j, i in enumerate(idx):
                x = np.asarray(rows[key][i], dtype=np.float32)
                out[key][j, :len(x)] = torch.from_numpy(x)
    return out


def batch_rows(batch: Batch) -> int:
    """Rows in a collated batch (of any task)."""
    return len(batch["input_ids"])


def bucketed_batches(windows: Iterator[dict[str, Any]], micro_batch: int, seed: int,
                     pad_id: int, bucket: bool = True, states: StateLayout | None = None) -> Iterator[Batch]:
    """Yield micro-batches from numpy windows (dicts of columns), bucketed by length."""
    rng = random.Random(seed)
    carry: dict[str, list] | None = None
    for window in windows:
        if carry:  # rows left over from the previous window join this one
            window = {k: list(carry[k]) + list(window[k]) for k in window}
        n = len(window["input_ids"])
        order = np.arange(n)
        if bucket:
            lengths = np.fromiter((len(x) for x in window["input_ids"]), dtype=np.int64, count=n)
            order = np.argsort(lengths, kind="stable")
        full = n // micro_batch * micro_batch
        chunks = [order[i:i + micro_batch] for i in range(0, full, micro_batch)]
        rng.shuffle(chunks)
        for idx in chunks:
            yield collate(window, idx, pad_id, states)
        rest = order[full:]
        carry = {k: [window[k][i] for i in rest] for k in window} if len(rest) else None


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# Driver side: Ray Datasets for the train loop


def tokenized_dataset(table, tokenizer_dir: str, max_length: int, name: str):
    """A Ray Dataset of tokenised rows (id, input_ids unpadded, label; token_type_ids for sentence
    pairs) from an id/text[/text_pair]/label table.

    Tokenised on the driver: a fast tokenizer does ~50k rows/s, far quicker than starting a Ray
    actor to do it, and token ids are a fraction of the text's size.
    """
    import pyarrow as pa
    import ray

    from distillray.models import load_tokenizer
    from distillray.tasks.classification import tokenize

    texts = table.column("text").to_pylist()
    items = list(zip(texts, table.column("text_pair").to_pylist())) if "text_pair" in table.column_names else texts
    seqs, types = tokenize(load_tokenizer(tokenizer_dir), items, max_length)
    cols = {"id": table.column("id"), "input_ids": pa.array(seqs, pa.list_(pa.int32()))}
    if types is not None:
        cols["token_type_ids"] = pa.array(types, pa.list_(pa.int8()))
    tokens = pa.table({**cols, "label": table.column("label")})
    ds = ray.data.from_arrow(tokens)
    ds.set_name(name)
    ds.context.enable_progress_bars = False  # read inside training: the loop logs its own progress
    return ds


def qa_windows_dataset(split: Any, tokenizer_dir: str, max_length: int, doc_stride: int, name: str,
                       scoring: bool = False):
    """A Ray Dataset of a QA split's windows (`tasks.qa.windows_table`), tokenised on the driver
    like `tokenized_dataset`; with `scoring` (dev), the offsets, contexts and gold answers that
    in-loop SQuAD EM/F1 needs."""
    import ray

    from distillray.models import load_tokenizer
    from distillray.tasks.qa import window_examples, windows_table

    windows = window_examples(load_tokenizer(tokenizer_dir), split.examples, labels=True,
                              max_length=max_length, doc_stride=doc_stride)
    ds = ray.data.from_arrow(windows_table(windows, split.examples if scoring else None))
    ds.set_name(name)
    ds.context.enable_progress_bars = False
    return ds


# Cache shards in the object store (train.cache_shards=None) when they take at most this share of it.
CACHE_SHARE_OF_STORE = 0.25


def should_cache(paths: list[str], setting: bool | None) -> bool:
    """train.cache_shards: on, off, or (None) when the shard files fit a quarter of the object store."""
    if setting is not None:
        return setting
    import ray

    from distillray import storage

    store = ray.cluster_resources().get("object_store_memory", 0)
    return storage.size_of(paths) <= CACHE_SHARE_OF_STORE * store


def shard_dataset(paths: list[str], seed: int, name: str, cache: bool = False):
    """A Ray Dataset over teacher-logit shards, in a new order each epoch from `seed`: files (or,
    with `cache`, the blocks read once into the object store) shuffled per execution."""
    import ray
    from ray.data import FileShuffleConfig, RandomSeedConfig

    from distillray import storage

    fs = None
    if paths and storage.is_remote(paths[0]):
        # One filesystem (endpoint, credentials) for all: resolved once for the shard dir, since
        # resolving an s3:// URI asks the bucket for its region.
        parent = storage.split(paths[0])[0]
        if any(storage.split(p)[0] != parent for p in paths):
            raise ValueError(f"shards must share one dir; got {paths[0]} and others elsewhere")
        fs, base = storage.resolve(parent)
        paths = [f"{base}/{storage.split(p)[1]}" for p in paths]
    if cache:
        ds = ray.data.read_parquet(paths, filesystem=fs).materialize()
        ds = ds.randomize_block_order(seed=RandomSeedConfig(seed=seed, reseed_after_execution=True))
    else:
        ds = ray.data.read_parquet(paths, filesystem=fs, shuffle=FileShuffleConfig(seed=seed))
    ds.set_name(name)
    ds.context.enable_progress_bars = False
    return ds
