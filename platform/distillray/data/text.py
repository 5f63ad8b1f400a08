"""Labelled text for classification: read a local file or a Hugging Face dataset, check it, map
labels to ids.

Supported sources: `.tsv`, `.csv` (with or without a header line; columns by name or 0-based
index), `.jsonl` (one object per line; columns by name), `.parquet`, and
`hf:<name>[:<config>]:<split>` for the `datasets` library. Every problem is a `DataError` that
names the file and line (or row) and says how to fix it.

Row ids are the 0-based position of the record in the source (header and blank lines not
counted), so they stay stable when rows are skipped or the file is read again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from distillray.config import SMOKE, DataConfig
from distillray.errors import DataError

logger = logging.getLogger(__name__)

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a 1 MB review is text, not an error
_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl",
            ".parquet": "parquet", ".pq": "parquet", ".txt": "tsv"}


@dataclass
class RawRow:
    id: int
    where: str  # "line 12" or "row 12", for error messages
    text: str
    label: str
    text_pair: str | None = None  # data.task=pair: the second text


@dataclass
class TextDataset:
    """One split, labels already mapped to ids with the task's label set."""

    source: str
    ids: np.ndarray  # (rows,) int64
    texts: list[str]
    labels: np.ndarray  # (rows,) int64, index into label_names
    label_names: list[str]
    skipped_empty: int = 0
    raw_labels: list[str] = field(default_factory=list)  # label set in id order, as in the file
    text_pairs: list[str] | None = None  # data.task=pair: each row's second text

    def __len__(self) -> int:
        return len(self.texts)

    def inputs(self) -> list:
        """What a model reads per row: the text, or (text, text_pair) for pairs."""
        return list(self.texts) if self.text_pairs is None else list(zip(self.texts, self.text_pairs))

    def to_arrow(self) -> pa.Table:
        cols = {"id": pa.array(self.ids, pa.int64()), "text": pa.array(self.texts, pa.string())}
        if self.text_pairs is not None:
            cols["text_pair"] = pa.array(self.text_pairs, pa.string())
        cols["label"] = pa.array(self.labels, pa.int64())
        return pa.table(cols)

    def fingerprint(self) -> str:
        """sha256 over ids, texts, labels and label names: what the shards were computed from."""
        h = hashlib.sha256()
        h.update(json.dumps(self.label_names).encode())
        pairs = self.text_pairs if self.text_pairs is not None else [None] * len(self.texts)
        for i, t, y, b in zip(self.ids.tolist(), self.texts, self.labels.tolist(), pairs):
            h.update(f"{i}\x1f{y}\x1f".encode())
            h.update(t.encode("utf-8", "surrogatepass"))
            if b is not None:  # single-text fingerprints stay as they were
                h.update(b"\x1d" + b.encode("utf-8", "surrogatepass"))
            h.update(b"\x1e")
        return h.hexdigest()


@dataclass
class LabelSet:
    raw: list[str]  # raw values as written in the data, in id order
    names: list[str]  # display names (id2label)

    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))


# ---------------------------------------------------------------------------------------------
# Readers: each yields RawRow, raising DataError with file and line.


def _detect_format(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise DataError(
            f"{path}: cannot tell the format from the suffix {suffix!r}; fix: rename it to "
            ".tsv/.csv/.jsonl/.parquet or set data.format=tsv (or csv, jsonl, parquet)"
        )
    return _FORMATS[suffix]


def _decode(path: str, data: bytes, errors: str) -> str:
    try:
        return data.decode("utf-8-sig", errors="strict" if errors == "error" else "replace")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: bytes that are not UTF-8 ({data[e.start:e.start + 4]!r}); "
            "fix: re-encode the file as UTF-8, or set data.encoding_errors=replace"
        ) from None


def _column_index(path: str, names: list[str] | None, col: str | int, key: str) -> int:
    if isinstance(col, int):
        if names is not None and col >= len(names):
            raise DataError(
                f"{path}: {key}={col} but the file has {len(names)} columns ({names}); "
                f"fix: set {key} to an index below {len(names)}"
            )
        return col
    if names is None:
        raise DataError(
            f"{path}: {key}={col!r} names a column but data.header=false; fix: give the column "
            f"by 0-based index, e.g. {key}=1, or set data.header=true"
        )
    if col not in names:
        hint = f"{key}={names.index(col.strip())}" if col.strip() in names else (
            f"one of {names}, e.g. {key}={names[-1]}, or an index such as {key}={len(names) - 1}")
        raise DataError(
            f"{path}: line 1: no column {col!r} in the header {names}; fix: set {hint}"
        )
    return names.index(col)


