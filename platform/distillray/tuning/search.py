"""Ray Tune search over distillation hyperparameters, on one shared set of teacher logits.

The shards hold the teacher's raw logits (T = 1), so every trial, whatever temperature, loss
weights or learning rate it tries, reads the same shard dir: no trial ever runs, or even loads,
the teacher. That is a property of the design, not a promise: the student init dirs (one per
`student.layers` choice) are built from the teacher on the driver *before* the search
(`prepare_init_dirs`), and `search` takes those dirs, the shard dir and plain config dicts. It
has no teacher argument.

    check_tune (before Ray) -> prepare_init_dirs (driver) -> search: Tuner.fit / Tuner.restore
      trial = pipeline.distill_student (the one train loop, on Ray Train) reporting dev accuracy
              to Tune at every eval; ASHA stops the weak trials early
    -> run.output_dir/tune/results.csv, best.json, accuracy_vs_params.png

Spaces use the config's dotted keys (`tune.space`, see `distillray.config.SpaceSpec`);
`distill.alpha_ce` follows `1 - distill.alpha_kd` unless it is searched itself. A trial that
fails (a NaN loss from an absurd lr, say) is recorded with its error and the search goes on. A
search is keyed by a hash of everything that decides its trials, so a rerun with the same
config resumes it (`Tuner.restore`) and a changed config starts a new one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillray import storage
from distillray.config import Config, SpaceSpec, TuneConfig, apply_overrides
from distillray.errors import ConfigError

logger = logging.getLogger(__name__)

METRIC = "dev_accuracy"
MODE = "max"
DEFAULT_RANDOM_SAMPLES = 12
TRIAL_DRIVER_CPU = 0.01
REDUCTION_FACTOR = 3  # ASHA keeps the top third of the trials at each rung
PLOT_NAME = "accuracy_vs_params.png"
_SEARCHERS = {"hyperopt": "hyperopt", "optuna": "optuna"}  # search -> the package it needs


class SearchFailedError(RuntimeError):
    """Every trial of a search failed: there is no best config to train."""


class TrialFailedError(RuntimeError):
    """One trial's training failed; the message is the root cause on one line."""


class SearchInterruptedError(RuntimeError):
    """The search stopped (Ctrl-C, a lost driver) before every trial finished: rerun to resume."""


# ---------------------------------------------------------------------------------------------
# Space: config dotted keys <-> Tune domains


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool))


def _encoded(spec: SpaceSpec) -> bool:
    """Lists (student.layers) and nulls travel as JSON strings: every searcher (Optuna's
    categorical, for one) takes strings, and trial names stay readable."""
    return spec.values is not None and not all(_is_scalar(v) for v in spec.values)


def num_samples(tune: TuneConfig) -> int:
    """Trials to run: tune.num_samples; by default each grid point once, or 12 sampled trials."""
    if tune.num_samples is not None:
        return tune.num_samples
    return 1 if tune.search == "grid" else DEFAULT_RANDOM_SAMPLES


