"""Extractive question answering (SQuAD v1.1): read the data, cut long contexts into overlapping
windows with their answer labels, and build the QA teacher and student.

Windowing follows Hugging Face's `run_qa.py` / `run_squad_w_distillation.py` preprocessing: the
question and the context are tokenised as a pair with `truncation="only_second"`, `max_length`
tokens per window and `doc_stride` tokens of overlap between consecutive windows of one context
(`return_overflowing_tokens`); each window keeps the character offsets of its context tokens only,
and its gold start/end token indexes, which point at [CLS] (index 0) when the answer is not wholly
inside the window. Questions longer than `max_question_tokens` are cut, as run_squad's
`max_query_length`, so every window keeps room for context.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import AutoModelForQuestionAnswering, PreTrainedModel, PreTrainedTokenizerBase

from distillray.config import DEFAULT_TEACHER, DataConfig
from distillray.errors import ConfigError, DataError, ModelError
from distillray.models import build_student, model_config, resolve_model_dir
from distillray.models.hf import _check_weights

logger = logging.getLogger(__name__)

CLS_INDEX = 0  # where a window whose answer lies elsewhere points its start and end


@dataclass(frozen=True)
class QAExample:
    """One question on one context, with its gold answers (several on SQuAD dev)."""

    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]  # character offsets of each answer in `context`


def read_squad(path: str | Path, max_examples: int | None = None) -> list[QAExample]:
    """The questions of a SQuAD v1.1 JSON file (`data[].paragraphs[].{context, qas[]}`), in file
    order. Every question needs at least one answer (v2's unanswerable questions are refused)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; fix: point data.train/data.dev at a SQuAD v1.1 JSON "
                        "file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not SQuAD JSON ({e}); fix: use the SQuAD v1.1 JSON format") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{path}: no top-level 'data' list, so not SQuAD v1.1 JSON; fix: use the "
                        "format {'version': '1.1', 'data': [{'paragraphs': [...]}]}")
    examples: list[QAExample] = []
    for a, article in enumerate(data["data"]):
        for p, para in enumerate(article.get("paragraphs", [])):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = para.get("context")
            if not isinstance(context, str):
                raise DataError(f"{where}: no 'context' string; fix: every paragraph needs one")
            for q, qa in enumerate(para.get("qas", [])):
                try:
                    answers = qa["answers"]
                    texts = tuple(str(x["text"]) for x in answers)
                    starts = tuple(int(x["answer_start"]) for x in answers)
                    qid, question = str(qa["id"]), str(qa["question"])
                except (KeyError, TypeError, ValueError) as e:
                    raise DataError(f"{where}.qas[{q}]: missing or bad field {e}; fix: each question "
                                    "needs id, question and answers[].{text, answer_start}") from None
                if not texts:
                    raise DataError(f"{where}.qas[{q}] (id {qid}): no answers; unanswerable questions "
                                    "(SQuAD v2) are not supported; fix: drop them or use v1.1 data")
                examples.append(QAExample(qid, question, context, texts, starts))
                if max_examples is not None and len(examples) >= max_examples:
                    return examples
    return examples


@dataclass
class QAWindows:
    """Tokenised windows, right-padded to `max_length`; one row per window."""

    input_ids: np.ndarray  # (windows, max_length) int64
    attention_mask: np.ndarray  # (windows, max_length) int64
    token_type_ids: np.ndarray | None  # (windows, max_length) int64; None if the model has none
    offsets: np.ndarray  # (windows, max_length, 2) int64: [start, end) chars in the context; -1 elsewhere
    example_index: np.ndarray  # (windows,) int64: the example (question) each window came from
    start_positions: np.ndarray | None = None  # (windows,) int64 gold token index; 0 = [CLS]
    end_positions: np.ndarray | None = None  # (windows,) int64

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def context_mask(self) -> np.ndarray:
        """(windows, max_length) bool: the context tokens, where a predicted span may lie."""
        return self.offsets[..., 0] >= 0

    @property
    def answer_mask(self) -> np.ndarray:
        """(windows, max_length) bool: the context tokens and [CLS], the positions a gold label may
        take; the mask of `losses.qa_distill_loss`."""
        mask = self.context_mask.copy()
        mask[:, CLS_INDEX] = True
        return mask

    def batch(self, index: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """Tensors for the windows `index`, cut to the longest real window among them: model inputs,
        `answer_mask`, and the gold positions when known."""
        idx = np.asarray(index)
        width = max(1, int(self.attention_mask[idx].sum(axis=1).max()))
        answer_mask = self.offsets[idx, :width, 0] >= 0
        answer_mask[:, CLS_INDEX] = True
        out = {"input_ids": self.input_ids[idx, :width], "attention_mask": self.attention_mask[idx, :width],
               "answer_mask": answer_mask}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids[idx, :width]
        if self.start_positions is not None and self.end_positions is not None:
            out["start_positions"] = self.start_positions[idx]
            out["end_positions"] = self.end_positions[idx]
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}


