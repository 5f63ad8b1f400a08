"""Export a model dir to ONNX for ONNX Runtime (CPU, edge): fp32 plus int8 dynamic and static.

    python jobs/export_onnx.py --model runs/demo/student --config sst2 [--no-int8]
    python jobs/export_onnx.py --model runs/mrpc/student --config mrpc        # sentence pairs
    python jobs/export_onnx.py --model runs/squad/student --config squad      # extractive QA

Writes <model>/onnx/model.onnx (dynamic batch and sequence axes; inputs input_ids and
attention_mask, plus token_type_ids for pair and QA models; output logits, or start_logits and
end_logits for QA; ONNX Runtime's fused Attention, SkipLayerNormalization and BiasGelu kernels
unless --no-fuse), checks on dev rows (QA: every window of the dev questions) that its logits are within 1e-4 of torch's
(exit 2 with the figure if not), then writes model_int8_dynamic.onnx and model_int8_static.onnx
(calibrated on --calibration-rows training rows) and prints, as JSON, how often each int8 model
predicts the fp32 class (QA: decodes the fp32 answer span). Evaluate them with jobs/evaluate.py --onnx.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import _preflight  # noqa: F401  first: one line and exit 2 if this python lacks distillray's dependencies

from distillray import cli
from distillray.data.text import LabelSet, load_split, resolve_source, subset
from distillray.errors import ConfigError
from distillray.models import model_config


@cli.entrypoint
def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="exported model dir (student or teacher)")
    p.add_argument("--no-int8", action="store_true", help="fp32 only, no int8 variants")
    p.add_argument("--no-fuse", action="store_true",
                   help="standard ONNX operators only (for runtimes other than ONNX Runtime): no fused "
                        "Attention, SkipLayerNormalization or BiasGelu kernels")
    p.add_argument("--parity-rows", type=int, default=500, help="dev rows for the parity and agreement checks")
    p.add_argument("--calibration-rows", type=int, default=300,
                   help="training rows (a seeded random sample) that calibrate int8 static")
    args, cfg = cli.parse(p, argv)
    if not cfg.data.dev or not cfg.data.train:
        raise ConfigError("config error: data.train and data.dev must be set (calibration and parity rows); "
                          "fix: e.g. --config sst2, or data.train=... data.dev=...")
    mcfg = model_config(args.model)  # a bad dir fails here, before the data is read
    from distillray.tasks.classification import model_task
    from distillray.tasks.qa import is_qa_model

    if is_qa_model(args.model):
        return _export_qa(args, cfg)
    if model_task(mcfg) != cfg.data.task:
        raise ConfigError(f"config error: {args.model} is a {model_task(mcfg)}-text model but data.task="
                          f"{cfg.data.task}; fix: pass the config it was trained with (e.g. --config mrpc)")
    names = [mcfg.id2label[i] for i in range(mcfg.num_labels)]
    labels = LabelSet(raw=[str(v) for v in cfg.data.labels] if cfg.data.labels else names, names=names)
    work = Path(cfg.run.output_dir)
    dev, _ = load_split(resolve_source(cfg.data.dev, work, "dev"), cfg.data, labels, args.parity_rows)
    calibration = None
    if not args.no_int8:
        train, _ = load_split(resolve_source(cfg.data.train, work, "train"), cfg.data, labels)
        calibration = subset(train, args.calibration_rows, "random", cfg.data.sample_seed).inputs()

    from distillray.models.onnx import export_variants  # onnxruntime and the exporter load slowly

    out = export_variants(args.model, dev.inputs(), calibration, cfg.data.max_length, fuse=not args.no_fuse)
    print(json.dumps(out, indent=2))
    return 0


def _export_qa(args, cfg) -> int:
    """A QA model: parity over the windows of the first --parity-rows questions of data.dev
    (SQuAD v1.1 JSON), int8 static calibrated on --calibration-rows random ones of data.train;
    windows as Serve reads them (`tasks.qa.answering_windows`: data.* under --config squad)."""
    import random

    from distillray.models import load_tokenizer
    from distillray.models.onnx import export_qa_variants
    from distillray.tasks.qa import answering_windows, read_squad

    windows = answering_windows(cfg.data, load_tokenizer(args.model),
                                model_config(args.model).max_position_embeddings)
    dev = read_squad(cfg.data.dev, args.parity_rows)
    calibration = None
    if not args.no_int8:
        train = read_squad(cfg.data.train)
        picked = random.Random(cfg.data.sample_seed).sample(train, min(args.calibration_rows, len(train)))
        calibration = ([ex.question for ex in picked], [ex.context for ex in picked])
    out = export_qa_variants(args.model, [ex.question for ex in dev], [ex.context for ex in dev], calibration,
                             max_length=windows["max_length"], doc_stride=windows["doc_stride"],
                             max_answer_length=windows["max_answer_length"], fuse=not args.no_fuse)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
