"""Search distillation hyperparameters with Ray Tune, every trial on one shared set of teacher logits.

    python jobs/tune.py --config sst2 tune.search=grid \
        'tune.space={"distill.temperature": {"type": "grid", "values": [1, 2, 4, 8]}}'
    python jobs/tune.py --shards runs/cache/logits/<dir> --config sst2 tune.num_samples=20

Writes run.output_dir/tune/: results.csv (a row per trial), best.json (best params, config and
checkpoint) and accuracy_vs_params.png. Without --shards the teacher is prepared and its logits
precomputed (or reused from the cache) first, as jobs/distill.py does. Rerun with the same config
to resume an interrupted search. To train and export the final student with the best config, run
jobs/distill.py tune.enabled=true (it reuses this search), or jobs/train_student.py with the
params from best.json.
"""

from __future__ import annotations

import json
import logging
import sys

import _preflight  # noqa: F401  first: one line and exit 2 if this python lacks distillray's dependencies

from distillray import cli, pipeline
from distillray.config import set_key
from distillray.data.shards import load_manifest
from distillray.preflight import check_cluster, preflight, task_from_shards
from distillray.ray_utils import ray_session
from distillray.tuning.search import run_search
from distillray.tuning.space import check_tune

logger = logging.getLogger("distillray.jobs.tune")


@cli.entrypoint
def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--shards", default=None, help="a finished shard dir (default: precompute as distill.py does)")
    args, cfg = cli.parse(p, argv)
    cfg = set_key(cfg, "tune.enabled", True)
    if args.shards:
        manifest = load_manifest(args.shards, verify=False)
        teacher_dir = manifest["teacher"]["path"]
        check_tune(cfg, teacher_dir)
        task = task_from_shards(cfg, manifest, need_dev=True)
        shards = pipeline.check_shards(task, args.shards, teacher_dir)
    else:
        task = preflight(cfg)
    with ray_session(cfg):
        check_cluster(cfg)
        if not args.shards:
            teacher_dir = pipeline.prepare_teacher(task).dir
            shards = pipeline.check_shards(task, pipeline.precompute(task, teacher_dir).shard_dir, teacher_dir)
        summary = run_search(task, shards, teacher_dir)
    task.publish()
    logger.info("tune: results in %s", summary.output_dir)
    d = summary.as_dict()
    print(json.dumps({k: d[k] for k in ("trials", "completed", "stopped_early", "failed", "metric", "best_score", "best_accuracy",
                                        "best_params", "restored", "wall_s")} | {"output_dir": summary.output_dir}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
