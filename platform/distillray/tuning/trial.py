"""The body of one Tune trial: a Tune function trainable on a Ray worker that runs the one train
loop (`pipeline.distill_student`) with the trial's params on the shared shards. Plain data in
(`TrialInputs`, through the object store), nothing from the driver's Task, and no teacher."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillray import storage
from distillray.config import Config
from distillray.data.text import TextDataset
from distillray.distributed.ray_train import FitOptions
from distillray.pipeline import Shards, distill_student
from distillray.tuning.results import root_message
from distillray.tuning.space import decode_params, objective, layers_key, params_label, safe_name, trial_config, trial_resources


class TrialFailedError(RuntimeError):
    """One trial's training failed; the message is the root cause on one line."""


def _eval_report_callback(metric: str):
    """Ray Train -> Tune bridge that forwards only the reports carrying the ranking `metric`
    (one per eval: ASHA's time unit), each with the path of the latest checkpoint."""
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback

    class EvalReportCallback(TuneReportCallback):
        def __init__(self) -> None:
            super().__init__()
            self._checkpoint: str | None = None

        def after_report(self, run_context, metrics, checkpoint) -> None:
            if checkpoint:
                self._checkpoint = checkpoint.path
            if metric not in metrics[0]:
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
    shards: Shards
    init_dirs: dict[str, str]
    dev: TextDataset | None
    run_name: str
    experiment_dir: str  # trials write under <experiment_dir>/<trial dir>/, in the search's storage


def run_trial(params: dict[str, Any], inputs: TrialInputs) -> None:
    """One trial: the one train loop with this trial's params, on the shared shards."""
    from ray import tune

    ctx = tune.get_context()
    base = Config.from_dict(inputs.base)
    decoded = decode_params(base.tune, params)
    # get_trial_dir() is a session-local staging dir; checkpoints and history go to the trial's
    # dir in the search's storage, so they outlive the session and a restored trial resumes.
    trial_dir = storage.join(inputs.experiment_dir, Path(ctx.get_trial_dir()).name)
    cfg = trial_config(base, decoded, trial_dir)
    init_dir = inputs.init_dirs[layers_key(cfg.student.layers)]
    res = trial_resources(base.tune)
    name = safe_name(f"{inputs.run_name}-trial-{ctx.get_trial_id()}-{params_label(decoded)}")
    try:
        distill_student(cfg, inputs.shards, init_dir, inputs.dev, export_dir=None,
                        options=FitOptions(name=name, callbacks=[_eval_report_callback(objective(base))],
                                           gpus_per_worker=res.gpus_per_worker or 1.0))
    except Exception as e:  # noqa: BLE001 - recorded as this trial's error; the search goes on
        raise TrialFailedError(f"trial {params_label(decoded)} failed: {root_message(e)}") from e
