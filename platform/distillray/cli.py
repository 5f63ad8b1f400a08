"""What every job's `main(argv)` shares: `--config`, `key=value` overrides, `--print-config`,
logging set up once, and user errors turned into one line on stderr with exit code 2."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from typing import Callable

from distillray.config import Config, dump_yaml, list_presets, load_config
from distillray.errors import UserError

EPILOG = """overrides: any config key as key=value, e.g.
  data.train=../shared/data/sst2/train.tsv distill.temperature=4 student.layers=[0,2,4]
presets: {presets} (or a path to a YAML file); --print-config shows every key."""


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                epilog=EPILOG.format(presets=", ".join(list_presets())),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", default=None, help="preset name or YAML file (default: built-in defaults)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, Config]:
    """Parse argv and build the validated config; with --print-config, print it and exit 0."""
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(dump_yaml(cfg), end="")
        raise SystemExit(0)
    setup_logging(cfg.run.log_level)
    return args, cfg


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)
    for noisy in ("transformers", "datasets", "DeepSpeed", "deepspeed", "filelock", "urllib3", "onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


def entrypoint(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a job's main: a `UserError` becomes one line on stderr and exit code 2."""
    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            return e.exit_code
    return wrapped