def _cut_questions(tokenizer: PreTrainedTokenizerBase, questions: Sequence[str],
                   limit: int) -> tuple[list[str], int]:
    """Questions without leading whitespace (run_qa strips it: it only wastes context room), each
    cut after its `limit`-th token; and the longest one's token count after the cut."""
    questions = [q.lstrip() for q in questions]
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True,
                    return_attention_mask=False, return_token_type_ids=False)
    cut = [q if len(offs) <= limit else q[: offs[limit - 1][1]]
           for q, offs in zip(questions, enc["offset_mapping"])]
    return cut, min(limit, max((len(offs) for offs in enc["offset_mapping"]), default=0))


def check_window_sizes(tokenizer: PreTrainedTokenizerBase, max_length: int, doc_stride: int,
                       max_question_tokens: int) -> None:
    """Every window must keep more than `doc_stride` context tokens after a question of
    `max_question_tokens` tokens: the windows advance by the difference."""
    room = max_length - max_question_tokens - tokenizer.num_special_tokens_to_add(pair=True)
    if doc_stride < 1 or room <= doc_stride:
        raise ConfigError(
            f"config error: data.doc_stride={doc_stride} must be at least 1 and below the context "
            f"room of a window: data.max_length={max_length} minus a {max_question_tokens}-token "
            f"question and the special tokens = {room}; fix: lower data.doc_stride (e.g. to "
            f"{max(1, room // 3)}) or raise data.max_length")


def tokenize_windows(tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], contexts: Sequence[str],
                     answer_spans: Sequence[tuple[int, int]] | None = None, max_length: int = 384,
                     doc_stride: int = 128, max_question_tokens: int = 64) -> QAWindows:
    """Cut each (question, context) into windows of `max_length` tokens overlapping by
    `doc_stride`; with `answer_spans` ([start, end) characters of one gold answer per example),
    label each window's start/end token, or [CLS] where the answer is not wholly inside it."""
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{type(tokenizer).__name__} is not a fast tokenizer, and QA windows need its "
                         "offset mappings; fix: save the model dir with a tokenizer.json")
    if tokenizer.padding_side != "right":
        raise ModelError(f"QA windows put the question first and pad on the right, but this "
                         f"tokenizer pads on the {tokenizer.padding_side}; fix: set "
                         "padding_side='right' in its tokenizer_config.json")
    if len(questions) != len(contexts) or (answer_spans is not None and len(answer_spans) != len(questions)):
        raise ValueError("questions, contexts and answer_spans must have one entry per example")
    questions, longest = _cut_questions(tokenizer, questions, max_question_tokens)
    check_window_sizes(tokenizer, max_length, doc_stride, longest)
    enc = tokenizer(questions, list(contexts),
                    truncation="only_second", max_length=max_length, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    n = len(enc["input_ids"])
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(n, max_length, 2)
    for i in range(n):  # keep offsets only where the token is part of the context (sequence 1)
        seq = np.array([s == 1 for s in enc.sequence_ids(i)], dtype=bool)
        offsets[i, ~seq] = -1
    windows = QAWindows(
        input_ids=np.asarray(enc["input_ids"], dtype=np.int64),
        attention_mask=np.asarray(enc["attention_mask"], dtype=np.int64),
        token_type_ids=(np.asarray(enc["token_type_ids"], dtype=np.int64) if "token_type_ids" in enc else None),
        offsets=offsets,
        example_index=np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64),
    )
    if answer_spans is not None:
        windows.start_positions, windows.end_positions = _label(windows, answer_spans)
    return windows


