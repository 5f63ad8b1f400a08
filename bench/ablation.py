"""What each distillation ingredient buys on SST-2, on the same rows and seeds, one teacher
fine-tuned on all of SST-2 train (the DistilBERT setting; --teacher-rows to cap it):

  hard-label   the 3-layer student (teacher layers [0, 2, 4]), gold labels only (alpha_kd=0)
  kd           + the teacher's soft targets on the labelled rows (the default pipeline)
  kd+text      + teacher-labelled augmented copies of the training rows (augment.copies)
  kd+text+layers  + TinyBERT's hidden-state and attention losses on the mapped layers
               ("kd+layers", and no kd+text row, with --copies 0)
  small        a student truncated to fewer layers and a smaller width, with the task-agnostic
               stage (intermediate layers only) before the task stage; kd+text+layers otherwise

Per row: dev accuracy, the dev rows only it or the hard-label student gets right with McNemar's
exact p, params, throughput at batch 64 and latency at batch 1 (all models timed side by side),
precompute rows/s and shard bytes per row, median seconds per training step.

    python bench/ablation.py                                      # the sizes in docs/benchmarks.md
    python bench/ablation.py --rows 200 --teacher-rows 200 --copies 1 --general-steps 4 --smoke
    python bench/ablation.py teacher.model=runs/bench-ablation/teacher   # reuse a fine-tuned teacher

Every stage goes through the pipeline functions jobs/distill.py uses. Prints a table; writes
runs/bench-ablation/ablation.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import REPO, cpu_lock, machine, save, sst2_or_exit, table  # noqa: E402


def variants(args: argparse.Namespace) -> dict[str, list[str]]:
    """Each variant's config overrides on top of the shared base."""
    text = [f"augment.copies={args.copies}"]
    layers = ["distill.alpha_hidden=1", "distill.alpha_attn=1"]
    small = ["student.layers=null", "student.init=truncate", f"student.num_layers={args.small_layers}",
             f"student.hidden_size={args.small_hidden}", f"student.general_distill_steps={args.general_steps}"]
    out = {"hard-label": ["distill.alpha_kd=0", "distill.alpha_ce=1"], "kd": []}
    if args.copies:  # --copies 0: no augmented text, so no kd+text row and "kd+layers" says so
        out["kd+text"] = text
    out["kd+text+layers" if args.copies else "kd+layers"] = text + layers
    out["small"] = text + layers + small
    return out


