"""Prune a fine-tuned BERT teacher (attention heads and FFN neurons, physically removed), then
recover it by KD from its cached logit shards: prune then distil, no teacher forward pass.

    python jobs/prune.py --shards runs/demo/logits --config demo prune.heads=0.5 run.output_dir=runs/prune

Writes run.output_dir/pruned (straight after pruning) and, with prune.recover=true (default),
run.output_dir/pruned-kd (trained with the one train loop from the shards, train.* and
distill.*). A head-pruned dir has model_type "pruned_bert": it loads with
AutoModelForSequenceClassification.from_pretrained after `import distillray.models`.
QA shards (`--config squad`) prune a span model: importance from the start/end CE on the
windows' gold positions, recovery from the start/end logits, AutoModelForQuestionAnswering.
"""

from __future__ import annotations

import json
import sys

import _preflight  # noqa: F401  first: one line and exit 2 if this python lacks distillray's dependencies

from distillray import cli, pipeline
from distillray.data.shards import load_manifest
from distillray.errors import ConfigError
from distillray.models import tokenizer_hash
from distillray.preflight import check_cluster, task_from_shards
from distillray.ray_utils import ray_session


@cli.entrypoint
def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--shards", required=True, help="shard dir (holds manifest.json) of the model to prune")
    p.add_argument("--model", default=None, help="model dir to prune; default: the teacher the shards came from")
    args, cfg = cli.parse(p, argv)
    if cfg.prune.heads == 0 and cfg.prune.ffn == 0:
        raise ConfigError("config error: prune.heads and prune.ffn are both 0, nothing to prune; "
                          "fix: e.g. prune.heads=0.5")
    if cfg.tune.enabled:
        raise ConfigError("config error: tune.enabled=true is for jobs/tune.py and jobs/distill.py; "
                          "fix: set tune.enabled=false")
    manifest = load_manifest(args.shards, verify=False)
    teacher_dir = manifest["teacher"]["path"]
    task = task_from_shards(cfg, manifest)
    shards = pipeline.check_shards(task, args.shards, teacher_dir)
    if args.model and tokenizer_hash(args.model) != manifest["tokenizer_hash"]:
        raise ConfigError(f"--model {args.model}: its tokenizer differs from the one the shards in {args.shards} "
                          "were made with; fix: prune a model of the same tokenizer, or precompute with it")
    pruned = pipeline.prune_model(cfg, args.model or teacher_dir, shards, task.dest("pruned"))
    out = {"pruned": pruned.dir, "params_before": pruned.params_before, "params_after": pruned.params_after,
           "layer_heads": pruned.layer_heads, "layer_intermediate": pruned.layer_intermediate}
    if cfg.prune.recover:
        with ray_session(cfg):
            check_cluster(cfg)
            result = pipeline.distill_student(cfg, shards, pruned.dir, task.dev, task.dest("pruned-kd"))
        out |= {"recovered": result.export_dir, "steps": result.steps, **result.final}
    task.publish()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