def build_param_space(tune: TuneConfig) -> dict[str, Any]:
    """The Tune param_space: one domain per `tune.space` key, keyed by the same dotted key."""
    from ray import tune as rt

    space: dict[str, Any] = {}
    for key, spec in tune.space.items():
        if spec.type == "loguniform":
            space[key] = rt.loguniform(spec.low, spec.high)
        elif spec.type == "uniform":
            space[key] = rt.uniform(spec.low, spec.high)
        else:
            values = [json.dumps(v) for v in spec.values] if _encoded(spec) else list(spec.values)
            # search=grid runs every value of a `choice` too: the grid is the whole space
            grid = spec.type == "grid" or tune.search == "grid"
            space[key] = rt.grid_search(values) if grid else rt.choice(values)
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

    Worker-error retries are off (train.max_failures=0): a trial's errors are its
    hyperparameters' (NaN, OOM) and recur on retry; node preemptions are still retried by Ray
    Train's separate preemption budget.
    """
    res = trial_resources(cfg.tune)
    c = apply_params(cfg, params).to_dict()
    c["train"].update(num_workers=res.num_workers, cpus_per_worker=res.cpus_per_worker,
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
        if tune.search in _SEARCHERS and spec.type == "grid":
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
    if tune.search in _SEARCHERS:
        pkg = _SEARCHERS[tune.search]
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
    if cfg.train.batch_size % (res.num_workers * cfg.train.grad_accum):
        raise ConfigError(
            f"config error: tune.gpus_per_trial={tune.gpus_per_trial:g} gives {res.num_workers} workers "
            f"per trial, which train.batch_size={cfg.train.batch_size} (x train.grad_accum) does not "
            "divide; fix: make train.batch_size a multiple of it")
    if tune.gpus_per_trial > 1 and tune.gpus_per_trial != int(tune.gpus_per_trial):
        raise ConfigError(
            f"config error: tune.gpus_per_trial={tune.gpus_per_trial:g}: above 1 it must be a whole "
            f"number of GPUs; fix: set tune.gpus_per_trial={int(tune.gpus_per_trial)}")
    if _local(cfg):
        _check_local_resources(cfg)


def _local(cfg: Config) -> bool:
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
    if not _local(cfg):
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


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,-]+", "_", text)[:120]


def trial_name(trial) -> str:
    return f"{trial.trial_id}:{params_label(trial.config)}"


def trial_dirname(trial) -> str:
    return _safe(f"{trial.trial_id}_{params_label(trial.config)}")


# ---------------------------------------------------------------------------------------------
# Inside a trial (a Tune function trainable on a Ray worker: plain data in, nothing from the
# driver's Task, and no teacher)


def _eval_report_callback():
    """Ray Train -> Tune bridge that forwards only the reports carrying dev accuracy (one per
    eval: ASHA's time unit), each with the path of the latest checkpoint."""
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback

    class EvalReportCallback(TuneReportCallback):
        def __init__(self) -> None:
            super().__init__()
            self._checkpoint: str | None = None

        def after_report(self, run_context, metrics, checkpoint) -> None:
            if checkpoint:
                self._checkpoint = checkpoint.path
            if METRIC not in metrics[0]:
                return  # a log-only report: Tune's strict metric check would refuse it
            out = metrics[0].copy()
            if self._checkpoint:
                out[CHECKPOINT_PATH_KEY] = self._checkpoint
            self._training_actor_item_queue.put(out)

    return EvalReportCallback()


@dataclass
class TrialInputs:
    """What every trial gets (through the object store): the base config, the shards, the
    student init dirs (by layers) and the dev split. No teacher path."""

    base: dict[str, Any]
    shard_dir: str
    manifest: dict[str, Any]
    init_dirs: dict[str, str]
    dev: Any  # TextDataset
    labels: Any  # LabelSet
    run_name: str
    experiment_dir: str  # trials write under <experiment_dir>/<trial dir>/, in the search's storage


def _root_message(e: BaseException) -> str:
    """The innermost error's message, on one line (Ray wraps worker errors in tracebacks)."""
    seen = {id(e)}
    best = e
    while True:  # follow the chain down: a worker's own error, then Ray's cause, then __cause__
        failures = getattr(best, "worker_failures", None)
        links = [failures[min(failures)] if isinstance(failures, dict) and failures else None,
                 getattr(best, "cause", None), best.__cause__]
        nxt = next((x for x in links if isinstance(x, BaseException) and id(x) not in seen), None)
        if nxt is None:
            break
        seen.add(id(nxt))
        best = nxt
    text = str(best).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):  # a RayTaskError's text ends with "ErrorType: message"
        if re.match(r"^[\w.]+(Error|Exception): ", ln):
            return ln
    return lines[-1] if lines else type(best).__name__


