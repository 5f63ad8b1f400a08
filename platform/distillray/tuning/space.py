"""Tune search spaces as config data: the pure part of a search, which preflight imports.

Spaces use the config's dotted keys (`tune.space`, see `distillray.config.SpaceSpec`);
`distill.alpha_ce` follows `1 - distill.alpha_kd` unless it is searched itself. Here: the space
and its Tune domains, decoding and applying a trial's params, every check a search can fail on
user input (`check_tune`, before Ray starts), trial resources and trial names. Nothing here
starts a trial or imports the pipeline; the trial body is `tuning.trial`, the Tuner driver
`tuning.search`, the results writer `tuning.results`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from distillray.config import Config, SpaceSpec, TuneConfig, apply_overrides
from distillray.errors import ConfigError

logger = logging.getLogger(__name__)

METRIC = "dev_accuracy"  # the objective of a search whose headline metric is accuracy
MODE = "max"
DEFAULT_RANDOM_SAMPLES = 12
SEARCHERS = {"hyperopt": "hyperopt", "optuna": "optuna"}  # search -> the package it needs


# ---------------------------------------------------------------------------------------------
# Space: config dotted keys <-> Tune domains


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool))


def _encoded(spec: SpaceSpec) -> bool:
    """Lists (student.layers) and nulls travel as JSON strings: every searcher (Optuna's
    categorical, for one) takes strings, and trial names stay readable."""
    return spec.values is not None and not all(_is_scalar(v) for v in spec.values)


def objective(cfg: Config) -> str:
    """The dev metric a search ranks trials by: the run's headline metric (data.metric), as the
    loop reports it: dev_accuracy, or dev_f1 (positive-class F1; SQuAD F1 for data.task=qa)."""
    return "dev_f1" if cfg.data.metric == "f1" else METRIC


def num_samples(tune: TuneConfig) -> int:
    """Trials to run: tune.num_samples; by default each grid point once, or 12 sampled trials."""
    if tune.num_samples is not None:
        return tune.num_samples
    return 1 if tune.search == "grid" else DEFAULT_RANDOM_SAMPLES


def build_param_space(tune: TuneConfig) -> dict[str, Any]:
    """The Tune param_space: one domain per `tune.space` key, keyed by the same dotted key."""
    from ray import tune as ray_tune

    space: dict[str, Any] = {}
    for key, spec in tune.space.items():
        if spec.type == "loguniform":
            space[key] = ray_tune.loguniform(spec.low, spec.high)
        elif spec.type == "uniform":
            space[key] = ray_tune.uniform(spec.low, spec.high)
        else:
            values = [json.dumps(v) for v in spec.values] if _encoded(spec) else list(spec.values)
            # search=grid runs every value of a `choice` too: the grid is the whole space
            grid = spec.type == "grid" or tune.search == "grid"
            space[key] = ray_tune.grid_search(values) if grid else ray_tune.choice(values)
    return space


def decode_params(tune: TuneConfig, trial_config: dict[str, Any]) -> dict[str, Any]:
    """A trial's params as config values (JSON-encoded choices decoded), in space order."""
    out = {}
    for key, spec in tune.space.items():
        if key in trial_config:
            v = trial_config[key]
            out[key] = json.loads(v) if _encoded(spec) and isinstance(v, str) else v
    return out


def apply_params(cfg: Config, params: dict[str, Any]) -> Config:
    """`cfg` with a trial's params set (validated). alpha_ce follows 1 - alpha_kd unless it is
    searched too, so the two loss weights always sum to 1 as in the defaults."""
    params = dict(params)
    if "distill.alpha_kd" in params and "distill.alpha_ce" not in params:
        params["distill.alpha_ce"] = round(1.0 - float(params["distill.alpha_kd"]), 12)
    tree = apply_overrides(cfg.to_dict(), [f"{k}={json.dumps(v)}" for k, v in params.items()])
    return Config.from_dict(tree)


@dataclass(frozen=True)
class TrialResources:
    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float