def _label(windows: QAWindows, answer_spans: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Gold (start, end) token indexes per window: the context tokens holding the answer's first
    and last characters, or [CLS] where the window does not hold the whole answer."""
    n = len(windows)
    starts = np.full(n, CLS_INDEX, dtype=np.int64)
    ends = np.full(n, CLS_INDEX, dtype=np.int64)
    for i in range(n):
        start_char, end_char = answer_spans[windows.example_index[i]]
        offs = windows.offsets[i]
        ctx = np.nonzero(offs[:, 0] >= 0)[0]
        if len(ctx) == 0 or not (offs[ctx[0], 0] <= start_char and offs[ctx[-1], 1] >= end_char):
            continue
        starts[i] = ctx[offs[ctx, 0] <= start_char][-1]
        ends[i] = ctx[offs[ctx, 1] >= end_char][0]
    return starts, ends


def window_examples(tokenizer: PreTrainedTokenizerBase, examples: Sequence[QAExample], labels: bool = True,
                    max_length: int = 384, doc_stride: int = 128, max_question_tokens: int = 64) -> QAWindows:
    """`tokenize_windows` on examples; labels from each example's first gold answer, as run_qa
    trains on SQuAD."""
    spans = [(ex.answer_starts[0], ex.answer_starts[0] + len(ex.answers[0])) for ex in examples] if labels else None
    return tokenize_windows(tokenizer, [ex.question for ex in examples], [ex.context for ex in examples],
                            spans, max_length=max_length, doc_stride=doc_stride,
                            max_question_tokens=max_question_tokens)


def is_qa_model(name_or_dir: str | Path) -> bool:
    """True when the model dir already has a question-answering head."""
    archs = getattr(model_config(name_or_dir), "architectures", None) or []
    return any(a.endswith("ForQuestionAnswering") for a in archs)


def load_qa_model(name_or_dir: str | Path = DEFAULT_TEACHER, allow_pickle: bool = False,
                  dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A model with a span head (`AutoModelForQuestionAnswering`): the teacher. A base checkpoint
    (e.g. the packaged MiniLM, the default) gets a fresh head; a QA checkpoint keeps its own."""
    path = resolve_model_dir(str(name_or_dir))
    safe = _check_weights(path, allow_pickle)
    try:
        return AutoModelForQuestionAnswering.from_pretrained(path, use_safetensors=safe, dtype=dtype)
    except (ValueError, OSError, KeyError) as e:
        raise ModelError(f"{path}: cannot load as a question-answering model ({e})") from None


def build_qa_student(teacher: PreTrainedModel, layers: list[int] | None = None) -> PreTrainedModel:
    """A DistilBERT-style QA student: the teacher's embeddings, chosen layers (every other one by
    default) and span head, as `models.build_student` builds classifiers."""
    return build_student(teacher, layers, auto_class=AutoModelForQuestionAnswering)


# ---------------------------------------------------------------------------------------------
# The pipeline's view of QA data: a split of questions, and its windows as Arrow rows


@dataclass
class QADataset:
    """One SQuAD split as the pipeline carries it (the counterpart of `data.text.TextDataset`)."""

    examples: list[QAExample]
    source: str
    skipped_empty: int = 0

    def __len__(self) -> int:
        return len(self.examples)

    def fingerprint(self) -> str:
        """sha256 over every question, context and gold answer: the split's identity in shard keys."""
        import hashlib

        h = hashlib.sha256()
        for ex in self.examples:
            h.update(json.dumps([ex.id, ex.question, ex.context, ex.answers, ex.answer_starts]).encode() + b"\n")
        return h.hexdigest()

    def gold(self) -> list[tuple[str, tuple[str, ...]]]:
        """(question id, gold answers) per question, for `squad_metric.squad_scores`."""
        return [(ex.id, ex.answers) for ex in self.examples]


def load_qa_split(source: str, max_rows: int | None = None) -> QADataset:
    """The first `max_rows` questions of a SQuAD v1.1 JSON file."""
    return QADataset(read_squad(source, max_examples=max_rows), str(source))


def question_tokens(tokenizer: PreTrainedTokenizerBase, splits: Sequence[QADataset],
                    max_question_tokens: int = 64) -> int:
    """The longest question's token count over `splits`, after the `max_question_tokens` cut:
    what a window must leave room for beside its context (`check_window_sizes`)."""
    questions = [ex.question for ds in splits for ex in ds.examples]
    return _cut_questions(tokenizer, questions, max_question_tokens)[1] if questions else 0


def windows_table(windows: QAWindows, examples: Sequence[QAExample] | None = None):
    """One Arrow row per window, real tokens only (no padding): id (window), example_id (its
    question's index), input_ids, token_type_ids, start_position / end_position (gold, 0 = [CLS]).
    With `examples` (dev: what in-loop SQuAD scoring needs), also each token's character
    offsets in the context (offset_start / offset_end, -1 outside it), the context and the
    gold answers."""
    import pyarrow as pa

    if windows.token_type_ids is None:
        raise ModelError("QA windows need token_type_ids (question 0, context 1) to find the context "
                         "in a shard row; fix: use a BERT-family tokenizer that returns them")
    lengths = windows.attention_mask.sum(axis=1)
    cut = lambda a: [row[:n].tolist() for row, n in zip(a, lengths)]  # noqa: E731
    cols = {
        "id": pa.array(np.arange(len(windows)), pa.int64()),
        "example_id": pa.array(windows.example_index, pa.int64()),
        "input_ids": pa.array(cut(windows.input_ids), pa.list_(pa.int32())),
        "token_type_ids": pa.array(cut(windows.token_type_ids), pa.list_(pa.int8())),
        "start_position": pa.array(windows.start_positions, pa.int64()),
        "end_position": pa.array(windows.end_positions, pa.int64()),
    }
    if examples is not None:
        cols["offset_start"] = pa.array(cut(windows.offsets[..., 0]), pa.list_(pa.int32()))
        cols["offset_end"] = pa.array(cut(windows.offsets[..., 1]), pa.list_(pa.int32()))
        cols["context"] = pa.array([examples[i].context for i in windows.example_index], pa.string())
        cols["answers"] = pa.array([list(examples[i].answers) for i in windows.example_index],
                                   pa.list_(pa.string()))
    return pa.table(cols)


def answer_mask_from_types(token_type_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, seq) bool: [CLS] and the context tokens of padded window rows, rebuilt from the
    segment ids (the context and its closing [SEP] are segment 1; the [SEP] is the last real
    token). The mask `losses.qa_distill_loss` takes."""
    lengths = attention_mask.sum(dim=1, keepdim=True)  # (batch, 1)
    pos = torch.arange(token_type_ids.shape[1], device=token_type_ids.device)[None, :]
    mask = (token_type_ids == 1) & (pos < lengths - 1)
    mask[:, CLS_INDEX] = True
    return mask


def rows_to_windows(rows: dict, index: Sequence[int], width: int) -> QAWindows:
    """The QAWindows (offsets and example index, what `decode_windows` reads) of dev rows
    `index` from a `windows_table` with `examples`, padded to `width`."""
    n = len(index)
    offsets = np.full((n, width, 2), -1, dtype=np.int64)
    for j, i in enumerate(index):
        s, e = np.asarray(rows["offset_start"][i]), np.asarray(rows["offset_end"][i])
        offsets[j, :len(s), 0], offsets[j, :len(e), 1] = s, e
    zeros = np.zeros((n, width), dtype=np.int64)
    return QAWindows(input_ids=zeros, attention_mask=zeros, token_type_ids=None, offsets=offsets,
                     example_index=np.asarray([rows["example_id"][i] for i in index], dtype=np.int64))


SQUAD_WINDOW = 384  # tokens per window in BERT's and DistilBERT's SQuAD setting (the squad preset)
MAX_QUESTION_TOKENS = 64  # run_squad's max_query_length; `tokenize_windows`' default


def answering_windows(data: DataConfig, tokenizer: PreTrainedTokenizerBase, max_positions: int) -> dict[str, int]:
    """How a QA model reads contexts outside training (Serve, ONNX export): `answer_questions`'
    max_length, doc_stride, max_answer_length and n_best from `data` when data.task=qa (e.g.
    --config squad, the window it was trained with); otherwise 384-token windows with data's
    other defaults (128 / 30 / 20). The window never exceeds the model's `max_positions`; a stride
    that leaves no room is a one-line ConfigError."""
    window = min(data.max_length if data.task == "qa" else SQUAD_WINDOW, max_positions)
    check_window_sizes(tokenizer, window, data.doc_stride, MAX_QUESTION_TOKENS)
    return {"max_length": window, "doc_stride": data.doc_stride, "max_answer_length": data.max_answer_length,
            "n_best": data.n_best}