def run_trial(params: dict[str, Any], inputs: TrialInputs) -> None:
    """One trial: the one train loop with this trial's params, on the shared shards."""
    from ray import tune

    from distillray import pipeline

    ctx = tune.get_context()
    base = Config.from_dict(inputs.base)
    decoded = decode_params(base.tune, params)
    # get_trial_dir() is a session-local staging dir; checkpoints and history go to the trial's
    # dir in the search's storage, so they outlive the session and a restored trial resumes.
    trial_dir = storage.join(inputs.experiment_dir, Path(ctx.get_trial_dir()).name)
    cfg = trial_config(base, decoded, trial_dir)
    task = pipeline.Task(cfg=cfg, train=None, dev=inputs.dev, labels=inputs.labels)
    init_dir = inputs.init_dirs[layers_key(cfg.student.layers)]
    res = trial_resources(base.tune)
    name = _safe(f"{inputs.run_name}-trial-{ctx.get_trial_id()}-{params_label(decoded)}")
    try:
        pipeline.distill_student(task, inputs.shard_dir, inputs.manifest, init_dir, export_dir=None,
                                 cfg=cfg, callbacks=[_eval_report_callback()], name=name,
                                 gpus_per_worker=res.gpus_per_worker or 1.0)
    except Exception as e:  # noqa: BLE001 - recorded as this trial's error; the search goes on
        raise TrialFailedError(f"trial {params_label(decoded)} failed: {_root_message(e)}") from e


# ---------------------------------------------------------------------------------------------
# Driver


@dataclass
class TuneSummary:
    """The outcome of a search: one dict per trial, the best one, and where it was written."""

    trials: list[dict[str, Any]]
    best: dict[str, Any]
    best_config: Config
    experiment_dir: str
    output_dir: str
    wall_s: float
    search: str
    scheduler: str
    teacher_forwards_avoided: int
    restored: bool = False
    files: dict[str, str] = field(default_factory=dict)

    @property
    def best_params(self) -> dict[str, Any]:
        return self.best["params"]

    @property
    def best_accuracy(self) -> float:
        return self.best["dev_accuracy"]

    def as_dict(self) -> dict[str, Any]:
        """For report.json: counts, the best trial, and the files written."""
        status = [t["status"] for t in self.trials]
        return {
            "trials": len(self.trials),
            "completed": status.count("completed"),
            "stopped_early": status.count("stopped_early"),
            "failed": status.count("failed"),
            "best_accuracy": self.best_accuracy,
            "best_params": self.best_params,
            "best_trial": self.best["trial"],
            "best_checkpoint": self.best.get("checkpoint"),
            "search": self.search,
            "scheduler": self.scheduler,
            "wall_s": round(self.wall_s, 2),
            "teacher_forwards_avoided": self.teacher_forwards_avoided,
            "experiment_dir": self.experiment_dir,
            "restored": self.restored,
            "files": self.files,
        }


def experiment_name(cfg: Config, manifest: dict[str, Any]) -> str:
    """`<run>-tune-<hash>`: the hash covers what decides the trials (space, search, base config,
    the shards' contents), not where outputs go or how many run at once, so a rerun resumes
    the same search and a changed one starts afresh."""
    d = cfg.to_dict()
    d.pop("run", None)
    d.pop("serve", None)
    for k in ("enabled", "max_concurrent"):
        d["tune"].pop(k, None)
    d["shards"] = sorted(s.get("sha256", s.get("file")) for s in manifest.get("shards", []))
    digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
    return f"{cfg.run_name}-tune-{digest}"


def num_evals(cfg: Config, train_rows: int) -> int:
    """Dev evaluations one full trial makes: every train.eval_every steps (0: each epoch) and
    at the end. ASHA's max_t, in Tune iterations (one per eval)."""
    from distillray.training.loop import steps_per_epoch, total_steps

    n = total_steps(train_rows, cfg.train)
    every = cfg.train.eval_every or steps_per_epoch(train_rows, cfg.train)
    return sum(1 for s in range(1, n) if s % every == 0) + 1