def _read_delimited(path: str, cfg: DataConfig, fmt: str) -> Iterator[RawRow]:
    text = _decode(path, Path(path).read_bytes(), cfg.encoding_errors)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",",
                        quoting=csv.QUOTE_NONE if cfg.quoting == "none" else csv.QUOTE_MINIMAL)
    names = None
    rid = 0
    ti = li = pi = None
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue  # blank line
            if cfg.header and names is None:
                names = [c.strip() for c in row]
                continue
            if ti is None:
                ti = _column_index(path, names, cfg.text_column, "data.text_column")
                li = _column_index(path, names, cfg.label_column, "data.label_column")
                pi = _pair_index(path, names, cfg)
            need = max(ti, li, -1 if pi is None else pi) + 1
            if len(row) < need:
                raise DataError(
                    f"{path}: line {line}: {len(row)} field(s), but data.text_column={cfg.text_column!r} "
                    f"and data.label_column={cfg.label_column!r}"
                    f"{'' if pi is None else f' and data.text_pair_column={cfg.text_pair_column!r}'} need "
                    f"{need}; fix the line (a {'tab' if fmt == 'tsv' else 'comma'} inside the text must be quoted"
                    f"{'' if cfg.quoting == 'none' else ', or set data.quoting=none if quotes are literal text'})"
                )
            yield RawRow(rid, f"line {line}", row[ti], row[li].strip(), None if pi is None else row[pi])
            rid += 1
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: {e}; fix the quoting on that line") from None


def _pair_index(path: str, names: list[str] | None, cfg: DataConfig) -> int | None:
    if cfg.task != "pair":
        return None
    return _column_index(path, names, cfg.text_pair_column, "data.text_pair_column")


def _read_jsonl(path: str, cfg: DataConfig) -> Iterator[RawRow]:
    text = _decode(path, Path(path).read_bytes(), cfg.encoding_errors)
    cols = [("data.text_column", cfg.text_column), ("data.label_column", cfg.label_column)]
    if cfg.task == "pair":
        cols.append(("data.text_pair_column", cfg.text_pair_column))
    for key, col in cols:
        if isinstance(col, int):
            raise DataError(f"{path}: {key}={col} is an index, but JSON lines have named fields; "
                            f"fix: set {key} to the field name")
    rid = 0
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise DataError(f"{path}: line {n}: not valid JSON ({e}); fix that line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {n}: expected a JSON object, got {type(obj).__name__}")
        for key, col in cols:
            if col not in obj:
                raise DataError(f"{path}: line {n}: no field {col!r} (fields: {sorted(obj)}); "
                                f"fix: set {key} to one of them")
        t, y = obj[cfg.text_column], obj[cfg.label_column]
        b = obj[cfg.text_pair_column] if cfg.task == "pair" else None
        for col, v in ((cfg.text_column, t), (cfg.text_pair_column, b)):
            if v is not None and not isinstance(v, str):
                raise DataError(f"{path}: line {n}: {col!r} is {type(v).__name__}, not text")
        yield RawRow(rid, f"line {n}", t, _label_str(y), None if cfg.task != "pair" else (b or ""))
        rid += 1


def _label_str(y: object) -> str:
    if isinstance(y, bool):
        return str(int(y))
    if isinstance(y, float) and y.is_integer():
        return str(int(y))
    return "" if y is None else str(y).strip()


