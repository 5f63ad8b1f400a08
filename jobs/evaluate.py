"""Evaluate an exported model dir on a dev file: accuracy (macro-F1 for >2 classes), params,
size on disk, latency at batch 1 and throughput at batch 64, as JSON.

    python jobs/evaluate.py --model runs/demo/student --config sst2 [--int8] [--onnx] [--baseline runs/demo/teacher]

With --baseline, both models (and the int8 one) are timed side by side, in alternation, and the
output adds `retention` and `speedup` against the baseline, and `vs_baseline`: the dev examples
only one of the two gets right and McNemar's exact p-value (is an accuracy gap beyond chance?).
With --onnx, the model's ONNX export (written by jobs/export_onnx.py) also runs in ONNX Runtime:
`onnx`, and with --int8 `onnx_int8` (dynamic) and `onnx_int8_static`, timed with the others
(for data.task=qa: SQuAD EM/F1 from the ONNX start/end logits, the same windows and decoding).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import _preflight  # noqa: F401  first: one line and exit 2 if this python lacks distillray's dependencies

from distillray import cli
from distillray.data.text import LabelSet, load_split, resolve_source
from distillray.errors import ConfigError
from distillray.evaluation import evaluate_dirs
from distillray.models import model_config


@cli.entrypoint
def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="exported model dir (student or teacher)")
    p.add_argument("--int8", action="store_true", help="also evaluate int8 dynamic quantisation (CPU)")
    p.add_argument("--onnx", action="store_true", help="also evaluate the ONNX export in ONNX Runtime "
                                                       "(run jobs/export_onnx.py first)")
    p.add_argument("--no-speed", action="store_true", help="accuracy only, skip latency/throughput")
    p.add_argument("--baseline", default=None, help="a model dir to compare with (e.g. the teacher): adds "
                                                     "retention and speedup, timed side by side")
    args, cfg = cli.parse(p, argv)
    if not cfg.data.dev:
        raise ConfigError("config error: data.dev is not set; fix: set data.dev=path/to/dev.tsv")
    mcfg = model_config(args.model)
    if args.baseline:
        model_config(args.baseline)  # a bad dir fails here, before the data is read
    if cfg.data.task == "qa":
        return _evaluate_qa(args, cfg)
    onnx = _onnx_variants(args)
    names = [mcfg.id2label[i] for i in range(mcfg.num_labels)]
    raw = [str(v) for v in cfg.data.labels] if cfg.data.labels else names
    labels = LabelSet(raw=raw, names=names)
    dev, _ = load_split(resolve_source(cfg.data.dev, Path(cfg.run.output_dir), "dev"), cfg.data, labels,
                        cfg.data.dev_max_rows)
    models = {"fp32": args.model} | ({"int8": args.model} if args.int8 else {}) | {n: args.model for n in onnx} \
        | ({"baseline": args.baseline} if args.baseline else {})
    out = evaluate_dirs(models, dev.inputs(), dev.labels, names if args.baseline else None, quantized=("int8",),
                        max_length=cfg.data.max_length, speed=not args.no_speed,
                        compare_to="baseline" if args.baseline else None, onnx=onnx)
    if args.baseline:
        b = out["baseline"]
        for name in [n for n in out if n != "baseline"]:
            m = cfg.data.metric  # retention on the headline metric
            out[name]["retention"] = out[name][m] / b[m] if b[m] else None
            if not args.no_speed:
                out[name]["speedup"] = out[name]["throughput"] / b["throughput"]
    print(json.dumps(out if len(out) > 1 else out["fp32"], indent=2))
    return 0


def _onnx_variants(args) -> dict[str, str]:
    """--onnx's {name: variant} (the int8 ones too with --int8), each export checked to exist
    before any data is read."""
    onnx = ({"onnx": "fp32"} | ({"onnx_int8": "int8-dynamic", "onnx_int8_static": "int8-static"} if args.int8 else {})
            if args.onnx else {})
    if onnx:
        from distillray.models.onnx import require_onnx  # onnxruntime loads slowly: only when asked for

        for variant in onnx.values():
            require_onnx(args.model, variant)
    return onnx


def _evaluate_qa(args, cfg) -> int:
    """data.task=qa: the official SQuAD v1.1 EM/F1 of the model (and the int8 one, and the
    baseline: retention on F1, speed-up), over every window of every dev question."""
    from distillray.evaluation import evaluate_qa_dirs
    from distillray.tasks.qa import load_qa_split

    from distillray.tasks.qa import is_qa_model

    if not is_qa_model(args.model):
        raise ConfigError(f"config error: {args.model} has no question-answering head but data.task=qa; "
                          "fix: evaluate a QA model dir, or use the config it was trained with")
    onnx = _onnx_variants(args)
    d = cfg.data
    models = {"fp32": args.model} | ({"int8": args.model} if args.int8 else {}) | {n: args.model for n in onnx} \
        | ({"baseline": args.baseline} if args.baseline else {})
    out = evaluate_qa_dirs(models, load_qa_split(d.dev, d.dev_max_rows), quantized=("int8",), max_length=d.max_length,
                           doc_stride=d.doc_stride, n_best=d.n_best, max_answer_length=d.max_answer_length,
                           speed=not args.no_speed, onnx=onnx)
    if args.baseline:
        b = out["baseline"]
        for name in [n for n in out if n != "baseline"]:
            out[name]["retention"] = out[name]["f1"] / b["f1"] if b["f1"] else None
            if not args.no_speed:
                out[name]["speedup"] = out[name]["throughput"] / b["throughput"]
    print(json.dumps(out if len(out) > 1 else out["fp32"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
