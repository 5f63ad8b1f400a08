"""A search's results: one row per trial from Tune's ResultGrid, the best trial, and the files
under run.output_dir/tune/ (results.csv, best.json, accuracy_vs_params.png)."""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillray.config import Config, TuneConfig
from distillray.tuning.space import METRIC, decode_params

logger = logging.getLogger(__name__)

PLOT_NAME = "accuracy_vs_params.png"


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
    metric: str = METRIC  # what the trials were ranked by (`space.objective`)

    @property
    def best_params(self) -> dict[str, Any]:
        return self.best["params"]

    @property
    def best_score(self) -> float:
        """The best trial's value of the ranking metric."""
        return self.best[self.metric]

    @property
    def best_accuracy(self) -> float | None:
        """The best trial's dev accuracy (None for tasks without one, e.g. QA)."""
        return self.best.get(METRIC)

    def as_dict(self) -> dict[str, Any]:
        """For report.json: counts, the best trial, and the files written."""
        status = [t["status"] for t in self.trials]
        return {
            "trials": len(self.trials),
            "completed": status.count("completed"),
            "stopped_early": status.count("stopped_early"),
            "failed": status.count("failed"),
            "metric": self.metric,
            "best_score": self.best_score,
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


def root_message(e: BaseException) -> str:
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


def collect_trials(grid, tune: TuneConfig, metric: str = METRIC) -> list[dict[str, Any]]:
    """One dict per trial: params, its best eval by `metric` (that value, and the dev accuracy,
    dev loss and step of the same eval), steps trained, evals, status (completed /
    stopped_early / failed / unfinished) and error."""
    trials = []
    for r in grid:
        df = r.metrics_dataframe
        records = df.to_dict("records") if df is not None and len(df) else []
        evals = [m for m in records if isinstance(m.get(metric), (int, float)) and not math.isnan(m[metric])]
        best = max(evals, key=lambda m: (m[metric], -m.get("dev_loss", 0.0)), default=None)
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
            METRIC: float(best[METRIC]) if best and isinstance(best.get(METRIC), (int, float)) else None,
            metric: float(best[metric]) if best else None,
            "dev_loss": float(best["dev_loss"]) if best and "dev_loss" in best else None,
            "best_step": int(best["step"]) if best else None,
            "steps": int(max((m.get("step", 0) for m in records), default=0)),
            "evals": len(evals),
            "checkpoint": last.get("checkpoint_path"),
            "error": root_message(r.error) if r.error is not None else None,
        })
    return sorted(trials, key=lambda t: t["trial"])


def pick_best(trials: list[dict[str, Any]], metric: str = METRIC) -> dict[str, Any]:
    """Highest best `metric` (dev accuracy, or the run's headline metric); ties go to the lower
    dev loss, then the trial that trained longest (a finished trial over one ASHA stopped), then
    the earlier trial."""
    return max(trials, key=lambda t: (t[metric], -(t["dev_loss"] if t["dev_loss"] is not None else math.inf),
                                      t["steps"], [-ord(c) for c in t["trial"]]))


def write_results(out: Path, trials: list[dict[str, Any]], cfg: Config) -> dict[str, str]:
    """results.csv (one row per trial) and the plot; returns their paths."""
    from distillray.tuning.space import objective

    out.mkdir(parents=True, exist_ok=True)
    keys = list(cfg.tune.space)
    metric = objective(cfg)
    scores = [metric] if metric == METRIC or cfg.data.task == "qa" else [metric, METRIC]
    cols = ["trial", "status", *keys, *scores, "dev_loss", "best_step", "steps", "evals", "error"]
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
        files["plot"] = str(plot_trials(out, trials, keys, metric))
    except Exception as e:  # noqa: BLE001 - a plot must not lose the search's results
        logger.warning("tune: could not plot the trials: %s", e)
    return files


def write_best(out: Path, s: TuneSummary) -> str:
    best = {
        "trial": s.best["trial"],
        "params": s.best_params,
        "metric": s.metric,
        s.metric: s.best_score,
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


def plot_trials(out: Path, trials: list[dict[str, Any]], keys: list[str], metric: str = METRIC) -> Path:
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
            pts = [t for t in trials if t["status"] == status and t.get(metric) is not None]
            if not pts:
                continue
            xs = [t["params"][key] if key != "trial" else i for i, t in enumerate(pts)]
            cs = [t["params"][colour_key] for t in pts] if colour_key else None
            colour = {"c": cs, "cmap": "viridis", "vmin": 0, "vmax": 1} if cs else {}
            sc = ax.scatter(xs, [t[metric] for t in pts], marker=marker, label=status.replace("_", " "),
                            edgecolors="k", linewidths=0.4, **colour)
        failed = [t for t in trials if t["status"] == "failed"]
        if failed and key != "trial":
            ax.scatter([t["params"][key] for t in failed], [0.0] * len(failed), marker="x", c="red", label="failed")
        spec_log = key == "train.lr" or (key == "distill.temperature" and _spread(trials, key) > 8)
        if spec_log:
            ax.set_xscale("log")
        shown = metric.replace("_", " ")
        ax.set(xlabel=key, ylabel=f"best {shown}", title=f"{shown} vs {key.rsplit('.', 1)[-1]}")
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