def _read_table(path: str, table: pa.Table, cfg: DataConfig) -> Iterator[RawRow]:
    names = table.column_names
    ti = _column_index(path, names, cfg.text_column, "data.text_column")
    li = _column_index(path, names, cfg.label_column, "data.label_column")
    pi = _pair_index(path, names, cfg)
    texts = table.column(ti).to_pylist()
    labels = table.column(li).to_pylist()
    pairs = table.column(pi).to_pylist() if pi is not None else [None] * len(texts)
    for rid, (t, y, b) in enumerate(zip(texts, labels, pairs)):
        for key, col, v in (("data.text_column", ti, t), ("data.text_pair_column", pi, b)):
            if v is not None and not isinstance(v, str):
                raise DataError(f"{path}: row {rid}: column {names[col]!r} holds {type(v).__name__}, "
                                f"not text; fix: set {key} to a text column")
        yield RawRow(rid, f"row {rid}", t or "", _label_str(y), None if pi is None else (b or ""))


def _read_parquet(path: str, cfg: DataConfig) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e}); fix or re-export it") from None
    yield from _read_table(path, table, cfg)


def _read_hf(source: str, cfg: DataConfig) -> Iterator[RawRow]:
    parts = source[len("hf:"):].split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise DataError(f"{source}: write Hugging Face datasets as hf:<name>[:<config>]:<split>, "
                        "e.g. hf:glue:sst2:validation or hf:stanfordnlp/sst2:train")
    name, subset, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    try:
        import datasets

        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as e:  # noqa: BLE001 - offline, missing, gated: all mean "use a local file"
        raise DataError(
            f"{source}: could not load from the Hugging Face hub ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}); this machine may be offline: "
            "fix: download the split to a local .parquet/.tsv file and set data.train/data.dev to it"
        ) from None
    yield from _read_table(source, ds.data.table if hasattr(ds.data, "table") else ds.data, cfg)


def read_rows(source: str, cfg: DataConfig) -> Iterator[RawRow]:
    """Yield raw rows from any supported source (no label mapping yet)."""
    if source.startswith("hf:"):
        yield from _read_hf(source, cfg)
        return
    path = source[len("file://"):] if source.startswith("file://") else source
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no such file; fix: check the path, or set data.train/data.dev "
                        "to an existing .tsv/.csv/.jsonl/.parquet file")
    if p.is_dir():
        raise DataError(f"{path}: is a directory; fix: point at a data file")
    if p.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; fix: point at a file with labelled rows")
    fmt = _detect_format(path, cfg.format)
    if fmt in ("tsv", "csv"):
        yield from _read_delimited(path, cfg, fmt)
    elif fmt == "jsonl":
        yield from _read_jsonl(path, cfg)
    else:
        yield from _read_parquet(path, cfg)


# ---------------------------------------------------------------------------------------------
# Labels


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


def infer_labels(source: str, rows: list[RawRow], cfg: DataConfig) -> LabelSet:
    """The task's label set: declared in data.labels, else the sorted unique values of train."""
    if cfg.labels is not None:
        raw = [_label_str(v) for v in cfg.labels]
    else:
        values = {r.label for r in rows}
        ints = [v for v in values if _is_int(v)]
        if ints and len(ints) != len(values):
            bad = next(r for r in rows if not _is_int(r.label))
            raise DataError(
                f"{source}: {bad.where}: label {bad.label!r} is not an integer like the others "
                f"(e.g. {ints[0]!r}); fix the row, or declare the label set with data.labels=[...]"
            )
        raw = sorted(values, key=int) if ints else sorted(values)
    if len(raw) < 2:
        raise DataError(
            f"{source}: every row has the label {raw[0] if raw else None!r}: a classifier needs "
            "at least 2 classes; fix: check data.label_column, or use a file with more classes"
        )
    names = list(cfg.label_names) if cfg.label_names else raw
    return LabelSet(raw=raw, names=names)


def _map_labels(source: str, rows: list[RawRow], labels: LabelSet) -> np.ndarray:
    index = {v: i for i, v in enumerate(labels.raw)}
    out = np.empty(len(rows), dtype=np.int64)
    for k, r in enumerate(rows):
        if r.label == "":
            raise DataError(f"{source}: {r.where}: the label is empty; fix: give every row a label")
        i = index.get(r.label)
        if i is None:
            raise DataError(
                f"{source}: {r.where}: label {r.label!r} is not in the label set {labels.raw}; "
                "fix the row, or add it to data.labels"
            )
        out[k] = i
    return out


# ---------------------------------------------------------------------------------------------
# Splits