def step_time(history: list[dict]) -> float:
    """Median seconds per optimizer step over the logged windows (the first one, which includes
    start-up, left out when there are others)."""
    times = [h["step_time_s"] for h in history if "step_time_s" in h]
    return statistics.median(times[1:] or times) if times else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=8000, help="seeded train rows for every student; 0: all of train")
    p.add_argument("--teacher-rows", type=int, default=None,
                   help="seeded train rows for the teacher's fine-tune; default all of SST-2 train")
    p.add_argument("--teacher-epochs", type=int, default=1)
    p.add_argument("--teacher-lr", type=float, default=1e-4)
    p.add_argument("--student-epochs", type=int, default=1)
    p.add_argument("--student-lr", type=float, default=2e-4)
    p.add_argument("--copies", type=int, default=1, help="augmented copies per row (kd+text and after)")
    p.add_argument("--small-layers", type=int, default=2)
    p.add_argument("--small-hidden", type=int, default=192)
    p.add_argument("--general-steps", type=int, default=200, help="task-agnostic steps of the small student")
    p.add_argument("--only", nargs="*", default=None, help="run these variants only (hard-label always)")
    p.add_argument("--smoke", action="store_true", help="dev capped at 64 rows (a test of the script, not a figure)")
    p.add_argument("--output-dir", default=str(REPO / "runs" / "bench-ablation"))
    p.add_argument("--lock", default=None, help="exclusive lock file held around each stage")
    p.add_argument("overrides", nargs="*", help="extra config key=value for every run")
    args = p.parse_args()
    sst2_or_exit()

    from distillray import cli, pipeline
    from distillray.config import load_config
    from distillray.distributed.ray_train import FitOptions
    from distillray.evaluation import evaluate_dirs
    from distillray.preflight import preflight
    from distillray.ray_utils import ray_session

    out = Path(args.output_dir)
    student_rows = [f"data.max_rows={args.rows or 'null'}"]
    teacher_rows = [f"data.max_rows={args.teacher_rows or 'null'}"]
    base = ["data.sample=random", "data.sample_seed=0", f"finetune.epochs={args.teacher_epochs}",
            f"finetune.lr={args.teacher_lr}",
            f"train.epochs={args.student_epochs}", f"train.lr={args.student_lr}", "student.layers=[0,2,4]",
            "checkpoint.every=0", "train.eval_every=0", "train.log_every=25", "precompute.logits_dtype=float16",
            f"run.output_dir={out}", *(["data.dev_max_rows=64"] if args.smoke else []), *args.overrides]
    cli.setup_logging("INFO")
    t_all = time.time()
    cfg = load_config("sst2", base + student_rows)
    task = preflight(cfg)
    teacher_task = preflight(load_config("sst2", base + teacher_rows))
    todo = variants(args)
    if args.only is not None:
        if unknown := set(args.only) - set(todo):
            p.error(f"--only {' '.join(sorted(unknown))}: not a variant here; pick from {', '.join(todo)}")
        todo = {k: v for k, v in todo.items() if k == "hard-label" or k in args.only}
    cfgs = {name: load_config("sst2", base + student_rows + extra) for name, extra in todo.items()}  # config errors first
    runs: dict[str, dict] = {}
    with ray_session(cfg):
        with cpu_lock(args.lock):
            t0 = time.time()
            teacher = pipeline.prepare_teacher(teacher_task)
            teacher_s = time.time() - t0
        for name, vcfg in cfgs.items():
            vtask = dataclasses.replace(task, cfg=vcfg)
            with cpu_lock(args.lock):
                pre = pipeline.precompute(vtask, teacher.dir)
            shards = pipeline.check_shards(vtask, pre.shard_dir, teacher.dir)
            init_dir = pipeline.student_init_dir(vtask, teacher.dir, vcfg.student.layers)
            t0 = time.time()
            with cpu_lock(args.lock):
                init_dir, general = pipeline.general_distill(vcfg, shards, init_dir,
                                                             str(out / "work" / f"{name}-general"))
                fit = pipeline.distill_student(vcfg, shards, init_dir, task.dev, str(out / name),
                                               FitOptions(name=f"{cfg.run_name}-{name.replace('+', '-')}"))
            runs[name] = {"shard_dir": pre.shard_dir, "shard_rows": pre.manifest["rows"],
                          "precompute_rows_per_s": pre.rows_computed / pre.seconds if pre.rows_computed else None,
                          "precompute_s": pre.seconds, "bytes_per_row": pre.bytes_per_row,
                          "general_steps": general.steps if general else 0,
                          "general_s_per_step": step_time(general.history) if general else None,
                          "steps": fit.steps, "s_per_step": step_time(fit.history), "train_s": time.time() - t0}
    with cpu_lock(args.lock):
        models = {"teacher": teacher.dir, **{name: str(out / name) for name in cfgs}}
        evals = evaluate_dirs(models, task.dev.inputs(), task.dev.labels, task.labels.names,
                              max_length=cfg.data.max_length, compare_to="hard-label")
    t = evals["teacher"]
    rows = [("teacher", t["accuracy"], "", "", t["params"], t["throughput"], t["latency_ms"], 1.0, "", "", "", "")]
    for name, r in runs.items():
        e = evals[name]
        vs = e.get("vs_hard-label", {})
        rows.append((name, e["accuracy"], f"{vs['only_this_right']}/{vs['only_baseline_right']}" if vs else "-",
                     vs.get("mcnemar_p", "-"), e["params"], e["throughput"], e["latency_ms"],
                     e["throughput"] / t["throughput"], r["precompute_rows_per_s"] or "cached",
                     r["bytes_per_row"], r["s_per_step"], r["steps"] + r["general_steps"]))
    print(f"\nbench/ablation.py on {machine()}")
    print(f"teacher on {len(teacher_task.train)} SST-2 train rows ({args.teacher_epochs} epochs, {teacher_s:.0f} s), "
          f"students on {len(task.train)} of them ({args.student_epochs} epochs); dev {len(task.dev)} rows; "
          f"augment.copies={args.copies}; small = "
          f"{args.small_layers} layers x {args.small_hidden} (truncated), {args.general_steps} task-agnostic steps\n")
    print(table(rows, ("model", "dev acc", "only it / only hard right", "McNemar p", "params", "ex/s b64",
                       "ms b1", "x teacher b64", "precompute rows/s", "bytes/row", "s/step", "steps")))
    print(f"\nwall time: {time.time() - t_all:.0f} s")
    save(out, "ablation", {"runs": runs, "evals": evals, "teacher_rows": len(teacher_task.train),
                           "teacher_s": teacher_s, "args": vars(args), "machine": machine(),
                           "seconds": time.time() - t_all})
    return 0


if __name__ == "__main__":
    sys.exit(main())
