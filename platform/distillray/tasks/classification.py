"""Sequence classification of one text (single) or of a sentence pair (pair): tokenisation, the
task a model dir records, and the metrics (accuracy; F1 of the positive class for binary tasks).

Pairs follow BERT's GLUE recipe (Devlin et al. 2019; Hugging Face `run_glue.py`): one sequence
`[CLS] a [SEP] b [SEP]`, token_type_ids 0 over a and 1 over b, truncated 'longest_first' (a token
at a time from the longer text) so neither text loses everything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from transformers import PretrainedConfig, PreTrainedTokenizerBase

Item = str | tuple[str, str]  # one input: a text, or (text, text_pair)

TASK_KEY = "distillray_task"  # in an exported model's config.json: "single" or "pair"
POSITIVE = 1  # label id whose F1 a binary task reports (MRPC: equivalent)


def split_items(items: Sequence[Any]) -> tuple[list[str], list[str] | None]:
    """(texts, text_pairs or None) from items that are all texts or all (text, text_pair)."""
    pairs = [not isinstance(x, str) for x in items]
    if not any(pairs):
        return list(items), None
    if not all(pairs):
        raise ValueError("inputs mix single texts and (text, text_pair) pairs; send one kind")
    return [a for a, _ in items], [b for _, b in items]


def tokenize(tokenizer: PreTrainedTokenizerBase, items: Sequence[Any],
             max_length: int) -> tuple[list[list[int]], list[list[int]] | None]:
    """(input_ids, token_type_ids) per item, unpadded; token_type_ids is None for single texts
    (all 0, which is what a BERT assumes when they are not given)."""
    texts, pairs = split_items(items)
    if pairs is None:
        enc = tokenizer(texts, truncation=True, max_length=max_length, padding=False,
                        return_attention_mask=False, return_token_type_ids=False)
        return enc["input_ids"], None
    enc = tokenizer(texts, pairs, truncation="longest_first", max_length=max_length, padding=False,
                    return_attention_mask=False, return_token_type_ids=True)
    return enc["input_ids"], enc["token_type_ids"]


def model_task(config: PretrainedConfig) -> str:
    """The task a model dir was trained for (recorded under TASK_KEY); single when unrecorded."""
    return getattr(config, TASK_KEY, None) or "single"


def record_task(model_dir: Path, task: str) -> None:
    """Write the task into a local model dir's config.json (a teacher used as it came)."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    if config.get(TASK_KEY) != task:
        path.write_text(json.dumps({**config, TASK_KEY: task}, indent=2, sort_keys=True) + "\n")


def positive_f1(y_true: np.ndarray, y_pred: np.ndarray, positive: int = POSITIVE) -> float:
    """F1 of the positive class: 2 tp / (2 tp + fp + fn); 0 when it is never predicted nor true."""
    tp = float(np.sum((y_pred == positive) & (y_true == positive)))
    fp = float(np.sum((y_pred == positive) & (y_true != positive)))
    fn = float(np.sum((y_pred != positive) & (y_true == positive)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def f1_from_counts(tp: float, fp: float, fn: float) -> float:
    """The same F1 from counts summed over workers."""
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def scores(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> dict[str, float]:
    """accuracy, and f1 (positive class) when the task is binary."""
    out = {"accuracy": float(np.mean(y_pred == y_true))}
    if num_labels == 2:
        out["f1"] = positive_f1(y_true, y_pred)
    return out
