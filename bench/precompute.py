"""Teacher-logit precompute throughput: the Ray Data job vs a naive loop.

On the first 5,000 rows of SST-2 train with the packaged MiniLM teacher:
  naive : one process, batch 32, every row padded to max_length 128, no bucketing
  job   : jobs/precompute_logits.py's path (Ray Data, actor pool, length-sorted dynamic padding,
          torch.inference_mode), into a fresh shard dir, once per precompute.backend asked for
          (onnx: the teacher's fp32 export in ONNX Runtime, exported before the clock starts)

    python bench/precompute.py [--rows 5000] [--backends torch,onnx] [--no-naive] [--lock /tmp/distillray-cpu.lock]

Prints rows/s of both and the ratio (target >= 3x), shard bytes per row, peak memory, and the
achieved GFLOP/s against this machine's measured fp32 matmul GFLOP/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import REPO, cpu_lock, machine, save, sst2_or_exit, table  # noqa: E402


def matmul_gflops(n: int = 1024, seconds: float = 2.0) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        done += 1
    return done * 2 * n**3 / (time.perf_counter() - t0) / 1e9


def forward_flops(cfg, lengths) -> float:
    """Matmul FLOPs of a BERT encoder forward over sequences of these (padded) lengths."""
    h, i, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    total = 0.0
    for n in lengths:
        per_layer = 2 * n * (4 * h * h + 2 * h * i) + 2 * 2 * n * n * h  # projections + FFN + attention
        total += layers * per_layer
    return total


class PeakRSS:
    """Peak resident memory of this process plus every Ray worker process, sampled every 0.2 s."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = me.memory_info().rss
            for p in psutil.process_iter(["name", "cmdline"]):
                try:
                    if p.pid != me.pid and any("ray::" in c or "default_worker" in c for c in (p.info["cmdline"] or [])):
                        total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def naive(teacher_dir: str, texts: list[str], batch: int, max_length: int) -> tuple[float, list[int]]:
    import torch

    from distillray.models import load_classifier, load_tokenizer

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model, tok = load_classifier(teacher_dir).eval(), load_tokenizer(teacher_dir)
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(texts), batch):
            enc = tok(texts[s:s + batch], padding="max_length", truncation=True, max_length=max_length,
                      return_tensors="pt")
            model(**enc).logits.numpy()
    return time.perf_counter() - t0, [max_length] * len(texts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--backends", default="torch", help="comma-separated precompute.backend values, one job each")
    p.add_argument("--no-naive", action="store_true", help="skip the naive loop (it takes ~4x the job's time)")
    p.add_argument("--lock", default=None)
    p.add_argument("--output-dir", default=str(REPO / "runs" / "bench-precompute"))
    args = p.parse_args()
    backends = args.backends.split(",")
    sst2 = sst2_or_exit()

    from distillray import cli, pipeline
    from distillray.config import load_config
    from distillray.data.precompute import PARITY_ROWS, onnx_teacher
    from distillray.inference import encode
    from distillray.models import load_tokenizer, model_config
    from distillray.preflight import preflight
    from distillray.ray_utils import ray_session

    cli.setup_logging("INFO")
    cache = Path(tempfile.mkdtemp(prefix="bench-precompute-"))

    def task_for(backend: str):  # one cache dir per backend: they share the shard key
        cfg = load_config("sst2", [f"data.train={sst2 / 'train.tsv'}", f"data.max_rows={args.rows}",
                                   f"data.max_length={args.max_length}", f"precompute.cache_dir={cache / backend}",
                                   f"precompute.backend={backend}", f"run.output_dir={args.output_dir}"])
        return cfg, preflight(cfg, need_dev=False)

    cfg, task = task_for(backends[0])
    teacher_dir, _ = pipeline.teacher_init_dir(task)  # the packaged MiniLM + a seeded 2-label head
    texts = task.train.texts
    mcfg = model_config(teacher_dir)
    job_lens = [len(s) for s in encode(load_tokenizer(teacher_dir), texts, args.max_length)]
    n = len(texts)
    rows, jobs, extra = [], {}, {}
    with cpu_lock(args.lock):
        gflops_peak = matmul_gflops()
        if not args.no_naive:
            with PeakRSS() as mem_naive:
                t_naive, naive_lens = naive(teacher_dir, texts, 32, args.max_length)
            f_naive = forward_flops(mcfg, naive_lens)
            rows.append(("naive loop (batch 32, pad to 128)", n / t_naive, t_naive, f_naive / t_naive / 1e9,
                         f_naive / t_naive / 1e9 / gflops_peak, mem_naive.peak / 2**20))
            extra |= {"naive_s": t_naive, "peak_rss_naive": mem_naive.peak}
        for backend in backends:
            cfg, task = task_for(backend)
            if backend == "onnx":  # the export is a one-off per teacher: not part of the job's rows/s
                t0 = time.perf_counter()
                onnx_teacher(teacher_dir, task.train.inputs()[:PARITY_ROWS], args.max_length)
                extra["onnx_export_and_check_s"] = time.perf_counter() - t0
            with ray_session(cfg), PeakRSS() as mem_job:
                t0 = time.perf_counter()
                res = pipeline.precompute(task, teacher_dir)
                t_job = time.perf_counter() - t0
            f_job = forward_flops(mcfg, job_lens)
            shard_bytes = sum(f.stat().st_size for f in Path(res.shard_dir).glob("shard-*.parquet"))
            jobs[backend] = {"s": t_job, "rows_per_s": n / t_job, "peak_rss": mem_job.peak,
                             "bytes_per_row": shard_bytes / n}
            rows.append((f"precompute job, backend={backend} (Ray Data, bucketed)", n / t_job, t_job,
                         f_job / t_job / 1e9, f_job / t_job / 1e9 / gflops_peak, mem_job.peak / 2**20))
    print(f"\nbench/precompute.py on {machine()}: {n} rows of SST-2 train, max_length {args.max_length}, "
          f"teacher {mcfg.num_hidden_layers}x{mcfg.hidden_size} MiniLM; fp32 matmul peak {gflops_peak:.1f} GFLOP/s\n")
    print(table(rows, ("method", "rows/s", "wall s", "GFLOP/s executed", "of matmul peak", "peak RSS MiB")))
    first = jobs[backends[0]]
    measures = [("shard bytes per row", first["bytes_per_row"], "", ""),
                ("mean tokens per row (job) vs padded (naive)", sum(job_lens) / n, args.max_length, ""),
                (f"job wall incl. Ray Data start-up (s), {backends[0]}", first["s"], "", "")]
    if "torch" in jobs and not args.no_naive:
        speedup = jobs["torch"]["rows_per_s"] / (n / extra["naive_s"])
        measures.insert(0, ("job (torch) / naive rows/s", speedup, ">= 3", "yes" if speedup >= 3 else "MISS"))
        extra["speedup"] = speedup
    if {"torch", "onnx"} <= set(jobs):
        measures.append(("job rows/s, onnx / torch", jobs["onnx"]["rows_per_s"] / jobs["torch"]["rows_per_s"], "", ""))
    if "onnx_export_and_check_s" in extra:
        measures.append(("onnx: export + parity check, once per teacher (s)", extra["onnx_export_and_check_s"], "", ""))
    print()
    print(table(measures, ("measure", "value", "reference", "met")))
    save(Path(args.output_dir), "precompute", {"rows": n, "jobs": jobs, "matmul_gflops": gflops_peak,
                                               "machine": machine(), **extra})
    shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