def trial_resources(tune: TuneConfig) -> TrialResources:
    """One CPU worker per trial; with GPUs, a fraction of one GPU, or N whole GPUs as N workers."""
    g = tune.gpus_per_trial
    workers = int(g) if g >= 1 else 1
    return TrialResources(workers, tune.cpus_per_trial / workers, g / workers if g else 0.0)


def trial_config(cfg: Config, params: dict[str, Any], output_dir: str) -> Config:
    """The config a trial trains with: the params, the trial's resources, its own output dir.

    Worker-error retries are off (workers.max_failures=0): a trial's errors are its
    hyperparameters' (NaN, OOM) and recur on retry; node preemptions are still retried by Ray
    Train's separate preemption budget.
    """
    res = trial_resources(cfg.tune)
    c = apply_params(cfg, params).to_dict()
    c["workers"].update(num_workers=res.num_workers, cpus_per_worker=res.cpus_per_worker,
                        use_gpu=res.gpus_per_worker > 0, max_failures=0)
    c["run"]["output_dir"] = output_dir
    return Config.from_dict(c)


def layer_choices(cfg: Config) -> list[list[int] | None]:
    """Every `student.layers` a trial may use (None: the default every-other-layer student)."""
    spec = cfg.tune.space.get("student.layers")
    return list(spec.values) if spec is not None else [cfg.student.layers]


def layers_key(layers: list[int] | None) -> str:
    return json.dumps(layers)


# ---------------------------------------------------------------------------------------------
# Validation, before any Ray work


def _numeric(cfg: Config, key: str) -> bool:
    section, name = key.split(".", 1)
    value = getattr(getattr(cfg, section), name)
    return isinstance(value, float) and not isinstance(value, bool)


def check_tune(cfg: Config, teacher: str | None = None) -> None:
    """Every check a search can fail on user input, with a one-line ConfigError: the space
    against the search algorithm, each reachable value against the config's own rules, layer
    choices against the teacher, and the trial's resources against the machine."""
    tune = cfg.tune
    if not tune.space:
        raise ConfigError("config error: tune.space is empty, so there is nothing to search; fix: "
                          "e.g. tune.space.distill.temperature={type: loguniform, low: 1, high: 10}")
    for key, spec in tune.space.items():
        where = f"tune.space.{key}"
        if spec.type in ("loguniform", "uniform") and not _numeric(cfg, key):
            raise ConfigError(
                f"config error: {where} is {spec.type} but {key} is not a real number; fix: "
                f"use {{type: choice, values: [...]}} (or grid) for {key}")
        if tune.search == "grid" and spec.type in ("loguniform", "uniform"):
            raise ConfigError(
                f"config error: tune.search=grid but {where} is {spec.type} (a grid needs values); "
                f"fix: set {where}={{type: grid, values: [...]}}, drop it with {where}=null, or "
                "set tune.search=random")
        if tune.search in SEARCHERS and spec.type == "grid":
            raise ConfigError(
                f"config error: {where} is a grid, which tune.search={tune.search} cannot sample; "
                f"fix: set {where}.type=choice, or tune.search=grid (or random)")
        samples = [spec.low, spec.high] if spec.type in ("loguniform", "uniform") else spec.values
        for v in samples:
            try:
                apply_params(cfg, {key: v})
            except ConfigError as e:
                raise ConfigError(
                    f"config error: {where} can pick {key}={json.dumps(v)}, which is invalid: "
                    f"{str(e).removeprefix('config error: ')}") from None
    if tune.search in SEARCHERS:
        pkg = SEARCHERS[tune.search]
        try:
            __import__(pkg)
        except ImportError:
            raise ConfigError(
                f"config error: tune.search={tune.search} needs the {pkg} package, which is not "
                f"installed; fix: pip install {pkg}, or set tune.search=random") from None
    if "student.layers" in tune.space and teacher:
        from distillray.models import model_config
        from distillray.models.student import check_layers, default_layers

        n = model_config(teacher).num_hidden_layers
        for layers in layer_choices(cfg):
            check_layers(layers if layers is not None else default_layers(n), n)
    res = trial_resources(tune)
    if cfg.train.batch_size % (res.num_workers * cfg.optim.grad_accum):
        raise ConfigError(
            f"config error: tune.gpus_per_trial={tune.gpus_per_trial:g} gives {res.num_workers} workers "
            f"per trial, which train.batch_size={cfg.train.batch_size} (x optim.grad_accum) does not "
            "divide; fix: make train.batch_size a multiple of it")
    if tune.gpus_per_trial > 1 and tune.gpus_per_trial != int(tune.gpus_per_trial):
        raise ConfigError(
            f"config error: tune.gpus_per_trial={tune.gpus_per_trial:g}: above 1 it must be a whole "
            f"number of GPUs; fix: set tune.gpus_per_trial={int(tune.gpus_per_trial)}")
    if is_local(cfg):
        _check_local_resources(cfg)


