"""Teacher-labelled extra text: augmented copies of the training texts, and unlabelled files.

Both go through the precompute job's Ray Data pipeline and land in the same shards as the
training rows, with label = UNLABELLED: the teacher's logits are their only target.

    source rows (train + unlabelled, each with the copy indexes still missing)
      -> map_batches(Augmenter)       the row itself and its pending copies
      -> map_batches(TeacherLogits)   as for plain training rows
      -> shards

The methods are those of Tang et al. 2019 ("Distilling Task-Specific Knowledge from BERT into
Simple Neural Networks", sec. 3.2: masking, n-gram sampling, one uniform draw per word) plus
TinyBERT's word replacement (Jiao et al. 2020, TinyBERT/data_augmentation.py: a whole word is
replaced with p = 0.4 by one of its K = 15 nearest GloVe neighbours); here the neighbours come
from the teacher's own word-embedding matrix, so nothing outside the teacher dir is needed.
Word dropout and adjacent swaps are the EDA-style noise (Wei & Zou 2019). A copy depends only
on (augment.seed, source row id, copy index): reruns, resumes and other block sizes give the
same text.

Row ids keep the sources apart: the top byte of an id is its source (0 train, 1 augment,
2 unlabelled), so the manifest counts rows per source from the ids alone.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillray.config import AugmentConfig, Config, DataConfig, DistillConfig
from distillray.data.text import TextDataset, read_rows
from distillray.errors import DataError
from distillray.losses import UNLABELLED

logger = logging.getLogger(__name__)

SOURCES = ("train", "augment", "unlabelled")
_SHIFT = 56  # the source code lives in the id's top byte
_MAX_COPIES = 256  # augment.copies <= 255: copy k of row r is r * 256 + k
_FILE_SHIFT = 40  # unlabelled: file index above 2^40 rows per file
ORIGINAL = -1  # in a source row's `pending` list: emit the row itself (not a copy)
VERSION = 1  # bump when a method's output changes: it is part of the shard key


def augment_id(row_id: np.ndarray | int, copy: np.ndarray | int) -> np.ndarray | int:
    """Row id of copy `copy` (0-based) of training row `row_id`."""
    return (1 << _SHIFT) + row_id * _MAX_COPIES + copy


def unlabelled_id(file_index: int, row_id: np.ndarray | int) -> np.ndarray | int:
    """Row id of row `row_id` of the `file_index`-th augment.unlabelled file."""
    return (2 << _SHIFT) + (file_index << _FILE_SHIFT) + row_id


def source_counts(ids: np.ndarray) -> dict[str, int]:
    """Rows per source ("train", "augment", "unlabelled"), from row ids."""
    codes = np.asarray(ids, dtype=np.int64) >> _SHIFT
    return {name: int((codes == i).sum()) for i, name in enumerate(SOURCES)}


def enabled(a: AugmentConfig) -> bool:
    return a.copies > 0 or bool(a.unlabelled) or bool(a.corpus)


def trains_on_unlabelled(d: DistillConfig) -> bool:
    """Whether a loss with these weights learns anything from rows with no gold label (any
    teacher term on). A hard-label-only run must skip them."""
    return d.alpha_kd > 0 or d.alpha_mse > 0 or d.alpha_cos > 0 or d.alpha_hidden > 0 or d.alpha_attn > 0


# ---------------------------------------------------------------------------------------------
# Unlabelled files


@dataclass
class UnlabelledText:
    source: str
    ids: np.ndarray  # (rows,) int64: row ids in the file (record positions)
    texts: list[str]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for i, t in zip(self.ids.tolist(), self.texts):
            h.update(f"{i}\x1f".encode())
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\x1e")
        return h.hexdigest()


def _reader_config(data: DataConfig, column: str | int) -> DataConfig:
    # A text-only file: the "label" column is the text column (read, then ignored).
    return data.model_copy(update={"format": "auto", "header": isinstance(column, str),
                                   "text_column": column, "label_column": column})


def load_unlabelled(cfg: Config, labelled: TextDataset | None = None) -> list[UnlabelledText]:
    """Read every augment.unlabelled file (rows with empty text skipped), then the augment.corpus
    dir's texts less those that are one of `labelled`'s single texts (the corpus holds the task's
    own train split: a labelled row is not also an unlabelled one); DataError names the file, line
    and the augment key to fix."""
    a = cfg.augment
    rcfg = _reader_config(cfg.data, a.unlabelled_column)
    out = []
    for path in a.unlabelled:
        try:
            rows = [r for r in read_rows(path, rcfg) if r.text.strip()]
        except DataError as e:
            msg = str(e).replace("data.text_column", "augment.unlabelled_column").replace(
                "data.label_column", "augment.unlabelled_column").replace("data.header", "augment.unlabelled_column")
            raise DataError(f"augment.unlabelled: {msg}") from None
        if not rows:
            raise DataError(f"augment.unlabelled: {path}: no text rows; fix: point at a file with "
                            "text, or drop it from augment.unlabelled")
        if rows[-1].id >= 1 << _FILE_SHIFT:
            raise DataError(f"augment.unlabelled: {path}: more than 2^40 rows; fix: split the file")
        out.append(UnlabelledText(path, np.array([r.id for r in rows], np.int64), [r.text for r in rows]))
    if a.corpus:
        from distillray.data.corpus import build_corpus

        try:
            corpus = build_corpus(a.corpus)
        except DataError as e:
            raise DataError(f"augment.corpus: {e}") from None
        for path in corpus.missing:
            logger.warning("augment.corpus: %s not found: left out of the corpus", path)
        ids, texts = np.arange(len(corpus.texts), dtype=np.int64), corpus.texts  # ids: corpus positions
        if labelled is not None and labelled.text_pairs is None:
            seen = {" ".join(t.split()) for t in labelled.texts}
            keep = np.array([t not in seen for t in texts], bool)
            if not keep.all():
                logger.info("augment.corpus: %d of %d texts are labelled train rows: left out of the unlabelled rows",
                            int((~keep).sum()), len(texts))
                ids, texts = ids[keep], [t for t, k in zip(texts, keep) if k]
        out.append(UnlabelledText(f"corpus:{a.corpus}", ids, texts))
    if len(out) >= 1 << (_SHIFT - _FILE_SHIFT):
        raise DataError(f"augment.unlabelled lists {len(out)} files; fix: concatenate them into fewer")
    return out


# ---------------------------------------------------------------------------------------------
# What precompute needs: the shard key's inputs, the ids a complete shard dir holds, the blocks


def shard_meta(a: AugmentConfig, extra: list[UnlabelledText]) -> dict[str, Any]:
    """The augment inputs of the shard key: a changed config or file gives a new shard dir."""
    return {
        "version": VERSION, "copies": a.copies, "seed": a.seed, "top_k": a.top_k,
        "methods": {m: getattr(a, f"p_{m}") for m in a.methods} if a.copies else {},
        "unlabelled": [{"source": u.source, "fingerprint": u.fingerprint(), "rows": len(u.ids)} for u in extra],
    }


def expected_ids(train_ids: np.ndarray, extra: list[UnlabelledText], copies: int) -> np.ndarray:
    """Every row id a complete shard dir holds: train rows, their copies, unlabelled rows."""
    parts = [np.asarray(train_ids, np.int64)]
    if copies:
        parts.append(augment_id(parts[0][:, None], np.arange(copies, dtype=np.int64)[None, :]).ravel())
    parts += [unlabelled_id(k, u.ids) for k, u in enumerate(extra)]
    return np.concatenate(parts)


def source_table(train: pa.Table, extra: list[UnlabelledText], copies: int, done_ids: np.ndarray) -> pa.Table:
    """One row per source text with the outputs still missing: `train` (id, text, label, ...) and
    the unlabelled rows, each with `pending`: copy indexes (ORIGINAL for the row itself)."""
    done = np.sort(np.asarray(done_ids, np.int64))

    def missing(ids: np.ndarray) -> np.ndarray:
        return ~np.isin(ids, done, assume_unique=False) if len(done) else np.ones(len(ids), bool)

    tids = train.column("id").to_numpy().astype(np.int64)
    todo = np.empty((len(tids), copies + 1), bool)
    todo[:, 0] = missing(tids)
    if copies:
        todo[:, 1:] = missing(augment_id(tids[:, None], np.arange(copies)[None, :]).ravel()).reshape(len(tids), copies)
    slots = np.arange(-1, copies, dtype=np.int16)
    pending = pa.array([slots[row].tolist() for row in todo], pa.list_(pa.int16()))
    tables = [train.append_column("pending", pending)]
    for k, u in enumerate(extra):
        uids = unlabelled_id(k, u.ids)
        keep = missing(uids)
        tables.append(pa.table({
            "id": pa.array(uids[keep], pa.int64()),
            "text": pa.array([t for t, m in zip(u.texts, keep) if m], pa.string()),
            "label": pa.array(np.full(int(keep.sum()), UNLABELLED), pa.int64()),
            "pending": pa.array([[ORIGINAL]] * int(keep.sum()), pa.list_(pa.int16())),
        }))
    table = pa.concat_tables(tables, promote_options="default")
    return table.filter(pc.greater(pc.list_value_length(table.column("pending")), 0))


def output_rows(block: pa.Table) -> int:
    """Rows a precompute block becomes: its pending outputs, or its rows when it has no `pending`."""
    if "pending" not in block.column_names:
        return block.num_rows
    return int(pc.sum(pc.list_value_length(block.column("pending"))).as_py() or 0)


def pending_blocks(table: pa.Table, shard_rows: int, min_blocks: int) -> list[pa.Table]:
    """Cut a `source_table` into blocks of at most `shard_rows` output rows each (a block becomes
    one shard; a row whose own outputs are more is a block alone), in source order, and into at
    least `min_blocks` so every actor has work."""
    sizes = pc.list_value_length(table.column("pending")).to_numpy().astype(np.int64)
    total = int(sizes.sum())
    if total == 0:
        return []
    cap = max(1, min(shard_rows, -(-total // max(1, min_blocks))))
    blocks, start, acc = [], 0, 0
    for i, n in enumerate(sizes):
        if acc and acc + n > cap:
            blocks.append(table.slice(start, i - start))
            start, acc = i, 0
        acc += n
    blocks.append(table.slice(start, len(sizes) - start))
    return blocks


# ---------------------------------------------------------------------------------------------
# The augmenter


class NeighbourTable:
    """Whole-word tokens' top-k neighbours by cosine similarity of the rows of a word-embedding
    matrix. Whole words: alphabetic vocabulary entries, so no '##' pieces, [special] tokens,
    digits or punctuation. The normalised matrix is built once (per actor); a word's neighbours
    are computed the first time it is seen and kept, so a run pays for the words its texts use.
    Similarities are float64 and ties go to the lower token id, so a word's neighbours do not
    depend on which other words were looked up with it."""

    def __init__(self, embeddings: np.ndarray, vocab: dict[str, int], top_k: int) -> None:
        words = sorted((w for w in vocab if w.isalpha()), key=vocab.__getitem__)
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}
        self.top_k = min(top_k, max(0, len(words) - 1))
        emb = np.asarray(embeddings, dtype=np.float64)[[vocab[w] for w in words]].reshape(len(words), -1)
        self.emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        self._known: dict[int, list[str]] = {}

    @classmethod
    def from_model(cls, model_dir: str, top_k: int) -> NeighbourTable:
        """From a model dir's input word embeddings and its tokenizer's vocabulary."""
        from distillray.models import load_classifier, load_tokenizer

        emb = load_classifier(model_dir).get_input_embeddings().weight.detach().numpy()
        return cls(emb, load_tokenizer(model_dir).get_vocab(), top_k)

    def _lookup(self, word: str) -> int | None:
        i = self.index.get(word)
        return self.index.get(word.lower()) if i is None else i

    def prepare(self, words: Any, chunk: int = 512) -> None:
        """Compute the neighbours of every known word among `words` not looked up yet, in batches."""
        todo = sorted({i for w in words if (i := self._lookup(w)) is not None and i not in self._known})
        k = self.top_k
        for s in range(0, len(todo), chunk):
            rows = np.array(todo[s:s + chunk])
            sims = np.round(self.emb[rows] @ self.emb.T, 9)  # (chunk, words)
            sims[np.arange(len(rows)), rows] = -np.inf  # a word is not its own neighbour
            kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1] if k else np.full(len(rows), np.inf)
            best = []
            for r in range(len(rows)):  # every word tied with the k-th, then similarity down, id up
                cand = np.flatnonzero(sims[r] >= kth[r])
                best.append(cand[np.lexsort((cand, -sims[r, cand]))][:k])
            for i, b in zip(rows.tolist(), best):
                self._known[i] = [self.words[j] for j in b.tolist()]

    def candidates(self, word: str) -> list[str]:
        """The neighbours of `word` (or of its lower-cased form), best first; [] if not a known word."""
        i = self._lookup(word)
        if i is None:
            return []
        if i not in self._known:
            self.prepare([word])
        return self._known[i]


class Augmenter:
    """Ray Data `map_batches` class: for each source row, the row itself and its pending copies.

    Input (pyarrow): id, text, label, pending (list of copy indexes, ORIGINAL = the row) and any
    other columns, which copies keep as they are. Output: the same columns minus `pending`; a
    copy has id `augment_id(id, k)`, label UNLABELLED and an augmented text. The neighbour table
    is built once per actor, in the constructor.
    """

    def __init__(self, model_dir: str, augment: dict[str, Any], mask_token: str | None = None,
                 table: NeighbourTable | None = None) -> None:
        self.cfg = AugmentConfig.model_validate(augment)
        if mask_token is None:
            from distillray.models import load_tokenizer

            mask_token = load_tokenizer(model_dir).mask_token or "[MASK]"
        self.mask_token = mask_token
        self.table = table
        if self.table is None and "neighbour" in self.cfg.methods and self.cfg.copies:
            self.table = NeighbourTable.from_model(model_dir, self.cfg.top_k)
        on = self.cfg.methods
        # one uniform draw per word falls in at most one of these bands (Tang et al.)
        self.bands = [(m, getattr(self.cfg, f"p_{m}")) for m in ("mask", "neighbour", "dropout") if m in on]

    def augment_text(self, text: str, row_id: int, copy: int) -> str:
        """Copy `copy` of the text of row `row_id`: a function of (seed, row id, copy) only."""
        c = self.cfg
        rng = np.random.default_rng([c.seed, int(row_id), int(copy)])
        words = text.split()
        if not words:
            return text
        draws = rng.random((len(words), 2))  # per word: which band, which neighbour
        out = []
        for w, (x, y) in zip(words, draws):
            kind, edge = None, 0.0
            for m, p in self.bands:
                edge += p
                if x < edge:
                    kind = m
                    break
            if kind == "mask":
                out.append(self.mask_token)
            elif kind == "neighbour":
                cands = self.table.candidates(w) if self.table else []
                out.append(_match_case(cands[int(y * len(cands))], w) if cands else w)
            elif kind != "dropout":
                out.append(w)
        if not out:  # every word dropped: keep one
            out = [words[int(draws[0, 1] * len(words))]]
        if "swap" in c.methods:
            i = 0
            swaps = rng.random(max(0, len(out) - 1))
            while i < len(out) - 1:
                if swaps[i] < c.p_swap:
                    out[i], out[i + 1] = out[i + 1], out[i]
                    i += 2  # a swapped word is not dragged further
                else:
                    i += 1
        if "ngram" in c.methods:
            x, n_draw, start_draw = rng.random(3)
            if x < c.p_ngram and len(out) > 1:
                n = 1 + int(n_draw * min(5, len(out)))
                start = int(start_draw * (len(out) - n + 1))
                out = out[start:start + n]
        return " ".join(out)

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = batch.column("id").to_numpy()
        texts = batch.column("text").to_pylist()
        pending = batch.column("pending").to_pylist()
        if self.table is not None:
            self.table.prepare(w for t, p in zip(texts, pending) if any(k != ORIGINAL for k in p) for w in t.split())
        take, out_ids, out_texts, out_labels = [], [], [], []
        labels = batch.column("label").to_numpy()
        for i, (rid, text, slots) in enumerate(zip(ids, texts, pending)):
            for k in slots:
                take.append(i)
                if k == ORIGINAL:
                    out_ids.append(int(rid))
                    out_texts.append(text)
                    out_labels.append(int(labels[i]))
                else:
                    out_ids.append(int(augment_id(int(rid), k)))
                    out_texts.append(self.augment_text(text, int(rid), k))
                    out_labels.append(UNLABELLED)
        rest = batch.drop_columns(["id", "text", "label", "pending"]).take(pa.array(take, pa.int64()))
        cols = {"id": pa.array(out_ids, pa.int64()), "text": pa.array(out_texts, pa.string()),
                "label": pa.array(out_labels, pa.int64())}
        return pa.table({**cols, **{n: rest.column(n) for n in rest.column_names}})


def _match_case(word: str, like: str) -> str:
    return word.capitalize() if like[:1].isupper() else word


# ---------------------------------------------------------------------------------------------
# Ray Data and training glue


def add_stage(ds: Any, cfg: Config, teacher_dir: str) -> Any:
    """Append the Augmenter to a precompute Dataset (no-op when augment is off). One small actor:
    string edits are cheap next to the teacher's forward pass, so it takes no CPU reservation
    away from the teacher actors."""
    import ray

    if not enabled(cfg.augment):
        return ds
    return ds.map_batches(
        Augmenter, fn_constructor_kwargs=dict(model_dir=str(teacher_dir), augment=cfg.augment.model_dump()),
        batch_size=None, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0)


def labelled_only(ds: Any, manifest: dict[str, Any], distill: DistillConfig) -> tuple[Any, int]:
    """(dataset, rows) a distillation trains on: without any teacher term, the rows that have a
    gold label only (augmented and unlabelled rows would teach it nothing)."""
    rows = int(manifest["rows"])
    sources = manifest.get("sources") or {}
    extra = rows - int(sources.get("train", rows))
    if extra == 0 or trains_on_unlabelled(distill):
        return ds, rows
    logger.info("distill: no teacher term (distill.alpha_kd=alpha_mse=alpha_cos=0): training on the %d "
                "labelled rows, skipping %d augmented/unlabelled ones", rows - extra, extra)
    return ds.filter(expr=f"label != {UNLABELLED}"), rows - extra
