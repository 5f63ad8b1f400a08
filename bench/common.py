"""Shared by the benchmarks: the machine, a table printer, the SST-2 paths, a CPU lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SST2 = (REPO / ".." / "shared" / "data" / "sst2").resolve()


def sst2_or_exit() -> Path:
    if not (SST2 / "train.tsv").exists():
        print(f"skipped: SST-2 not found at {SST2} (put ../shared/data/sst2 beside the repo)")
        raise SystemExit(0)
    return SST2


def machine() -> str:
    import torch

    cores = len(os.sched_getaffinity(0))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {cores} cores, {mem:.0f} GiB, {gpu}, torch {torch.__version__}"


def table(rows: list[tuple], headers: tuple[str, ...]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, cells[1:])])


def _fmt(c) -> str:
    if isinstance(c, float):
        return f"{c:.4g}" if abs(c) < 1000 else f"{c:,.0f}"
    return str(c)


@contextlib.contextmanager
def cpu_lock(path: str | None):
    """Hold an exclusive lock (e.g. /tmp/distillray-cpu.lock) so timings never share the cores."""
    if not path:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def save(out: Path, name: str, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"\nresults: {out / (name + '.json')}   command: {' '.join(sys.argv)}")
