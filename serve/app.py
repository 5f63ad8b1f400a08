"""The Serve application: the one place deployments are bound.

Three ways to start it (all bind 127.0.0.1:8000 unless told otherwise):

    serve run serve/config.yaml                              # Serve config file (names the model dir)
    serve run serve.app:build_app model=runs/demo/student    # same app, model= as an argument
    python serve/app.py --model runs/demo/student [serve.quantize=true serve.port=8001 ...]
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python serve/app.py`: make `serve.*` and `distillray` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray.serve import Application

from distillray import storage
from distillray.config import Config, ServeConfig, load_config
from distillray.errors import ConfigError, ModelError

APP_NAME = "distillray"


def check_model_dir(model: str) -> str:
    """An absolute, loadable exported model dir, or a one-line error naming the fix."""
    from distillray.models import model_config

    if not model:
        raise ConfigError("config error: serve.model is not set; fix: pass model=runs/<name>/student "
                          "(or --model DIR), an exported model dir")
    if storage.is_remote(model):  # s3://, gs://: each replica downloads it (cached per node)
        model_config(model)
        return model
    path = Path(model).expanduser().resolve()
    if not (path / "config.json").exists():
        raise ModelError(f"serve.model={model}: {path} is not an exported model dir (no config.json); "
                         "fix: point at runs/<name>/student or runs/<name>/teacher")
    model_config(path)
    return str(path)


def check_onnx_backend(model: str, cfg: Config) -> None:
    """serve.backend=onnx needs a CPU and the model dir's export (classifier or QA); else a
    one-line error."""
    if cfg.workers.use_gpu:
        raise ConfigError("config error: serve.backend=onnx runs ONNX Runtime on CPU, but workers.use_gpu=true; "
                          "fix: set workers.use_gpu=false, or serve.backend=torch")
    if storage.is_remote(model):  # each replica resolves the export as it downloads the dir
        return
    from distillray.models.onnx import require_onnx

    try:
        require_onnx(model, "int8-dynamic" if cfg.serve.quantize else "fp32")
    except ModelError as e:
        raise ModelError(f"serve.backend=onnx: {e}" + ("" if not cfg.serve.quantize else
                         "; or set serve.quantize=false to serve onnx/model.onnx")) from e


def qa_windows(model: str, cfg: Config) -> dict[str, int] | None:
    """A QA model's windows and decoding (`tasks.qa.answering_windows`: data.* under --config
    squad), checked before Ray starts; None for a classifier."""
    from distillray.models import load_tokenizer, model_config
    from distillray.tasks.qa import answering_windows, is_qa_model

    if not is_qa_model(model):
        return None
    return answering_windows(cfg.data, load_tokenizer(model), model_config(model).max_position_embeddings)


def settings_from(cfg: Config) -> dict[str, Any]:
    s: ServeConfig = cfg.serve
    model = check_model_dir(s.model)
    qa = qa_windows(model, cfg)
    if s.backend == "onnx":
        check_onnx_backend(model, cfg)
    return s.model_dump(mode="json") | {"model": model, "use_gpu": cfg.workers.use_gpu, "qa": qa}


def build_app(args: dict[str, str] | None = None) -> Application:
    """Builder for `serve run`: args are serve.* keys (`model=...`, `quantize=true`) or full dotted
    keys, plus `config=<preset or yaml>`."""
    args = dict(args or {})
    preset = args.pop("config", None)
    overrides = [f"{k if '.' in k else 'serve.' + k}={v}" for k, v in args.items()]
    cfg = load_config(preset, overrides)
    if cfg.serve.high_throughput and os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        from distillray.ray_utils import SERVE_HIGH_THROUGHPUT_EXPORTS

        logging.getLogger("ray.serve").warning(
            "serve.high_throughput=true has no effect under `serve run`, which started Ray already; "
            "start it as %s serve run ...", SERVE_HIGH_THROUGHPUT_EXPORTS)
    return bind(cfg)


def bind(cfg: Config) -> Application:
    """Api (HTTP ingress: validation, retries) -> Classifier (model replicas, batching), or
    QuestionAnswerer for a model dir with a question-answering head (POST /v1/answer)."""
    from serve.api import Api
    from serve.classifier import Classifier
    from serve.qa import QuestionAnswerer

    s = settings_from(cfg)
    deployment = Classifier if s["qa"] is None else QuestionAnswerer
    if s["max_ongoing_requests"] < s["max_batch_size"]:
        raise ConfigError(f"config error: serve.max_ongoing_requests={s['max_ongoing_requests']} is below "
                          f"serve.max_batch_size={s['max_batch_size']}, so batches could never fill; "
                          f"fix: set serve.max_ongoing_requests>={s['max_batch_size']}")
    actor = {"num_cpus": s["cpus_per_replica"], "num_gpus": 1 if cfg.workers.use_gpu else 0,
             "resources": s["resources"]}
    logs = {"enable_access_log": s["access_log"]}
    model = deployment.options(num_replicas=s["num_replicas"], max_ongoing_requests=s["max_ongoing_requests"],
                               ray_actor_options=actor, logging_config=logs).bind(s)
    # the ingress parses JSON and forwards: light, and it must hold enough requests in flight for
    # every model replica's batches to fill
    return Api.options(num_replicas=s["num_replicas"],
                       ray_actor_options={"num_cpus": 0.1, "resources": s["ingress_resources"]},
                       max_ongoing_requests=4 * s["max_ongoing_requests"], logging_config=logs).bind(s, model)


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    from ray import serve

    from distillray import cli
    from serve.local import local_serve

    p = cli.parser("Serve an exported model dir over HTTP with Ray Serve.")
    p.add_argument("--model", default=None, help="exported model dir (student or teacher); same as serve.model=")
    args, cfg = cli.parse(p, argv)
    if args.model:
        cfg = load_config(args.config, [*args.overrides, f"serve.model={args.model}"])
    app = bind(cfg)  # validates before any Ray work
    with local_serve(cfg, cfg.serve.port):  # returns once Serve, and any HAProxy of it, has stopped
        serve.run(app, name=APP_NAME, route_prefix="/")
        # Until here a signal unwinds through local_serve's cleanup as an exception (Ray's SIGTERM
        # handler exits, SIGINT interrupts); from here it ends the wait below.
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        url = f"http://{cfg.serve.host}:{cfg.serve.port}"
        from distillray.tasks.qa import is_qa_model

        route = "answer" if is_qa_model(cfg.serve.model) else "classify"
        print(f"serving {cfg.serve.model} at {url}/v1/{route} (docs: {url}/docs); Ctrl-C stops", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    from distillray import cli
    from serve.local import SUPERVISED_ENV, supervise

    if os.environ.get(SUPERVISED_ENV) != "1":  # this process only waits, then ends what Ray left
        sys.exit(supervise(sys.argv))
    sys.exit(cli.entrypoint(main)())
