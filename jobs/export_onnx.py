"""Export a model dir to ONNX for ONNX Runtime (CPU, edge): fp32 plus int8 dynamic and static.

    python jobs/export_onnx.py --model runs/demo/student --config sst2 [--no-int8]

Writes <model>/onnx/model.onnx (dynamic batch and sequence axes; inputs input_ids and
attention_mask, output logits), checks on dev rows that its logits are within 1e-4 of torch's
(exit 2 with the figure if not), then writes model_int8_dynamic.onnx and model_int8_static.onnx
(calibrated on --calibration-rows training rows) and prints, as JSON, how often each int8 model
predicts the fp32 class. Evaluate them with jobs/evaluate.py --onnx.
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
    p.add_argument("--parity-rows", type=int, default=500, help="dev rows for the parity and agreement checks")
    p.add_argument("--calibration-rows", type=int, default=300,
                   help="training rows (a seeded random sample) that calibrate int8 static")
    args, cfg = cli.parse(p, argv)
    if not cfg.data.dev or not cfg.data.train:
        raise ConfigError("config error: data.train and data.dev must be set (calibration and parity rows); "
                          "fix: e.g. --config sst2, or data.train=... data.dev=...")
    mcfg = model_config(args.model)  # a bad dir fails here, before the data is read
    from distillray.tasks.classification import model_task

    if model_task(mcfg) != "single" or cfg.data.task != "single":
        raise ConfigError(f"config error: {args.model} is a sentence-pair model (or data.task={cfg.data.task}); the "
                          "ONNX export has no token_type_ids input, so it covers single-text models only; fix: "
                          "serve and evaluate pair models with torch (serve/app.py, jobs/evaluate.py)")
    names = [mcfg.id2label[i] for i in range(mcfg.num_labels)]
    labels = LabelSet(raw=[str(v) for v in cfg.data.labels] if cfg.data.labels else names, names=names)
    work = Path(cfg.run.output_dir)
    dev, _ = load_split(resolve_source(cfg.data.dev, work, "dev"), cfg.data, labels, args.parity_rows)
    calibration = None
    if not args.no_int8:
        train, _ = load_split(resolve_source(cfg.data.train, work, "train"), cfg.data, labels)
        calibration = subset(train, args.calibration_rows, "random", cfg.data.sample_seed).texts

    from distillray.models.onnx import export_variants  # onnxruntime and the exporter load slowly

    out = export_variants(args.model, dev.texts, calibration, cfg.data.max_length)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