def _searcher(cfg: Config, max_concurrent: int):
    """The search algorithm, seeded by train.seed. Tune wraps a Searcher in a
    ConcurrencyLimiter itself; the variant generator takes its limit directly."""
    tune = cfg.tune
    seed = cfg.train.seed
    if tune.search == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(random_state_seed=seed)
    if tune.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=seed)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)


def _scheduler(cfg: Config, max_t: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if cfg.tune.scheduler == "none" or max_t < 2:
        return FIFOScheduler()
    return ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                         grace_period=min(cfg.tune.grace_period, max_t), reduction_factor=REDUCTION_FACTOR)


def prepare_init_dirs(task, teacher_dir: str) -> dict[str, str]:
    """Build every student init dir the search may use, from the teacher, on the driver."""
    from distillray import pipeline

    return {layers_key(layers): pipeline.student_init_dir(task, teacher_dir, layers)
            for layers in layer_choices(task.cfg)}


def run_search(task, shard_dir: str, manifest: dict[str, Any], teacher_dir: str) -> TuneSummary:
    """Build the student init dirs from the teacher, then search without it."""
    return search(task, shard_dir, manifest, prepare_init_dirs(task, teacher_dir))


def search(task, shard_dir: str, manifest: dict[str, Any], init_dirs: dict[str, str]) -> TuneSummary:
    """Run (or resume) the search and write run.output_dir/tune/. Trials get `init_dirs`, the
    shard dir and plain data only: nothing here can reach the teacher."""
    from ray import tune
    from ray.tune import FailureConfig, RunConfig, Tuner

    cfg: Config = task.cfg
    check_tune(cfg)
    missing = [k for k in map(layers_key, layer_choices(cfg)) if k not in init_dirs]
    if missing:
        raise ValueError(f"no student init dir for student.layers={missing[0]}; build it with prepare_init_dirs")
    out = task.out / "tune"  # results, best.json, plot (staged, then published, when remote)
    out.mkdir(parents=True, exist_ok=True)
    ray_dir = task.dest("tune", "ray")  # the experiment: every trial's node writes there
    ray_path, fs = storage.for_ray(ray_dir)
    name = experiment_name(cfg, manifest)
    exp_dir = storage.join(ray_dir, name)
    exp_path = f"{ray_path}/{name}"
    rows = int(manifest["rows"])
    inputs = TrialInputs(base=cfg.to_dict(), shard_dir=shard_dir, manifest=manifest, init_dirs=init_dirs,
                         dev=task.dev, labels=task.labels, run_name=cfg.run_name,
                         experiment_dir=str(exp_dir))
    # The trial's own process only waits on its Ray Train run: (next to) no CPU, so trials are
    # limited by their workers' resources and max_concurrent_trials, never by the drivers. Tune
    # refuses an empty request, hence a hundredth of a CPU.
    trainable = tune.with_resources(tune.with_parameters(run_trial, inputs=inputs), {"CPU": TRIAL_DRIVER_CPU})
    t0 = time.time()
    restored = Tuner.can_restore(exp_path, storage_filesystem=fs)
    if restored:
        logger.info("tune: resuming the search in %s", exp_dir)
        tuner = Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True,
                              resume_errored=False, restart_errored=False, storage_filesystem=fs)
    else:
        max_t = num_evals(cfg, rows)
        n = num_samples(cfg.tune)
        conc = concurrency(cfg)
        logger.info("tune: %s search, %d sample(s) over %s, scheduler %s (up to %d evals per trial), "
                    "%d trial(s) at once; every trial reads %s", cfg.tune.search, n,
                    list(cfg.tune.space), cfg.tune.scheduler, max_t, conc, shard_dir)
        tuner = Tuner(
            trainable,
            param_space=build_param_space(cfg.tune),
            tune_config=tune.TuneConfig(
                metric=METRIC, mode=MODE, num_samples=n, search_alg=_searcher(cfg, conc),
                scheduler=_scheduler(cfg, max_t),
                max_concurrent_trials=conc if cfg.tune.search in _SEARCHERS else None,
                trial_name_creator=trial_name, trial_dirname_creator=trial_dirname, reuse_actors=False),
            run_config=RunConfig(name=name, storage_path=ray_path, storage_filesystem=fs, verbose=1,
                                 failure_config=FailureConfig(max_failures=0)),
        )
    grid = tuner.fit()
    wall = time.time() - t0
    trials = collect_trials(grid, cfg.tune)
    ok = [t for t in trials if t["dev_accuracy"] is not None]
    files = write_results(out, trials, cfg)
    unfinished = [t for t in trials if t["status"] == "unfinished"]
    if unfinished:
        raise SearchInterruptedError(
            f"tune: the search stopped with {len(unfinished)} of {len(trials)} trials unfinished; rerun "
            f"the same command to resume it from {exp_dir}")
    if not ok:
        first = next((t["error"] for t in trials if t["error"]), "no trial reported dev accuracy")
        raise SearchFailedError(f"tune: all {len(trials)} trials failed (first: {first}); see {files['results']}")
    best = pick_best(ok)
    best_cfg = apply_params(cfg, best["params"])
    # Every trial's rows would have cost one teacher forward each under online distillation.
    avoided = sum(t["steps"] * cfg.train.batch_size for t in trials)
    summary = TuneSummary(trials=trials, best=best, best_config=best_cfg, experiment_dir=str(exp_dir),
                          output_dir=task.dest("tune"), wall_s=wall, search=cfg.tune.search,
                          scheduler=cfg.tune.scheduler, teacher_forwards_avoided=avoided,
                          restored=restored, files=files)
    files["best"] = write_best(out, summary)
    logger.info("tune: best %s dev_accuracy=%.4f (%d trials: %d completed, %d stopped early, %d failed)",
                best["trial"], best["dev_accuracy"], len(trials), *[sum(t["status"] == s for t in trials)
                                                                   for s in ("completed", "stopped_early", "failed")])
    return summary


