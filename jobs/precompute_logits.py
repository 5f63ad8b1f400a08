"""Precompute a teacher's logits into Arrow shards with Ray Data (resumable, cached by inputs).

    python jobs/precompute_logits.py --config sst2 teacher.model=runs/sst2/teacher
    ray job submit --working-dir . -- python jobs/precompute_logits.py --config sst2 ...
"""

from __future__ import annotations

import json
import logging
import sys

import _preflight  # noqa: F401  first: one line and exit 2 if this python lacks distillray's dependencies

from distillray import cli, pipeline
from distillray.preflight import check_cluster, preflight
from distillray.ray_utils import ray_session

logger = logging.getLogger("distillray.jobs.precompute")


@cli.entrypoint
def main(argv: list[str] | None = None) -> int:
    _, cfg = cli.parse(cli.parser(__doc__.splitlines()[0]), argv)
    task = preflight(cfg, need_dev=False)
    teacher_dir, finetuned = pipeline.teacher_init_dir(task)
    if not finetuned:
        logger.warning("teacher.model=%s is not fine-tuned for the labels %s: its logits come from a "
                       "freshly initialised head (fine for smoke runs; for real work run "
                       "jobs/finetune_teacher.py first, or jobs/distill.py)", cfg.teacher.model,
                       task.labels.names if task.labels else "extractive QA")
    with ray_session(cfg):
        check_cluster(cfg)
        res = pipeline.precompute(task, teacher_dir)
    task.publish()
    print(json.dumps({"shard_dir": res.shard_dir, "rows": res.manifest["rows"], "sources": res.manifest.get("sources"),
                      "shards": len(res.manifest["shards"]), "rows_computed": res.rows_computed,
                      "reused": res.reused, "seconds": round(res.seconds, 2), "bytes_per_row": round(res.bytes_per_row, 1)}
                     | {k: res.manifest[k] for k in ("bytes_per_window", "logit_bytes_per_window") if k in res.manifest}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
