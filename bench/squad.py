"""Extractive QA (SQuAD v1.1) end to end through jobs/distill.py on ../shared/data/squad: the
packaged MiniLM with a fresh span head fine-tuned by the one train loop (teacher), its
every-other-layer student distilled from precomputed start/end logits (KD on both
distributions + CE, as HF run_squad_w_distillation), both scored with the official v1.1 EM/F1
over every window of every dev question, and timed side by side (questions/s, windows batched
by 32). A hard-label student (same init, shards, schedule; distill.alpha_kd=0: CE on the gold
start/end only) is trained beside it, and the questions only one of the two answers exactly are
counted with McNemar's exact p.

    flock /tmp/distillray-ray.lock nice -n 19 python bench/squad.py                  # the preset's sizes
    flock /tmp/distillray-ray.lock nice -n 19 python bench/squad.py --train-questions 1500 \
        --dev-questions 300 --max-length 256 --doc-stride 96                         # a smaller run

Prints a table; writes runs/bench-squad/squad.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import REPO, machine, save, table  # noqa: E402

sys.path.insert(0, str(HERE.parent / "jobs"))  # jobs/distill.py

SQUAD = (REPO / ".." / "shared" / "data" / "squad").resolve()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-questions", type=int, default=None, help="first N train questions; default all")
    p.add_argument("--dev-questions", type=int, default=None, help="first N dev questions; default all")
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--doc-stride", type=int, default=128)
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3, help="distillation epochs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--output-dir", default=str(REPO / "runs" / "bench-squad"))
    p.add_argument("--report-only", action="store_true", help="evaluate and report a finished run's teacher and "
                                                                "student (and hard-label student) again (same "
                                                                "arguments), training nothing")
    p.add_argument("--skip-hard-label", action="store_true", help="no hard-label student (saves a student run)")
    p.add_argument("overrides", nargs="*", help="more config overrides, key=value")
    args = p.parse_args()
    if not (SQUAD / "train.json").exists():
        print(f"skipped: SQuAD not found at {SQUAD} (put ../shared/data/squad beside the repo)")
        return 0
    import distill  # jobs/distill.py

    out = Path(args.output_dir)
    overrides = [f"data.train={SQUAD / 'train.json'}", f"data.dev={SQUAD / 'dev.json'}",
                 f"data.max_length={args.max_length}", f"data.doc_stride={args.doc_stride}",
                 f"finetune.epochs={args.finetune_epochs}", f"train.epochs={args.epochs}",
                 f"finetune.batch_size={args.batch_size}", f"train.batch_size={args.batch_size}",
                 "checkpoint.every=0", f"run.output_dir={out / 'run'}",
                 f"precompute.cache_dir={out / 'cache'}"]
    if args.train_questions:
        overrides.append(f"data.max_rows={args.train_questions}")
    if args.dev_questions:
        overrides.append(f"data.dev_max_rows={args.dev_questions}")
    t0 = time.time()
    rc = _report_only(overrides + args.overrides) if args.report_only else \
        distill.main(["--config", "squad", *overrides, *args.overrides])
    if rc:
        return rc
    hard = None if args.skip_hard_label else _hard_label_student(overrides + args.overrides, out, args.report_only)
    wall = time.time() - t0
    r = json.loads((out / "run" / "report.json").read_text())
    manifest = json.loads((out / "run" / "logits" / "manifest.json").read_text())
    t, s = r["teacher"], r["student"]
    models = [("teacher", t), ("student", s), ("student int8", r["student_int8"])]
    if hard is not None:
        models.append(("hard-label student", hard["eval"]))  # the student's shape: not timed again
    rows = [(name, e["layers"], 100 * e["exact_match"], 100 * e["f1"], e["f1"] / t["f1"] if t["f1"] else None,
             e["params"] / 1e6, e.get("throughput", "-"), e.get("latency_ms", "-")) for name, e in models]
    print(table(rows, ("model", "layers", "EM", "F1", "retention F1", "params (M)", "questions/s (batch 32)",
                       "latency ms")))
    timings = r["timings"] | ({"hard_label_student": hard["seconds"]} if hard and hard["seconds"] else {})
    result = {
        "machine": machine(), "args": vars(args), "wall_s": round(wall, 1),
        "train_questions": r["dataset"]["train_rows"], "train_windows": manifest["rows"],
        "dev_questions": t["rows"], "bytes_per_window": manifest.get("bytes_per_window"),
        "logit_bytes_per_window": manifest.get("logit_bytes_per_window"),
        "teacher": {"em": 100 * t["exact_match"], "f1": 100 * t["f1"]},
        "student": {"em": 100 * s["exact_match"], "f1": 100 * s["f1"]},
        "retention_f1": r["retention"], "retention_em": r["retention_by_metric"].get("exact_match"),
        "speedup_batch32": r["speedup"], "latency_speedup": r["latency_speedup"],
        "int8": r.get("int8"), "timings": timings,
    }
    if hard is not None:
        result["hard_label_student"] = {"em": 100 * hard["eval"]["exact_match"], "f1": 100 * hard["eval"]["f1"]}
        result["distilled_vs_hard"] = hard["vs_hard"]
        v = hard["vs_hard"]
        print(f"questions only the distilled student answers exactly: {v['only_this_right']}, only the hard-label "
              f"student: {v['only_baseline_right']}; McNemar exact p {v['mcnemar_p']:.3g}")
    print(f"retention F1 {r['retention']:.2%} (EM {result['retention_em']:.2%}); speed-up {r['speedup']:.2f}x "
          f"at batch 32; {manifest['rows']} train windows, {manifest.get('bytes_per_window')} bytes per window; "
          f"timings {timings}")
    save(out, "squad", result)
    return 0


def _hard_label_student(overrides: list[str], out: Path, report_only: bool) -> dict:
    """The same student (init, shards, schedule) trained on the gold start/end only
    (distill.alpha_kd=0, alpha_ce=1), exported to out/student-hard (its runs under
    out/hard-labels), then scored beside the distilled student on the same dev questions."""
    from distillray import pipeline
    from distillray.config import load_config
    from distillray.distributed.ray_train import FitOptions
    from distillray.evaluation import evaluate_qa_dirs
    from distillray.preflight import preflight
    from distillray.ray_utils import ray_session

    cfg = load_config("squad", overrides)
    task = preflight(cfg)
    hard_dir = out / "student-hard"
    seconds = 0.0
    if not report_only:
        hard_cfg = load_config("squad", overrides + ["distill.alpha_kd=0", "distill.alpha_ce=1",
                                                     f"run.output_dir={out / 'hard-labels'}"])
        teacher_dir = task.dest("teacher")
        with ray_session(cfg):
            shards = pipeline.check_shards(task, str((task.out / "logits").resolve()), teacher_dir)
            init_dir = pipeline.student_init_dir(task, teacher_dir, cfg.student.layers)  # the student's own init
            fit = pipeline.distill_student(hard_cfg, shards, init_dir, task.dev, str(hard_dir),
                                           FitOptions(name=f"{cfg.run_name}-hard-labels"))
        seconds = fit.seconds
    elif not (hard_dir / "config.json").exists():
        sys.exit(f"--report-only: no hard-label student in {hard_dir}; fix: add --skip-hard-label, or run without "
                 "--report-only to train it")
    d = cfg.data
    both = evaluate_qa_dirs({"student": task.dest("student"), "hard": str(hard_dir)}, task.dev,
                            max_length=d.max_length, doc_stride=d.doc_stride, n_best=d.n_best,
                            max_answer_length=d.max_answer_length, speed=False, compare_to="hard")
    return {"eval": both["hard"], "vs_hard": both["student"]["vs_hard"], "seconds": seconds}


def _report_only(overrides: list[str]) -> int:
    """pipeline.finish on the run dir's teacher, student and shards (no Ray needed)."""
    from distillray import pipeline
    from distillray.config import load_config
    from distillray.data.precompute import PrecomputeResult
    from distillray.preflight import preflight

    cfg = load_config("squad", overrides)
    task = preflight(cfg)
    logits = task.out / "logits"
    manifest = json.loads((logits / "manifest.json").read_text())
    pipeline.finish(task, None, None, PrecomputeResult(str(logits.resolve()), manifest, 0, 0.0, True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
