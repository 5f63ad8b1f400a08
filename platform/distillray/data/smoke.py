"""A tiny, generated sentiment sample so `make demo` runs on a machine without ../shared.

SMOKE SAMPLE ONLY: short template sentences, deterministic, written by this module on first use
(`data.train=smoke data.dev=smoke`). It proves the pipeline runs end to end; it says nothing
about model quality. Real work points data.train/data.dev at real data.
"""

from __future__ import annotations

import random
from pathlib import Path

_POS = ["a wonderful", "a moving", "a sharp , funny", "a beautifully acted", "an utterly charming",
        "a gripping", "a warm and witty", "a brilliant", "a delightful", "a smart , touching"]
_NEG = ["a dull", "a tedious", "a clumsy , lifeless", "a badly acted", "an utterly pointless",
        "a boring", "a cold and witless", "a dreadful", "a painful", "a shallow , tiresome"]
_THING = ["film", "movie", "story", "comedy", "drama", "thriller", "picture", "script"]
_TAIL = ["", " from start to finish", " that lingers", " with a great cast", " about family",
         " for the whole evening", " , as expected", " in every scene"]


def _rows(n: int, seed: int) -> list[tuple[int, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        adj = rng.choice(_POS if label else _NEG)
        out.append((label, f"{adj} {rng.choice(_THING)}{rng.choice(_TAIL)} ."))
    return out


def write_smoke_sample(work_dir: Path, n_train: int = 512, n_dev: int = 128) -> dict[str, Path]:
    """Write smoke_train.tsv / smoke_dev.tsv (header `label<TAB>sentence`) and return their paths."""
    out = Path(work_dir) / "smoke-data"
    out.mkdir(parents=True, exist_ok=True)
    paths = {"train": out / "smoke_train.tsv", "dev": out / "smoke_dev.tsv"}
    for split, n, seed in (("train", n_train, 1), ("dev", n_dev, 2)):
        lines = ["label\tsentence"] + [f"{y}\t{t}" for y, t in _rows(n, seed)]
        text = "\n".join(lines) + "\n"
        if not paths[split].exists() or paths[split].read_text() != text:
            paths[split].write_text(text)
    return paths
