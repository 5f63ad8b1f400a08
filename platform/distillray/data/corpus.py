"""The task-agnostic corpus: unlabelled text for the general distillation stage
(`student.general_distill_steps`, TinyBERT's general distillation), built from the train splits
of every dataset under a data dir: SST-2 sentences, both sentences of each MRPC and RTE pair, and
the SQuAD contexts cut into sentences (a 64-128 token window holds a sentence, not a paragraph).
Dev splits are never read, so nothing the students are scored on is distilled from.

TinyBERT's general stage reads Wikipedia cut to max_seq_length; this is the offline stand-in.
`augment.corpus=<dir>` adds these texts, deduplicated in reading order, to the unlabelled rows the
teacher labels (`augment.load_unlabelled`); `augment.copies` makes augmented copies of them as of
the training texts.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from distillray.errors import DataError

# (source name, preset whose data.* reads it, file under the data dir)
TABLE_SOURCES = (("sst2", "sst2", "sst2/train.tsv"), ("mrpc", "mrpc", "mrpc/train.tsv"),
                 ("rte", "rte", "rte/train.tsv"))
SQUAD = "squad/train.json"

# a sentence ends at . ! or ? (and any closing quote or bracket) before white space and a capital,
# digit or opening quote: "Mr. Smith" splits wrongly, which costs a short fragment, not a text
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """A paragraph's sentences, stripped, empty ones dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


@dataclass
class Corpus:
    texts: list[str] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)  # new (not duplicate) texts per source
    missing: list[str] = field(default_factory=list)  # expected files not found under the data dir


def build_corpus(data_dir: str | Path, sources: list[str] | None = None) -> Corpus:
    """Read the train split of each source present under `data_dir` (all four by default:
    sst2, mrpc, rte, squad); a source whose file is absent is listed in `missing`. DataError
    when none is present. Built once per process while its files are unchanged (preflight and
    precompute both read it)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory; fix: set augment.corpus to the datasets' dir "
                        "(../shared/data beside the repo)")
    wanted = frozenset(sources or [s for s, _, _ in TABLE_SOURCES] + ["squad"])
    unknown = wanted - {s for s, _, _ in TABLE_SOURCES} - {"squad"}
    if unknown:
        raise DataError(f"unknown corpus source(s) {sorted(unknown)}; fix: choose from sst2, mrpc, rte, squad")
    files = [root / rel for _, _, rel in TABLE_SOURCES] + [root / SQUAD]
    stamps = tuple((st.st_mtime_ns, st.st_size) if (st := _stat(f)) else None for f in files)
    c = _build(root.resolve(), wanted, stamps)
    return Corpus(list(c.texts), dict(c.sources), list(c.missing))


def _stat(path: Path):
    try:
        return path.stat()
    except OSError:
        return None


@functools.lru_cache(maxsize=4)
def _build(root: Path, wanted: frozenset[str], stamps: tuple) -> Corpus:  # stamps: the cache key only
    from distillray.config import load_config
    from distillray.data.text import read_rows
    from distillray.tasks.qa import read_squad

    out, seen = Corpus(), set()

    def add(source: str, texts) -> None:
        n = 0
        for t in texts:
            t = " ".join(t.split())
            if t and t not in seen:
                seen.add(t)
                out.texts.append(t)
                n += 1
        out.sources[source] = n

    for name, preset, rel in TABLE_SOURCES:
        if name not in wanted:
            continue
        path = root / rel
        if not path.is_file():
            out.missing.append(str(path))
            continue
        data = load_config(preset, [f"data.train={path}"]).data
        add(name, (t for r in read_rows(str(path), data) for t in (r.text, r.text_pair) if t))
    if "squad" in wanted:
        path = root / SQUAD
        if path.is_file():
            contexts = dict.fromkeys(ex.context for ex in read_squad(path))  # one per paragraph, in order
            add("squad", (s for c in contexts for s in split_sentences(c)))
        else:
            out.missing.append(str(path))
    if not out.texts:
        raise DataError(f"{root}: none of {', '.join(rel for _, _, rel in TABLE_SOURCES)}, {SQUAD} is there; "
                        "fix: set augment.corpus to the datasets' dir (../shared/data beside the repo)")
    return out
