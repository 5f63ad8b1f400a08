"""Ray Tune search on SST-2: what searching distillation temperature and loss weights buys.

And what sharing one set of teacher logits across the trials saves:

  teacher = the packaged MiniLM, fine-tuned on the slice (or reused when already fine-tuned)
  shards  = its logits over a seeded --rows slice of SST-2 train, computed once
  search  = --trials trials (random search over distill.temperature log-uniform 1-10 and
            distill.alpha_kd uniform 0-1, alpha_ce = 1 - alpha_kd; ASHA on dev accuracy),
            student layers [0, 2, 4], every trial reading the same shards
  default = the same student trained once with the preset's distill settings (T=2, 0.5/0.5)

    python bench/tune.py                                   # the issue's sizes: 10,000 rows, 12 trials
    python bench/tune.py --rows 2000 --trials 4 --max-steps 40 --lock /tmp/distillray-cpu.lock

Prints a table; writes runs/bench-tune/tune.json (and the search's own results under
runs/bench-tune/tune/). Dev accuracy here is the best over each run's evals, as Tune ranks
trials; the best config is chosen on dev, so its margin over the default is optimistic.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import REPO, cpu_lock, machine, save, sst2_or_exit, table  # noqa: E402


def best_dev(history: list[dict], final: dict) -> float:
    accs = [h["dev_accuracy"] for h in history if "dev_accuracy" in h] + [final.get("dev_accuracy", 0.0)]
    return float(max(accs))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000, help="seeded slice of SST-2 train")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--epochs", type=int, default=1, help="student epochs per trial (and for the default)")
    p.add_argument("--max-steps", type=int, default=None, help="cap optimizer steps per trial")
    p.add_argument("--evals", type=int, default=4, help="dev evals per trial (ASHA's rungs)")
    p.add_argument("--teacher-epochs", type=int, default=1)
    p.add_argument("--concurrent", type=int, default=2, help="tune.max_concurrent")
    p.add_argument("--search", default="random", choices=["random", "hyperopt", "optuna"])
    p.add_argument("--output-dir", default=str(REPO / "runs" / "bench-tune"))
    p.add_argument("--lock", default=None, help="exclusive lock file held around each heavy stage")
    p.add_argument("overrides", nargs="*", help="extra config key=value")
    args = p.parse_args()
    sst2_or_exit()

    from distillray import cli, pipeline
    from distillray.config import load_config
    from distillray.distributed.ray_train import FitOptions
    from distillray.preflight import preflight
    from distillray.training.loop import steps_per_epoch, total_steps
    from distillray.tuning.search import run_search

    base = [f"data.max_rows={args.rows}", "data.sample=random", "data.sample_seed=0",
            f"finetune.max_rows={args.rows}", f"finetune.epochs={args.teacher_epochs}", "finetune.lr=1e-4",
            f"train.epochs={args.epochs}", "student.layers=[0,2,4]", "checkpoint.every=0",
            "train.log_every=50", f"run.output_dir={args.output_dir}", "tune.enabled=true",
            f"tune.search={args.search}", f"tune.num_samples={args.trials}", "tune.scheduler=asha",
            f"tune.max_concurrent={args.concurrent}"]
    if args.max_steps:
        base.append(f"train.max_steps={args.max_steps}")
    cfg = load_config("sst2", base + args.overrides)
    n_steps = total_steps(args.rows, cfg.train)
    every = max(1, n_steps // max(1, args.evals))
    cfg = load_config("sst2", base + [f"train.eval_every={every}"] + args.overrides)
    cli.setup_logging("INFO")
    t_all = time.time()
    task = preflight(cfg)
    from distillray.ray_utils import ray_session

    with ray_session(cfg):
        with cpu_lock(args.lock):
            teacher = pipeline.prepare_teacher(task)
            teacher_dir = teacher.dir
        with cpu_lock(args.lock):
            shards = pipeline.precompute(task, teacher_dir)
        checked = pipeline.check_shards(task, shards.shard_dir, teacher_dir)
        with cpu_lock(args.lock):
            t0 = time.time()
            summary = run_search(task, checked, teacher_dir)
            search_s = time.time() - t0
        init_dir = pipeline.student_init_dir(task, teacher_dir, cfg.student.layers)
        with cpu_lock(args.lock):
            t0 = time.time()
            default = pipeline.distill_student(cfg, checked, init_dir, task.dev,
                                               options=FitOptions(name=f"{cfg.run_name}-default"))
            default_s = time.time() - t0
    default_acc = best_dev(default.history, default.final)
    ok = [t for t in summary.trials if t["dev_accuracy"] is not None]
    worst = min(ok, key=lambda t: t["dev_accuracy"])
    bp = summary.best_params
    rows_n = checked.rows
    formula = rows_n * len(summary.trials) * args.epochs
    gain = summary.best_accuracy - default_acc
    rows = [
        ("trials (completed / stopped early by ASHA / failed)",
         f"{len(summary.trials)} ({summary.as_dict()['completed']} / {summary.as_dict()['stopped_early']} / "
         f"{summary.as_dict()['failed']})"),
        ("best dev accuracy", summary.best_accuracy),
        ("worst dev accuracy", worst["dev_accuracy"]),
        ("best distill.temperature", bp.get("distill.temperature", cfg.distill.temperature)),
        ("best distill.alpha_kd (alpha_ce = 1 - alpha_kd)", bp.get("distill.alpha_kd", cfg.distill.alpha_kd)),
        (f"default config dev accuracy (T={cfg.distill.temperature:g}, alpha_kd={cfg.distill.alpha_kd:g})",
         default_acc),
        ("best beats default?", f"{'yes' if gain > 0 else 'no'} ({gain * 100:+.2f} points)"),
        ("search wall time (s)", search_s),
        ("default run wall time (s)", default_s),
        ("total wall time incl. teacher + precompute (s)", time.time() - t_all),
        ("teacher forwards: precompute (once)", rows_n),
        ("teacher forwards avoided: rows x trials x epochs (online KD)", formula),
        ("teacher forwards avoided: rows actually trained (ASHA stops early)", summary.teacher_forwards_avoided),
    ]
    print(f"\nbench/tune.py on {machine()}")
    print(f"{rows_n} seeded SST-2 train rows, dev {len(task.dev)} rows; {args.trials} trials x up to "
          f"{n_steps} steps ({steps_per_epoch(rows_n, cfg.train)} per epoch, batch {cfg.train.batch_size}), "
          f"dev eval every {every} steps; search={args.search}, ASHA\n")
    print(table(rows, ("measure", "value")))
    print(f"\nper trial: {summary.files.get('results')}   plot: {summary.files.get('plot')}")
    save(Path(args.output_dir), "tune", {"summary": summary.as_dict(), "trials": summary.trials,
                                         "default_dev_accuracy": default_acc, "gain": gain,
                                         "timings": {**pipeline.stage_timings(task, teacher, shards, default),
                                                     "search": search_s, "default": default_s},
                                         "args": vars(args), "machine": machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