def _collect(source: str, cfg: DataConfig, max_rows: int | None) -> tuple[list[RawRow], int]:
    rows: list[RawRow] = []
    skipped = 0
    for r in read_rows(source, cfg):
        if not r.text.strip() or (r.text_pair is not None and not r.text_pair.strip()):
            if cfg.empty_text == "error":
                what = "text" if r.text_pair is None else "text or its text_pair"
                raise DataError(f"{source}: {r.where}: the {what} is empty; fix: remove the row, "
                                "or set data.empty_text=skip to skip such rows")
            skipped += 1
            continue
        rows.append(r)
        if max_rows and cfg.sample == "head" and len(rows) >= max_rows:
            break
    if max_rows and cfg.sample == "random" and len(rows) > max_rows:
        rows = sorted(random.Random(cfg.sample_seed).sample(rows, max_rows), key=lambda r: r.id)
    if not rows:
        raise DataError(f"{source}: no labelled rows{' (all empty text)' if skipped else ''}; "
                        "fix: point at a file with data rows below the header")
    if skipped:
        logger.warning("%s: skipped %d row(s) with empty text (data.empty_text=skip)", source, skipped)
    return rows, skipped


def _build(source: str, rows: list[RawRow], skipped: int, labels: LabelSet) -> TextDataset:
    return TextDataset(
        source=source,
        ids=np.array([r.id for r in rows], dtype=np.int64),
        texts=[r.text for r in rows],
        labels=_map_labels(source, rows, labels),
        label_names=labels.names,
        skipped_empty=skipped,
        raw_labels=labels.raw,
        text_pairs=[r.text_pair for r in rows] if rows and rows[0].text_pair is not None else None,
    )


def resolve_source(source: str, work_dir: Path, split: str) -> str:
    """`smoke` becomes the built-in smoke sample, written under work_dir on first use."""
    if source != SMOKE:
        return source
    from distillray.data.smoke import write_smoke_sample

    return str(write_smoke_sample(work_dir)[split])


def load_split(source: str, cfg: DataConfig, labels: LabelSet | None = None,
               max_rows: int | None = None) -> tuple[TextDataset, LabelSet]:
    """Read one split. Without `labels`, the label set is inferred from this split (train)."""
    rows, skipped = _collect(source, cfg, max_rows)
    if labels is None:
        labels = infer_labels(source, rows, cfg)
    return _build(source, rows, skipped, labels), labels


def load_task(cfg: DataConfig, work_dir: Path, need_dev: bool = True,
              max_rows: int | None = None) -> tuple[TextDataset, TextDataset | None, LabelSet]:
    """Train and dev splits sharing one label set (inferred from train unless declared).

    The label set comes from the whole of train even when `max_rows` slices it, so a slice
    cannot silently drop a class.
    """
    if not cfg.train:
        raise DataError("data.train is not set; fix: set data.train=path/to/train.tsv "
                        "(or data.train=smoke for the built-in smoke sample)")
    if need_dev and not cfg.dev:
        raise DataError("data.dev is not set; fix: set data.dev=path/to/dev.tsv")
    train_src = resolve_source(cfg.train, work_dir, "train")
    labels = None
    if cfg.labels is None and (max_rows or cfg.max_rows):
        all_rows, _ = _collect(train_src, cfg, None)
        labels = infer_labels(train_src, all_rows, cfg)
    train, labels = load_split(train_src, cfg, labels, max_rows or cfg.max_rows)
    dev = None
    if cfg.dev:
        dev, _ = load_split(resolve_source(cfg.dev, work_dir, "dev"), cfg, labels, cfg.dev_max_rows)
    return train, dev, labels


def subset(ds: TextDataset, max_rows: int | None, how: str = "head", seed: int = 0) -> TextDataset:
    """The first (or a seeded random) `max_rows` rows of a split; the split itself when None."""
    if not max_rows or max_rows >= len(ds):
        return ds
    if how == "random":
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=max_rows, replace=False))
    else:
        idx = np.arange(max_rows)
    return TextDataset(source=ds.source, ids=ds.ids[idx], texts=[ds.texts[i] for i in idx],
                       labels=ds.labels[idx], label_names=ds.label_names,
                       skipped_empty=ds.skipped_empty, raw_labels=ds.raw_labels,
                       text_pairs=None if ds.text_pairs is None else [ds.text_pairs[i] for i in idx])