def is_local(cfg: Config) -> bool:
    return not (cfg.run.address or os.environ.get("RAY_ADDRESS"))


def _check_local_resources(cfg: Config) -> None:
    from distillray.ray_utils import local_num_cpus

    tune = cfg.tune
    cpus = local_num_cpus(cfg)
    if tune.cpus_per_trial > cpus - 1:  # one CPU stays free for Ray Data's read tasks
        raise ConfigError(
            f"config error: tune.cpus_per_trial={tune.cpus_per_trial:g} but the local Ray instance "
            f"has {cpus} CPUs (one kept for data loading); fix: set tune.cpus_per_trial=1 or raise "
            "run.num_cpus")
    if tune.gpus_per_trial:
        import torch

        have = torch.cuda.device_count()
        if have < max(tune.gpus_per_trial, 1):
            raise ConfigError(
                f"config error: tune.gpus_per_trial={tune.gpus_per_trial:g} but this machine has "
                f"{have} GPU(s); fix: set tune.gpus_per_trial=0 (CPU trials), lower it, or submit to "
                "a GPU cluster")


def concurrency(cfg: Config) -> int:
    """Trials at once: tune.max_concurrent, lowered on a local instance to what fits at once
    (every trial's worker plus a CPU for data loading), so no trial's worker group waits for
    CPUs that another trial holds. Clusters keep the setting: the autoscaler can grow them."""
    tune = cfg.tune
    if not is_local(cfg):
        return tune.max_concurrent
    from distillray.ray_utils import local_num_cpus

    fit = int((local_num_cpus(cfg) - 1) // tune.cpus_per_trial)
    if tune.gpus_per_trial:
        import torch

        fit = min(fit, int(torch.cuda.device_count() // tune.gpus_per_trial))
    n = max(1, min(tune.max_concurrent, fit))
    if n < tune.max_concurrent:
        logger.warning("tune: running %d trials at once, not tune.max_concurrent=%d: that is what fits "
                       "on this machine at tune.cpus_per_trial=%g", n, tune.max_concurrent, tune.cpus_per_trial)
    return n


# ---------------------------------------------------------------------------------------------
# Trial names: readable in the dashboard, the Tune status table and on disk


def _short_keys(keys: list[str]) -> dict[str, str]:
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, str) and v.startswith("["):
        v = json.loads(v)
    if isinstance(v, list):
        return "-".join(map(str, v))
    return str(v)


def params_label(params: dict[str, Any]) -> str:
    """'temperature=2.5,alpha_kd=0.31': a trial's params, short."""
    short = _short_keys(list(params))
    return ",".join(f"{short[k]}={_fmt(v)}" for k, v in params.items())


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,-]+", "_", text)[:120]


def trial_name(trial) -> str:
    return f"{trial.trial_id}:{params_label(trial.config)}"


def trial_dirname(trial) -> str:
    return safe_name(f"{trial.trial_id}_{params_label(trial.config)}")
