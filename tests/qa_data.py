"""A tiny SQuAD v1.1 dataset written by tests: short contexts, and one context far longer than
a 64-token window whose answer lies past the first window."""

from __future__ import annotations

import json
from pathlib import Path

FILLER = ("The committee met again in the spring and discussed the budget, the roads, the schools "
          "and the new library at some length. ")
LONG_ANSWER = "Marguerite Okonkwo"
LONG_CONTEXT = FILLER * 3 + f"The bridge was finally designed by {LONG_ANSWER} in 1921. " + FILLER * 2
LONG_QUESTION = "Who designed the bridge?"

CITIES = ["Lisbon", "Oslo", "Kyoto", "Quito", "Dakar", "Perth", "Lima", "Cork"]


def _qa(qid: str, question: str, context: str, answer: str) -> dict:
    return {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": context.index(answer)}]}


def write_squad(dir: Path, train_questions: int = 16) -> tuple[Path, Path]:
    """train.json (short paragraphs plus the long one) and dev.json (the long one first)."""
    def paragraphs(n: int, prefix: str) -> list[dict]:
        out = [{"context": LONG_CONTEXT, "qas": [_qa(f"{prefix}-long", LONG_QUESTION, LONG_CONTEXT, LONG_ANSWER)]}]
        for i in range(n - 1):
            city = CITIES[i % len(CITIES)]
            ctx = f"In year {1900 + i} the fair moved to {city}, where it stayed for {i + 2} weeks."
            out.append({"context": ctx, "qas": [_qa(f"{prefix}-{i}", "Where did the fair move?", ctx, city)]})
        return out

    dir.mkdir(parents=True, exist_ok=True)
    train, dev = dir / "train.json", dir / "dev.json"
    train.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs(train_questions, "t")}]}))
    dev.write_text(json.dumps({"version": "1.1", "data": [{"title": "d", "paragraphs": paragraphs(4, "d")}]}))
    return train, dev