# ---------------------------------------------------------------------------------------------
# Results


def collect_trials(grid, tune: TuneConfig) -> list[dict[str, Any]]:
    """One dict per trial: params, best dev accuracy (and the dev loss and step it came at),
    steps trained, evals, status (completed / stopped_early / failed / unfinished) and error."""
    trials = []
    for r in grid:
        df = r.metrics_dataframe
        records = df.to_dict("records") if df is not None and len(df) else []
        evals = [m for m in records if isinstance(m.get(METRIC), (int, float)) and not math.isnan(m[METRIC])]
        best = max(evals, key=lambda m: (m[METRIC], -m.get("dev_loss", 0.0)), default=None)
        last = records[-1] if records else {}
        params = decode_params(tune, r.config or {})
        last = {**last, **(r.metrics or {})}
        if r.error is not None:
            status = "failed"
        elif last.get("final") is True:
            status = "completed"
        elif last.get("done") is True:  # Tune marks the result a scheduler stopped on as done
            status = "stopped_early"
        else:  # never started, or stopped by an interrupted driver
            status = "unfinished"
        trials.append({
            "trial": Path(r.path).name,
            "status": status,
            "params": params,
            METRIC: float(best[METRIC]) if best else None,
            "dev_loss": float(best["dev_loss"]) if best and "dev_loss" in best else None,
            "best_step": int(best["step"]) if best else None,
            "steps": int(max((m.get("step", 0) for m in records), default=0)),
            "evals": len(evals),
            "checkpoint": last.get("checkpoint_path"),
            "error": _root_message(r.error) if r.error is not None else None,
        })
    return sorted(trials, key=lambda t: t["trial"])


