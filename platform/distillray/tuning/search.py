"""The Tuner driver: a Ray Tune search over distillation hyperparameters, on one shared set of
teacher logits.

The shards hold the teacher's raw logits (T = 1), so every trial, whatever temperature, loss
weights or learning rate it tries, reads the same shard dir: no trial ever runs, or even loads,
the teacher. That is a property of the design, not a promise: the student init dirs (one per
`student.layers` choice) are built from the teacher on the driver *before* the search
(`prepare_init_dirs`), and `search` takes those dirs, the shards and plain config dicts. It
has no teacher argument.

    space.check_tune (before Ray) -> prepare_init_dirs (driver) -> search: Tuner.fit / restore
      trial.run_trial = pipeline.distill_student (the one train loop, on Ray Train) reporting
              the dev metric (data.metric) to Tune at every eval; ASHA stops the weak trials early
    -> results: run.output_dir/tune/results.csv, best.json, accuracy_vs_params.png

A trial that fails (a NaN loss from an absurd lr, say) is recorded with its error and the
search goes on. A search is keyed by a hash of everything that decides its trials, so a rerun
with the same config resumes it (`Tuner.restore`) and a changed config starts a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from distillray import storage
from distillray.config import Config
from distillray.pipeline import Shards, student_init_dir
from distillray.preflight import Task
from distillray.tuning.results import TuneSummary, collect_trials, pick_best, write_best, write_results
from distillray.tuning.space import (
    MODE,
    SEARCHERS,
    apply_params,
    build_param_space,
    check_tune,
    concurrency,
    layer_choices,
    layers_key,
    num_samples,
    objective,
    trial_dirname,
    trial_name,
)
from distillray.tuning.trial import TrialInputs, run_trial

logger = logging.getLogger(__name__)

TRIAL_DRIVER_CPU = 0.01
REDUCTION_FACTOR = 3  # ASHA keeps the top third of the trials at each rung


class SearchFailedError(RuntimeError):
    """Every trial of a search failed: there is no best config to train."""


class SearchInterruptedError(RuntimeError):
    """The search stopped (Ctrl-C, a lost driver) before every trial finished: rerun to resume."""


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


def prepare_init_dirs(task: Task, teacher_dir: str) -> dict[str, str]:
    """Build every student init dir the search may use, from the teacher, on the driver."""
    return {layers_key(layers): student_init_dir(task, teacher_dir, layers)
            for layers in layer_choices(task.cfg)}


def run_search(task: Task, shards: Shards, teacher_dir: str) -> TuneSummary:
    """Build the student init dirs from the teacher, then search without it."""
    return search(task, shards, prepare_init_dirs(task, teacher_dir))


def search(task: Task, shards: Shards, init_dirs: dict[str, str]) -> TuneSummary:
    """Run (or resume) the search and write run.output_dir/tune/. Trials get `init_dirs`, the
    shard dir and plain data only: nothing here can reach the teacher."""
    from ray import tune
    from ray.tune import FailureConfig, RunConfig, Tuner

    cfg: Config = task.cfg
    check_tune(cfg)
    metric = objective(cfg)  # the headline metric: dev_f1 with data.metric=f1 (and for QA)
    missing = [k for k in map(layers_key, layer_choices(cfg)) if k not in init_dirs]
    if missing:
        raise ValueError(f"no student init dir for student.layers={missing[0]}; build it with prepare_init_dirs")
    out = task.out / "tune"  # results, best.json, plot (staged, then published, when remote)
    out.mkdir(parents=True, exist_ok=True)
    ray_dir = task.dest("tune", "ray")  # the experiment: every trial's node writes there
    ray_path, fs = storage.for_ray(ray_dir)
    name = experiment_name(cfg, shards.manifest)
    exp_dir = storage.join(ray_dir, name)
    exp_path = f"{ray_path}/{name}"
    rows = shards.rows
    inputs = TrialInputs(base=cfg.to_dict(), shards=shards, init_dirs=init_dirs, dev=task.dev, run_name=cfg.run_name,
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
                    list(cfg.tune.space), cfg.tune.scheduler, max_t, conc, shards.dir)
        tuner = Tuner(
            trainable,
            param_space=build_param_space(cfg.tune),
            tune_config=tune.TuneConfig(
                metric=metric, mode=MODE, num_samples=n, search_alg=_searcher(cfg, conc),
                scheduler=_scheduler(cfg, max_t),
                max_concurrent_trials=conc if cfg.tune.search in SEARCHERS else None,
                trial_name_creator=trial_name, trial_dirname_creator=trial_dirname, reuse_actors=False),
            run_config=RunConfig(name=name, storage_path=ray_path, storage_filesystem=fs, verbose=1,
                                 failure_config=FailureConfig(max_failures=0)),
        )
    grid = tuner.fit()
    wall = time.time() - t0
    trials = collect_trials(grid, cfg.tune, metric)
    ok = [t for t in trials if t[metric] is not None]
    files = write_results(out, trials, cfg)
    unfinished = [t for t in trials if t["status"] == "unfinished"]
    if unfinished:
        raise SearchInterruptedError(
            f"tune: the search stopped with {len(unfinished)} of {len(trials)} trials unfinished; rerun "
            f"the same command to resume it from {exp_dir}")
    if not ok:
        first = next((t["error"] for t in trials if t["error"]), "no trial reported a dev metric")
        raise SearchFailedError(f"tune: all {len(trials)} trials failed (first: {first}); see {files['results']}")
    best = pick_best(ok, metric)
    best_cfg = apply_params(cfg, best["params"])
    # Every trial's rows would have cost one teacher forward each under online distillation.
    avoided = sum(t["steps"] * cfg.train.batch_size for t in trials)
    summary = TuneSummary(trials=trials, best=best, best_config=best_cfg, experiment_dir=str(exp_dir),
                          output_dir=task.dest("tune"), wall_s=wall, search=cfg.tune.search,
                          scheduler=cfg.tune.scheduler, teacher_forwards_avoided=avoided,
                          restored=restored, files=files, metric=metric)
    files["best"] = write_best(out, summary)
    logger.info("tune: best %s %s=%.4f (%d trials: %d completed, %d stopped early, %d failed)",
                best["trial"], metric, best[metric], len(trials), *[sum(t["status"] == s for t in trials)
                                                                   for s in ("completed", "stopped_early", "failed")])
    return summary
