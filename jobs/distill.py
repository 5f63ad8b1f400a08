"""The main job: from a labelled dataset to a distilled, evaluated, exported student.

    fine-tune teacher (unless already fine-tuned) -> precompute logits (cached) ->
    [Tune search] -> distil student -> evaluate teacher and student on dev -> export, report

    python jobs/distill.py --config demo
    ray job submit --working-dir . -- python jobs/distill.py --config sst2 run.output_dir=/shared/runs/x
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys

import _preflight  # noqa: F401  first: one line and exit 2 if this python lacks distillray's dependencies

from distillray import cli, pipeline
from distillray.preflight import check_cluster, preflight
from distillray.ray_utils import ray_session

logger = logging.getLogger("distillray.jobs.distill")


@cli.entrypoint
def main(argv: list[str] | None = None) -> int:
    _, cfg = cli.parse(cli.parser(__doc__.splitlines()[0]), argv)
    task = preflight(cfg)
    with ray_session(cfg):
        check_cluster(cfg)
        teacher = pipeline.prepare_teacher(task)
        shards = pipeline.precompute(task, teacher.dir)
        checked = pipeline.check_shards(task, shards.shard_dir, teacher.dir)
        tune_summary = None
        if cfg.tune.enabled:
            from distillray.tuning.search import run_search

            tune_summary = run_search(task, checked, teacher.dir)
            cfg = tune_summary.best_config
            task = dataclasses.replace(task, cfg=cfg)
        init_dir = pipeline.student_init_dir(task, teacher.dir, cfg.student.layers)
        init_dir, _ = pipeline.general_distill(cfg, checked, init_dir, task.dest("work", "student-general"))
        student = pipeline.distill_student(cfg, checked, init_dir, task.dev, task.dest("student"))
    report = pipeline.finish(task, teacher, student, shards, tune_summary)
    logger.info("report: %s", task.dest("report.md"))
    scores = {f"{who}_{m}": report[who][m] for who in ("teacher", "student") for m in ("accuracy", "exact_match", "f1")
              if m in report[who]}
    print(json.dumps({k: report[k] for k in ("metric", "retention", "speedup")} | scores | {"output_dir": task.dest()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
