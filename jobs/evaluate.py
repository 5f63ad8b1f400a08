"""Evaluate an exported model dir on a dev file: accuracy (macro-F1 for >2 classes), params,
size on disk, latency at batch 1 and throughput at batch 64, as JSON.

    python jobs/evaluate.py --model runs/demo/student --config sst2 [--int8]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from distillray import cli
from distillray.data.text import LabelSet, load_split, resolve_source
from distillray.errors import ConfigError
from distillray.evaluation import evaluate_dir
from distillray.models import model_config


@cli.entrypoint
def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="exported model dir (student or teacher)")
    p.add_argument("--int8", action="store_true", help="also evaluate int8 dynamic quantisation (CPU)")
    p.add_argument("--no-speed", action="store_true", help="accuracy only, skip latency/throughput")
    args, cfg = cli.parse(p, argv)
    if not cfg.data.dev:
        raise ConfigError("config error: data.dev is not set; fix: set data.dev=path/to/dev.tsv")
    mcfg = model_config(args.model)
    names = [mcfg.id2label[i] for i in range(mcfg.num_labels)]
    raw = [str(v) for v in cfg.data.labels] if cfg.data.labels else names
    labels = LabelSet(raw=raw, names=names)
    dev, _ = load_split(resolve_source(cfg.data.dev, Path(cfg.run.output_dir), "dev"), cfg.data, labels,
                        cfg.data.dev_max_rows)
    out = {"fp32": evaluate_dir(args.model, dev.texts, dev.labels, max_length=cfg.data.max_length,
                                speed=not args.no_speed)}
    if args.int8:
        out["int8"] = evaluate_dir(args.model, dev.texts, dev.labels, max_length=cfg.data.max_length,
                                   quantize=True, speed=not args.no_speed)
    print(json.dumps(out if args.int8 else out["fp32"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
