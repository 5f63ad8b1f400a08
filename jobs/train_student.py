"""Distil a student from a teacher-logit shard dir (made by jobs/precompute_logits.py) with
Ray Train + DeepSpeed, and export it to run.output_dir/student.

    python jobs/train_student.py --shards runs/cache/logits/<dir> --config sst2 distill.temperature=4

The student is initialised from the teacher the shards were computed with (recorded in their
manifest), taking `student.layers`; `--teacher DIR` names it explicitly and must match.
"""

from __future__ import annotations

import json
import sys

import _preflight  # noqa: F401  first: one line and exit 2 if this python lacks distillray's dependencies

from distillray import cli, pipeline
from distillray.data.shards import load_manifest
from distillray.errors import ConfigError
from distillray.preflight import check_cluster, task_from_shards
from distillray.ray_utils import ray_session


@cli.entrypoint
def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--shards", required=True, help="shard dir (holds manifest.json)")
    p.add_argument("--teacher", default=None, help="teacher dir the shards came from (default: from the manifest)")
    args, cfg = cli.parse(p, argv)
    manifest = load_manifest(args.shards, verify=False)
    teacher_dir = args.teacher or manifest["teacher"]["path"]
    if cfg.tune.enabled:
        raise ConfigError("config error: tune.enabled=true is for jobs/tune.py and jobs/distill.py; "
                          "fix: set tune.enabled=false")
    task = task_from_shards(cfg, manifest)
    shards = pipeline.check_shards(task, args.shards, teacher_dir)
    init_dir = pipeline.student_init_dir(task, teacher_dir, cfg.student.layers)
    with ray_session(cfg):
        check_cluster(cfg)
        init_dir, _ = pipeline.general_distill(cfg, shards, init_dir, task.dest("work", "student-general"))
        result = pipeline.distill_student(cfg, shards, init_dir, task.dev, task.dest("student"))
    task.publish()
    print(json.dumps({"student": result.export_dir, "steps": result.steps, "resumes": result.resumes,
                      **result.final}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
