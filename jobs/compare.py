"""Compare distillation with pruning and quantisation: teacher, student, pruned teacher (before and
after KD recovery), pruned student, and their int8 (torch dynamic; ONNX Runtime dynamic and
static) and ONNX fp32 forms, on the same dev rows, timed side by side.

    python jobs/compare.py --shards runs/demo/logits --student runs/demo/student --config demo \
        compare.latency_budget_ms=10 compare.size_budget_mb=40 run.output_dir=runs/compare

Writes run.output_dir/compare/{compare.md,compare.json,pareto.png}: one table, the accuracy against
throughput Pareto plot (point area: bytes), and the best variant under each budget. The pruned
models (prune.*; KD recovery from the shards with train.*/distill.* when prune.recover) go to
run.output_dir/pruned-{teacher,student}[-kd]; ONNX exports go to each model dir's onnx/.
"""

from __future__ import annotations

import json
import sys

import _preflight  # noqa: F401  first: one line and exit 2 if this python lacks distillray's dependencies

from distillray import cli, pipeline
from distillray.data.shards import load_manifest
from distillray.errors import ConfigError
from distillray.models import model_config, tokenizer_hash
from distillray.preflight import check_cluster, task_from_shards
from distillray.ray_utils import ray_session

REFERENCE = "teacher torch fp32"


@cli.entrypoint
def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--shards", required=True, help="the teacher's logit shard dir (holds manifest.json)")
    p.add_argument("--student", required=True, help="the distilled student's model dir")
    p.add_argument("--teacher", default=None, help="the teacher's model dir; default: the one the shards name")
    args, cfg = cli.parse(p, argv)
    c = cfg.compare
    if c.prune and cfg.prune.heads == 0 and cfg.prune.ffn == 0:
        raise ConfigError("config error: compare.prune=true but prune.heads and prune.ffn are both 0; "
                          "fix: e.g. prune.heads=0.5, or compare.prune=false")
    if c.onnx and not cfg.data.train:
        raise ConfigError("config error: compare.onnx=true needs data.train (rows that calibrate int8 static); "
                          "fix: set data.train=..., or compare.onnx=false")
    manifest = load_manifest(args.shards, verify=False)
    if "qa" in (cfg.data.task, manifest.get("task")):
        raise ConfigError(f"--shards {args.shards}: jobs/compare.py compares classifiers (accuracy, the dev rows' "
                          "classes); fix: for QA models use jobs/prune.py and jobs/evaluate.py --onnx "
                          "(SQuAD EM/F1, docs/qa.md)")
    teacher = args.teacher or manifest["teacher"]["path"]
    task = task_from_shards(cfg, manifest, need_dev=True)
    shards = pipeline.check_shards(task, args.shards, teacher)
    scfg = model_config(args.student)  # a bad dir fails here, before any work
    if [scfg.id2label[i] for i in range(scfg.num_labels)] != task.labels.names:
        raise ConfigError(f"--student {args.student}: its labels {list(scfg.id2label.values())} differ from the "
                          f"shards' {task.labels.names}; fix: pass the student distilled from these shards")
    if c.onnx and cfg.data.task != "single":
        raise ConfigError("config error: compare.onnx=true with data.task=pair: the comparison's ONNX variants "
                          "are timed on single texts; fix: compare.onnx=false")
    if c.prune and cfg.prune.recover and tokenizer_hash(args.student) != manifest["tokenizer_hash"]:
        raise ConfigError(f"--student {args.student}: its tokenizer differs from the shards', so KD from them "
                          "cannot recover it once pruned; fix: pass that teacher's shards, or prune.recover=false")
    calibration: list[str] = []
    if c.onnx:
        from distillray.data.text import load_split, resolve_source, subset

        train, _ = load_split(resolve_source(cfg.data.train, task.out, "train"), cfg.data, task.labels)
        calibration = subset(train, c.calibration_rows, "random", cfg.data.sample_seed).texts

    models = {"teacher": teacher, "student": args.student}
    if c.prune:
        models["pruned teacher"] = pipeline.prune_model(cfg, teacher, shards, task.dest("pruned-teacher")).dir
        pruned_student = pipeline.prune_model(cfg, args.student, shards, task.dest("pruned-student")).dir
        if cfg.prune.recover:
            from distillray.distributed.ray_train import FitOptions

            with ray_session(cfg):
                check_cluster(cfg)
                for name, init in (("pruned teacher + KD", models["pruned teacher"]),
                                   ("pruned student + KD", pruned_student)):
                    slug = name.replace(" + ", "-").replace(" ", "-").lower()
                    models[name] = pipeline.distill_student(cfg, shards, init, task.dev, task.dest(slug),
                                                            FitOptions(name=f"{cfg.run_name}-{slug}")).export_dir
        else:
            models["pruned student"] = pruned_student

    from distillray.compare import evaluate_variants, export_all, write_comparison

    onnx_models = [m for m in models if m != "pruned teacher"] if c.onnx else []
    forms, exports, notes = export_all(models, onnx_models, task.dev.texts[:c.parity_rows], calibration,
                                       cfg.data.max_length)
    if c.prune and cfg.prune.recover:  # the unrecovered pruned teacher: the recovery's starting point, torch only
        forms["pruned teacher"] = ["torch fp32"]
    evals = evaluate_variants(models, forms, task.dev.texts, task.dev.labels, task.labels.names,
                              cfg.data.max_length, REFERENCE)
    result = write_comparison(task.out / "compare", evals, REFERENCE, c.latency_budget_ms, c.size_budget_mb, notes,
                              {"models": models, "onnx_exports": exports})
    task.publish()
    print(json.dumps({k: result[k] for k in result if k not in ("variants", "onnx_exports")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
