"""Distillation on the GLUE sentence-pair tasks MRPC and RTE, end to end on real Ray:

  teacher  = the packaged MiniLM-L6 fine-tuned on the full train split (preset mrpc / rte)
  student  = teacher layers [0, 2, 4], distilled from the teacher's shards over the full train split
  baseline = the same student, same init, data and schedule, hard labels only (distill.alpha_kd=0):
             it reads the same shards, so no teacher forward
  evaluated on the full dev split: accuracy, F1 of the positive class, params, latency (batch 1)
  and throughput (batch 64) of teacher and student timed side by side; the dev rows only one of
  two models gets right with McNemar's exact p (distilled vs hard-label, distilled vs teacher)

    python bench/glue.py --task mrpc --lock /tmp/distillray-ray.lock
    python bench/glue.py --task rte --lock /tmp/distillray-ray.lock

Hyper-parameters: teacher lr 1e-4 (the 800-row MRPC run's, HF run_glue's range for a small
model), student lr 2e-4 (a 3-layer student tolerates the higher rate, as in that run), 3 epochs
each (BERT's GLUE recipe: 2-4), batch 32, T=2, alpha_kd 0.5, max_length 128 (HF run_glue's; no
MRPC pair is longer, 12% of RTE's are and lose the premise's tail: longest-first truncation).
Prints a table; writes runs/bench-glue-<task>/glue.json. Every stage goes through the same
pipeline functions as jobs/distill.py; --lock is held around each stage, not the whole run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import REPO, cpu_lock, machine, save, table  # noqa: E402

HEADLINE = {"mrpc": "f1", "rte": "accuracy"}  # GLUE's headline metric per task (the presets' data.metric)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, choices=sorted(HEADLINE))
    p.add_argument("--teacher-epochs", type=int, default=3)
    p.add_argument("--teacher-lr", type=float, default=1e-4)
    p.add_argument("--student-epochs", type=int, default=3)
    p.add_argument("--student-lr", type=float, default=2e-4)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--alpha-kd", type=float, default=0.5)
    p.add_argument("--output-dir", default=None, help="default: runs/bench-glue-<task>")
    p.add_argument("--lock", default=None, help="exclusive lock file held around each stage")
    p.add_argument("--resume", action="store_true",
                   help="keep teacher/ and student/ already in the output dir; train what is missing, then evaluate")
    p.add_argument("--evaluate-only", action="store_true",
                   help="reuse teacher/, student/ and student-hard/ already in the output dir: evaluate and time only")
    p.add_argument("overrides", nargs="*", help="extra config key=value")
    args = p.parse_args()

    from distillray import cli, pipeline
    from distillray.config import load_config
    from distillray.distributed.ray_train import FitOptions
    from distillray.evaluation import evaluate_dirs
    from distillray.preflight import preflight
    from distillray.ray_utils import ray_session

    out_dir = args.output_dir or str(REPO / "runs" / f"bench-glue-{args.task}")
    base = [f"finetune.epochs={args.teacher_epochs}", f"finetune.lr={args.teacher_lr}",
            f"train.epochs={args.student_epochs}", f"train.lr={args.student_lr}", "student.layers=[0,2,4]",
            f"distill.temperature={args.temperature}", f"distill.alpha_kd={args.alpha_kd}",
            f"distill.alpha_ce={round(1 - args.alpha_kd, 6)}", "checkpoint.every=1000",
            "train.eval_every=0", "train.log_every=50", f"run.output_dir={out_dir}"]
    cfg = load_config(args.task, base + args.overrides)
    train_path = Path(cfg.data.train if Path(cfg.data.train).is_absolute() else REPO / cfg.data.train)
    if not train_path.exists():
        print(f"skipped: {args.task} data not found at {train_path.resolve()} (put ../shared/data beside the repo)")
        return 0
    cli.setup_logging("INFO")
    t_all = time.time()
    task = preflight(cfg)
    out = task.out
    hard_dir = out / "student-hard"
    sfit = hard_fit = None
    with ray_session(cfg):
        if args.evaluate_only:
            teacher = pipeline.TeacherResult(str(out / "teacher"))
            shards = pipeline.precompute(task, teacher.dir)  # a no-op: the cache is complete
        else:
            done = {d: args.resume and (out / d / "config.json").exists() for d in ("teacher", "student")}
            with cpu_lock(args.lock):
                teacher = pipeline.TeacherResult(str(out / "teacher")) if done["teacher"] else pipeline.prepare_teacher(task)
            with cpu_lock(args.lock):
                shards = pipeline.precompute(task, teacher.dir)
            checked = pipeline.check_shards(task, shards.shard_dir, teacher.dir)
            init_dir = pipeline.student_init_dir(task, teacher.dir, cfg.student.layers)
            if not done["student"]:
                with cpu_lock(args.lock):
                    sfit = pipeline.distill_student(cfg, checked, init_dir, task.dev, str(out / "student"))
            # its own run dir (metrics, Ray Train runs), so it does not overwrite the student's
            hard_cfg = load_config(args.task, base + args.overrides + [
                "distill.alpha_kd=0", "distill.alpha_ce=1", f"run.output_dir={out / 'hard-labels'}"])
            with cpu_lock(args.lock):
                hard_fit = pipeline.distill_student(hard_cfg, checked, init_dir, task.dev, str(hard_dir),
                                                    FitOptions(name=f"{cfg.run_name}-hard-labels"))
    more = {"hard_label_student": hard_fit.seconds} if hard_fit else {}
    with cpu_lock(args.lock):
        report = pipeline.finish(task, teacher, sfit, shards, timings=pipeline.stage_timings(
            task, teacher, shards, sfit, **more))
        # the dev rows only the distilled student or only the other model gets right
        paired = {}
        for other in ("hard", "teacher"):
            both = evaluate_dirs({"student": out / "student", other: hard_dir if other == "hard" else out / "teacher"},
                                 task.dev.inputs(), task.dev.labels, task.labels.names,
                                 max_length=cfg.data.max_length, speed=False, compare_to=other)
            paired[other] = both["student"][f"vs_{other}"]
            if other == "hard":
                hard = both["hard"]
    t, s, q = report["teacher"], report["student"], report.get("student_int8", {})
    m = HEADLINE[args.task]
    rounds = report["speedup_rounds"]
    rows = [
        *[(f"{who} dev {metric}", d.get(metric, float("nan")), "", "")
          for who, d in (("teacher", t), ("distilled student", s), ("hard-label student", hard),
                         ("int8 distilled student", q)) for metric in ("accuracy", "f1")],
        (f"retention on {m} (student / teacher)", report["retention"], ">= 0.97",
         "yes" if report["retention"] >= 0.97 else "MISS"),
        (f"hard-label retention on {m}", hard[m] / t[m] if t[m] else float("nan"), "", ""),
        *[row for other, name in (("hard", "hard-label student"), ("teacher", "teacher"))
          for row in ((f"dev rows only the distilled student gets right (vs {name})", paired[other]["only_this_right"], "", ""),
                      (f"dev rows only the {name} gets right", paired[other]["only_baseline_right"], "", ""),
                      (f"McNemar exact p (distilled vs {name})", paired[other]["mcnemar_p"], "< 0.05: beyond noise",
                       "yes" if paired[other]["mcnemar_p"] < 0.05 else "no"))],
        ("speedup (throughput, batch 64)", report["speedup"], "", ""),
        *[(f"speedup, {which} of {len(rounds)} alternating rounds", f(rounds), "", "")
          for which, f in (("lowest", min), ("highest", max)) if rounds],
        ("speedup (latency, batch 1)", report["latency_speedup"], "", ""),
        ("teacher params", t["params"], "", ""), ("student params", s["params"], "", ""),
        ("teacher latency ms (batch 1)", t["latency_ms"], "", ""), ("student latency ms (batch 1)", s["latency_ms"], "", ""),
        ("teacher throughput ex/s (batch 64)", t["throughput"], "", ""),
        ("student throughput ex/s (batch 64)", s["throughput"], "", ""),
        ("int8 student throughput ex/s (batch 64)", q.get("throughput", float("nan")), "", ""),
    ]
    rows += [(f"wall time: {k} (s)", v, "", "") for k, v in report["timings"].items()]
    rows.append(("wall time: total (s)", time.time() - t_all, "", ""))
    d = report["dataset"]
    print(f"\nbench/glue.py --task {args.task} on {machine()}")
    print(f"teacher fine-tuned {args.teacher_epochs} epochs (lr {args.teacher_lr}), students {args.student_epochs} "
          f"epochs (lr {args.student_lr}) on {d['train_rows']} train pairs; dev {d['dev_rows']} pairs; "
          f"max_length {cfg.data.max_length}\n")
    print(table(rows, ("measure", "value", "target", "met")))
    save(out, "glue", {"report": report, "hard_label_student": hard, "paired": paired, "args": vars(args),
                       "machine": machine(), "timings": report["timings"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
