"""Fine-tune the teacher base on the task's labels (the one train loop, hard labels only) and
export it to run.output_dir/teacher as a plain Hugging Face model dir.

    python jobs/finetune_teacher.py --config sst2 finetune.epochs=2
"""

from __future__ import annotations

import json
import sys

import _preflight  # noqa: F401  first: one line and exit 2 if this python lacks distillray's dependencies

from distillray import cli, pipeline
from distillray.preflight import check_cluster, preflight
from distillray.ray_utils import ray_session


@cli.entrypoint
def main(argv: list[str] | None = None) -> int:
    _, cfg = cli.parse(cli.parser(__doc__.splitlines()[0]), argv)
    task = preflight(cfg)
    init_dir, _ = pipeline.teacher_init_dir(task)
    with ray_session(cfg):
        check_cluster(cfg)
        teacher = pipeline.finetune_teacher(task, init_dir)
    task.publish()
    print(json.dumps({"teacher": teacher.dir, "steps": teacher.fit.steps, **teacher.fit.final}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
