"""The official SQuAD v1.1 evaluation: exact match and token F1 after answer normalisation, the
maximum over a question's gold answers, averaged over the questions as percentages.

Follows the official `evaluate-v1.1.py` (Rajpurkar et al. 2016) line for line in what it computes:
normalisation lower-cases, drops punctuation (`string.punctuation`), the articles a/an/the and
extra whitespace; F1 is over whitespace tokens of the normalised strings (a multiset overlap),
0 when nothing overlaps; a question without a prediction scores 0 on both.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable, Mapping, Sequence

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lower-case, remove punctuation, then the articles a/an/the, then collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-level F1 of two answers after normalisation; 0 when they share no token."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    """True when the two answers are equal after normalisation."""
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def max_over_ground_truths(metric, prediction: str, ground_truths: Sequence[str]) -> float:
    """The best score of `prediction` against any of the gold answers."""
    return max(float(metric(prediction, gt)) for gt in ground_truths)


def squad_scores(predictions: Mapping[str, str],
                 gold: Iterable[tuple[str, Sequence[str]]]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent, over every (question id, gold answers) in `gold`.

    A question missing from `predictions` counts as 0 (as the official script, which warns).
    """
    em = f1 = 0.0
    total = 0
    for qid, answers in gold:
        total += 1
        if qid not in predictions:
            continue
        em += max_over_ground_truths(exact_match_score, predictions[qid], answers)
        f1 += max_over_ground_truths(f1_score, predictions[qid], answers)
    if total == 0:
        return {"exact_match": 0.0, "f1": 0.0}
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total}


def evaluate_squad_json(dataset: list[dict], predictions: Mapping[str, str]) -> dict[str, float]:
    """The official `evaluate(dataset, predictions)`: `dataset` is the JSON's `data` list."""
    gold = ((qa["id"], [a["text"] for a in qa["answers"]])
            for article in dataset for paragraph in article["paragraphs"] for qa in paragraph["qas"])
    return squad_scores(predictions, gold)
