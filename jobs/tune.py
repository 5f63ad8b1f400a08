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
from distillray.data.text import LabelSet
from distillray.ray_utils import ray_session
from distillray.tuning.search import check_tune, run_search

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
        task = pipeline.preflight(cfg, need_train=False, teacher=False)
        ds = manifest["dataset"]
        task.labels = LabelSet(raw=ds.get("raw_labels", ds["label_names"]), names=ds["label_names"])
        task.dev = pipeline.load_dev_for_labels(cfg, task.labels)
        manifest = pipeline.check_shards(task, args.shards, teacher_dir)
    else:
        task = pipeline.preflight(cfg)
    with ray_session(cfg):
        pipeline.check_cluster(cfg)
        if args.shards:
            shard_dir = args.shards
        else:
            teacher_dir, _ = pipeline.prepare_teacher(task)
            shard_dir = pipeline.precompute(task, teacher_dir).shard_dir
            manifest = pipeline.check_shards(task, shard_dir, teacher_dir)
        summary = run_search(task, shard_dir, manifest, teacher_dir)
    task.publish()
    logger.info("tune: results in %s", summary.output_dir)
    d = summary.as_dict()
    print(json.dumps({k: d[k] for k in ("trials", "completed", "stopped_early", "failed", "best_accuracy",
                                        "best_params", "restored", "wall_s")} | {"output_dir": summary.output_dir}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