def pick_best(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Highest best dev accuracy; ties go to the lower dev loss, then the trial that trained
    longest (a finished trial over one ASHA stopped), then the earlier trial."""
    return max(trials, key=lambda t: (t[METRIC], -(t["dev_loss"] if t["dev_loss"] is not None else math.inf),
                                      t["steps"], [-ord(c) for c in t["trial"]]))


def write_results(out: Path, trials: list[dict[str, Any]], cfg: Config) -> dict[str, str]:
    """results.csv (one row per trial) and the plot; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    keys = list(cfg.tune.space)
    cols = ["trial", "status", *keys, METRIC, "dev_loss", "best_step", "steps", "evals", "error"]
    path = out / "results.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for t in trials:
            row = {c: t.get(c) for c in cols if c not in keys}
            row.update({k: json.dumps(t["params"][k]) if isinstance(t["params"].get(k), list)
                        else t["params"].get(k) for k in keys})
            w.writerow(row)
    files = {"results": str(path)}
    try:
        files["plot"] = str(plot_trials(out, trials, keys))
    except Exception as e:  # noqa: BLE001 - a plot must not lose the search's results
        logger.warning("tune: could not plot the trials: %s", e)
    return files


def write_best(out: Path, s: TuneSummary) -> str:
    best = {
        "trial": s.best["trial"],
        "params": s.best_params,
        METRIC: s.best_accuracy,
        "dev_loss": s.best["dev_loss"],
        "step": s.best["best_step"],
        "status": s.best["status"],
        "checkpoint": s.best.get("checkpoint"),
        "experiment_dir": s.experiment_dir,
        "config": s.best_config.to_dict(),
    }
    path = out / "best.json"
    path.write_text(json.dumps(best, indent=2))
    return str(path)


def plot_trials(out: Path, trials: list[dict[str, Any]], keys: list[str]) -> Path:
    """Dev accuracy against each numeric searched key (temperature, alpha_kd, lr...), one panel
    each, coloured by alpha_kd when it is searched; failed trials are red crosses at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = [k for k in keys if all(isinstance(t["params"].get(k), (int, float)) for t in trials)]
    order = ["distill.temperature", "distill.alpha_kd", "distill.alpha_ce", "train.lr"]
    numeric = sorted(numeric, key=lambda k: order.index(k) if k in order else len(order))[:4]
    panels = numeric or ["trial"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    colour_key = "distill.alpha_kd" if "distill.alpha_kd" in keys else None
    for ax, key in zip(axes[0], panels):
        for status, marker in (("completed", "o"), ("stopped_early", "s")):
            pts = [t for t in trials if t["status"] == status and t[METRIC] is not None]
            if not pts:
                continue
            xs = [t["params"][key] if key != "trial" else i for i, t in enumerate(pts)]
            cs = [t["params"][colour_key] for t in pts] if colour_key else None
            colour = {"c": cs, "cmap": "viridis", "vmin": 0, "vmax": 1} if cs else {}
            sc = ax.scatter(xs, [t[METRIC] for t in pts], marker=marker, label=status.replace("_", " "),
                            edgecolors="k", linewidths=0.4, **colour)
        failed = [t for t in trials if t["status"] == "failed"]
        if failed and key != "trial":
            ax.scatter([t["params"][key] for t in failed], [0.0] * len(failed), marker="x", c="red", label="failed")
        spec_log = key == "train.lr" or (key == "distill.temperature" and _spread(trials, key) > 8)
        if spec_log:
            ax.set_xscale("log")
        ax.set(xlabel=key, ylabel="best dev accuracy", title=f"dev accuracy vs {key.rsplit('.', 1)[-1]}")
        ax.legend(fontsize=7, loc="lower right")
    if colour_key and "sc" in locals():
        fig.colorbar(sc, ax=axes[0].tolist(), label="alpha_kd")
    path = out / PLOT_NAME
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _spread(trials: list[dict[str, Any]], key: str) -> float:
    vals = [t["params"][key] for t in trials if isinstance(t["params"].get(key), (int, float)) and t["params"][key] > 0]
    return max(vals) / min(vals) if vals else 1.0
