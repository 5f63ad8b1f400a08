"""ONNX Runtime vs torch on CPU (issue 22): accuracy and speed of the demo student and teacher on
SST-2 dev, every variant timed side by side in alternating rounds (`evaluation.measure_speed`):

  torch fp32 student, torch int8 dynamic student, ORT fp32 student, ORT int8 dynamic student,
  ORT int8 static student (calibrated on --calibration-rows training rows), torch fp32 teacher

    python bench/onnx_speed.py                                   # runs/demo/{student,teacher} (make demo)
    flock /tmp/distillray-ray.lock python bench/onnx_speed.py --student DIR --teacher DIR

Exports the student first (jobs/export_onnx.py's steps: fp32 parity vs torch, int8 agreement).
Batch 1 ex/s is 1000 / the median single-text latency; batch 64 ex/s is the median of the rounds.
Prints a table; writes runs/bench-onnx/onnx.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import REPO, machine, save, sst2_or_exit, table  # noqa: E402

# this file is named onnx.py: with its dir on the path, `import onnx` (inside ONNX Runtime) would find it
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

TEACHER = "teacher torch fp32"
STUDENT = ("student torch fp32", "student torch int8 dynamic", "student ORT fp32", "student ORT int8 dynamic",
           "student ORT int8 static")
ONNX = {"student ORT fp32": "fp32", "student ORT int8 dynamic": "int8-dynamic",
        "student ORT int8 static": "int8-static"}
INT8 = ("student torch int8 dynamic", "student ORT int8 dynamic", "student ORT int8 static")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", default=str(REPO / "runs" / "demo" / "student"))
    p.add_argument("--teacher", default=str(REPO / "runs" / "demo" / "teacher"))
    p.add_argument("--calibration-rows", type=int, default=300)
    p.add_argument("--output-dir", default=str(REPO / "runs" / "bench-onnx"))
    args = p.parse_args()
    sst2 = sst2_or_exit()
    for d in (args.student, args.teacher):
        if not (Path(d) / "config.json").exists():
            print(f"skipped: no exported model at {d}; make one with `make demo` (writes runs/demo/student and "
                  "runs/demo/teacher), or pass --student DIR --teacher DIR")
            return 0
    t_all = time.time()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    from distillray import cli
    from distillray.config import load_config
    from distillray.data.text import LabelSet, load_split, subset
    from distillray.evaluation import evaluate_dirs
    from distillray.models import model_config
    from distillray.models.onnx import export_variants

    cli.setup_logging("WARNING")
    cfg = load_config("sst2", [f"data.train={sst2 / 'train.tsv'}", f"data.dev={sst2 / 'dev.tsv'}"])
    mcfg = model_config(args.student)
    names = [mcfg.id2label[i] for i in range(mcfg.num_labels)]
    labels = LabelSet(raw=[str(v) for v in cfg.data.labels], names=names)
    dev, _ = load_split(cfg.data.dev, cfg.data, labels)
    train, _ = load_split(cfg.data.train, cfg.data, labels)
    calibration = subset(train, args.calibration_rows, "random", cfg.data.sample_seed).texts

    t0 = time.time()
    exported = export_variants(args.student, dev.texts, calibration, cfg.data.max_length)
    export_s = time.time() - t0
    t0 = time.time()
    models = {n: args.student for n in STUDENT} | {TEACHER: args.teacher}
    # compare_to the fp32 student: on two classes, predictions differ exactly where one of the two is right
    out = evaluate_dirs(models, dev.texts, dev.labels, names, quantized=("student torch int8 dynamic",),
                        max_length=cfg.data.max_length, onnx=ONNX, compare_to="student torch fp32")
    eval_s = time.time() - t0

    t = out[TEACHER]
    rows = []
    for name, r in out.items():
        vs = r.get("vs_student torch fp32")
        agree = 1 - (vs["only_this_right"] + vs["only_baseline_right"]) / r["rows"] if vs else 1.0
        rows.append((name, f"{r['accuracy']:.2%}", f"{agree:.1%}", f"{r['size_bytes'] / 1e6:.1f}",
                     f"{r['latency_ms']:.2f}", f"{1000 / r['latency_ms']:.0f}", f"{r['throughput']:.0f}",
                     f"{r['throughput'] / t['throughput']:.2f}x",
                     f"{min(r['throughput_rounds']):.0f}-{max(r['throughput_rounds']):.0f}"))
    eager, ort32 = out["student torch fp32"], out["student ORT fp32"]
    b1 = eager["latency_ms"] / ort32["latency_ms"]
    b64 = ort32["throughput"] / eager["throughput"]
    b64_rounds = [o / e for o, e in zip(ort32["throughput_rounds"], eager["throughput_rounds"])]
    close = [n for n in INT8 if t["accuracy"] - out[n]["accuracy"] <= 0.015]
    best = max(close or INT8, key=lambda n: out[n]["throughput"])
    best_x = out[best]["throughput"] / t["throughput"]
    gap = (t["accuracy"] - out[best]["accuracy"]) * 100
    parity = exported["fp32"]["max_abs_logit_diff_vs_torch"]
    targets = [
        ("ORT fp32 / torch fp32 student, batch 1", f"{b1:.2f}x", ">= 1.3x", "yes" if b1 >= 1.3 else "MISS"),
        ("ORT fp32 / torch fp32 student, batch 64", f"{b64:.2f}x (rounds {min(b64_rounds):.2f}-{max(b64_rounds):.2f})",
         ">= 1.3x", "yes" if b64 >= 1.3 else "MISS"),
        (f"best int8 ({best}) / teacher, batch 64", f"{best_x:.2f}x", ">= 3x", "yes" if best_x >= 3 else "MISS"),
        (f"teacher - {best} accuracy", f"{gap:+.2f} points", "<= 1.5", "yes" if gap <= 1.5 else "MISS"),
        ("ORT fp32 max |logit - torch|", f"{parity:.1e}", "<= 1e-4", "yes" if parity <= 1e-4 else "MISS"),
        *[(f"ORT {v} argmax agreement with ORT fp32", f"{agree:.1%}", ">= 99%", "yes" if agree >= 0.99 else "MISS")
          for v, agree in ((v, exported[v]["argmax_agreement_vs_fp32"]) for v in ("int8-dynamic", "int8-static"))],
    ]
    print(f"\nbench/onnx_speed.py, {started}, on {machine()}")
    print(f"SST-2 dev {t['rows']} rows, max_length {cfg.data.max_length}; student {args.student} "
          f"({eager['layers']} layers), teacher {args.teacher} ({t['layers']} layers); int8 static calibrated on "
          f"{len(calibration)} train rows; {len(eager['throughput_rounds'])} alternating rounds\n")
    print(table(rows, ("model", "accuracy", "agrees w/ student fp32", "MB", "latency ms (b1)", "ex/s b1",
                       "ex/s b64", "b64 vs teacher", "b64 rounds")))
    print()
    print(table(targets, ("target", "value", "goal", "met")))
    print(f"\nwall time: export {export_s:.0f} s, evaluate and time {eval_s:.0f} s, total {time.time() - t_all:.0f} s")
    save(Path(args.output_dir), "onnx", {"evaluation": out, "export": exported, "machine": machine(),
                                         "started": started, "args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
