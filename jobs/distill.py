"""The main job: from a labelled dataset to a distilled, evaluated, exported student.

    fine-tune teacher (unless already fine-tuned) -> precompute logits (cached) ->
    [Tune search] -> distil student -> evaluate teacher and student on dev -> export, report

    python jobs/distill.py --config demo
    ray job submit --working-dir . -- python jobs/distill.py --config sst2 run.output_dir=/shared/runs/x
"""

from __future__ import annotations

import json
import logging
import sys

import _preflight  # noqa: F401  first: one line and exit 2 if this python lacks distillray's dependencies

from distillray import cli, pipeline
from distillray.ray_utils import ray_session

logger = logging.getLogger("distillray.jobs.distill")


@cli.entrypoint
def main(argv: list[str] | None = None) -> int:
    _, cfg = cli.parse(cli.parser(__doc__.splitlines()[0]), argv)
    task = pipeline.preflight(cfg)
    with ray_session(cfg):
        pipeline.check_cluster(cfg)
        teacher_dir, teacher_fit = pipeline.prepare_teacher(task)
        shards = pipeline.precompute(task, teacher_dir)
        manifest = pipeline.check_shards(task, shards.shard_dir, teacher_dir)
        tune_summary = None
        if cfg.tune.enabled:
            from distillray.tuning.search import run_search

            tune_summary = run_search(task, shards.shard_dir, manifest, teacher_dir)
            cfg = task.cfg = tune_summary.best_config
        init_dir = pipeline.student_init_dir(task, teacher_dir, cfg.student.layers)
        student_fit = pipeline.distill_student(task, shards.shard_dir, manifest, init_dir,
                                               task.dest("student"))
    report = pipeline.finish(task, teacher_fit, student_fit, shards, tune_summary)
    logger.info("report: %s", task.dest("report.md"))
    print(json.dumps({k: report[k] for k in ("retention", "speedup")} | {
        "teacher_accuracy": report["teacher"]["accuracy"], "student_accuracy": report["student"]["accuracy"],
        "output_dir": task.dest()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
