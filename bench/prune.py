"""Pruning on CPU: the demo teacher against its pruned forms on SST-2 dev, all timed side by side
in alternating rounds (`evaluation.measure_speed`):

  teacher; 50% of heads removed (Michel et al. importance), before and after KD recovery from the
  teacher's cached shards; 50% of FFN neurons removed (per layer: a plain BERT), before and after
  recovery; unstructured global magnitude pruning of 50% of the encoder weights (dense kernels).

    python bench/prune.py                                  # runs/demo/{teacher,logits} (make demo)
    flock /tmp/distillray-ray.lock python bench/prune.py --teacher DIR --shards DIR

Pruning and recovery are jobs/prune.py's main (recovery: the demo preset's train and distill
settings, plus --recover-args). Prints a table; writes runs/bench-prune/prune.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import REPO, machine, save, sst2_or_exit, table  # noqa: E402

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # bench/prune.py is not jobs/prune.py
sys.path.insert(0, str(REPO / "jobs"))

TARGET_POINTS = 1.5


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=str(REPO / "runs" / "demo" / "teacher"))
    p.add_argument("--shards", default=str(REPO / "runs" / "demo" / "logits"), help="the teacher's logit shard dir")
    p.add_argument("--fraction", type=float, default=0.5, help="heads, FFN neurons and weights removed")
    p.add_argument("--recover-args", nargs="*", default=[], help="extra overrides for the recovery (train.*)")
    p.add_argument("--no-ffn-recovery", action="store_true", help="FFN-pruned model before recovery only (saves a training run)")
    p.add_argument("--output-dir", default=str(REPO / "runs" / "bench-prune"))
    args = p.parse_args()
    sst2 = sst2_or_exit()
    for d, what in ((args.teacher, "config.json"), (args.shards, "manifest.json")):
        if not (Path(d) / what).exists():
            print(f"skipped: no {what} in {d}; make them with `make demo` (runs/demo/teacher, runs/demo/logits), "
                  "or pass --teacher DIR --shards DIR")
            return 0
    t_all = time.time()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out_dir = Path(args.output_dir)

    import prune as prune_job

    from distillray import cli
    from distillray.config import load_config
    from distillray.data.text import LabelSet, load_split
    from distillray.evaluation import evaluate_dirs
    from distillray.models import load_classifier, load_tokenizer, model_config, save_model_dir
    from distillray.models.prune import prune_unstructured_, sparse_bytes, sparsity

    data = [f"data.train={sst2 / 'train.tsv'}", f"data.dev={sst2 / 'dev.tsv'}", "data.max_rows=null"]
    f = args.fraction
    jobs = {"heads": [f"prune.heads={f}", "prune.ffn=0", "prune.scope=global"],
            "ffn": ["prune.heads=0", f"prune.ffn={f}", "prune.scope=layer",
                    f"prune.recover={str(not args.no_ffn_recovery).lower()}"]}
    seconds: dict[str, float] = {}
    for name, overrides in jobs.items():
        t0 = time.time()
        argv = ["--shards", args.shards, "--config", "demo", *data, *overrides, "run.log_level=WARNING",
                f"run.output_dir={out_dir / name}", *args.recover_args]
        if prune_job.main(argv) != 0:
            print(f"jobs/prune.py failed: {' '.join(argv)}")
            return 1
        seconds[name] = time.time() - t0
    cli.setup_logging("WARNING")

    t0 = time.time()
    model = prune_unstructured_(load_classifier(args.teacher), f)
    unstructured_dir = out_dir / "unstructured" / "pruned"
    save_model_dir(model, load_tokenizer(args.teacher), unstructured_dir)
    csr, zeros = sparse_bytes(model), sparsity(model)
    seconds["unstructured"] = time.time() - t0

    cfg = load_config("sst2", data)
    mcfg = model_config(args.teacher)
    names = [mcfg.id2label[i] for i in range(mcfg.num_labels)]
    dev, _ = load_split(cfg.data.dev, cfg.data, LabelSet(raw=[str(v) for v in cfg.data.labels], names=names))
    pct = f"{f:.0%}"
    models = {"teacher": args.teacher,
              f"heads -{pct}": out_dir / "heads" / "pruned", f"heads -{pct} + KD": out_dir / "heads" / "pruned-kd",
              f"FFN -{pct}": out_dir / "ffn" / "pruned", f"FFN -{pct} + KD": out_dir / "ffn" / "pruned-kd",
              f"unstructured {pct}": unstructured_dir}
    if args.no_ffn_recovery:
        del models[f"FFN -{pct} + KD"]
    t0 = time.time()
    ev = evaluate_dirs(models, dev.texts, dev.labels, names, max_length=cfg.data.max_length, compare_to="teacher")
    eval_s = time.time() - t0

    from distillray.models.prune import layer_sizes

    t = ev["teacher"]
    rows = []
    for name, r in ev.items():
        heads, inter = layer_sizes(load_classifier(models[name]))
        sparse = f"{csr / 1e6:.1f}" if name.startswith("unstructured") else "-"
        vs = r.get("vs_teacher", {})
        rows.append((name, f"{sum(heads)}", f"{sum(inter)}", f"{r['params'] / 1e6:.2f}M", f"{r['size_bytes'] / 1e6:.1f}",
                     sparse, f"{r['accuracy']:.2%}", f"{(r['accuracy'] - t['accuracy']) * 100:+.2f}",
                     f"{vs.get('mcnemar_p', 1):.3f}" if vs else "-", f"{r['latency_ms']:.2f}",
                     f"{r['throughput']:.0f}", f"{r['throughput'] / t['throughput']:.2f}x"))
    rec = ev[f"heads -{pct} + KD"]
    gap = (t["accuracy"] - rec["accuracy"]) * 100
    print(f"\nbench/prune.py, {started}, on {machine()}")
    print(f"SST-2 dev {t['rows']} rows, max_length {cfg.data.max_length}; teacher {args.teacher}; shards "
          f"{args.shards} ({json.loads((Path(args.shards) / 'manifest.json').read_text())['rows']} rows); "
          f"unstructured: {zeros:.1%} of encoder Linear weights zero; {len(t['throughput_rounds'])} alternating rounds\n")
    print(table(rows, ("model", "heads", "FFN neurons", "params", "MB dense", "MB CSR", "accuracy", "vs teacher (points)",
                       "McNemar p", "latency ms (b1)", "ex/s b64", "b64 vs teacher")))
    print()
    print(table([(f"teacher - heads -{pct} + KD accuracy", f"{gap:+.2f} points", f"<= {TARGET_POINTS}",
                  "yes" if gap <= TARGET_POINTS else "MISS")], ("target", "value", "goal", "met")))
    print(f"\nwall time: {', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}, evaluate and time {eval_s:.0f} s, "
          f"total {time.time() - t_all:.0f} s")
    save(out_dir, "prune", {"evaluation": ev, "csr_bytes": csr, "sparsity": zeros, "machine": machine(),
                            "started": started, "seconds": seconds, "args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
