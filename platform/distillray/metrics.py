"""Custom metrics on the Ray dashboard and Ray's Prometheus export (`ray.util.metrics`).

Ray exports each one with a `ray_` prefix on every node's metrics port (`ray start
--metrics-export-port`), while the process that recorded it is alive; the dashboard's Metrics
tab and Grafana read them from there. Every metric carries the run name, so runs that share a
cluster stay apart.

    ray_distillray_precompute_rows_total{run}           teacher rows turned into logits
    ray_distillray_precompute_rows_per_second{run}      throughput of the last block per actor
    ray_distillray_train_loss{run,stage,term}           loss, loss_kd, loss_ce, ... (rank 0)
    ray_distillray_train_examples_per_second{run,stage}
    ray_distillray_dev_accuracy{run,stage}

Metric objects are made lazily, once per process (Ray workers are separate processes), and
recording never raises: it works with or without a Ray connection, and a metrics failure must
not fail a training run.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

logger = logging.getLogger(__name__)

PREFIX = "distillray_"


@functools.cache  # one metric object per process, made on first use
def precompute_rows():
    from ray.util.metrics import Counter

    return Counter(PREFIX + "precompute_rows", description="Rows the teacher turned into logits.",
                   tag_keys=("run",))


@functools.cache  # one metric object per process, made on first use
def precompute_rows_per_s():
    from ray.util.metrics import Gauge

    return Gauge(PREFIX + "precompute_rows_per_second",
                 description="Teacher-logit throughput of the last block, per actor.", tag_keys=("run",))


@functools.cache  # one metric object per process, made on first use
def train_loss():
    from ray.util.metrics import Gauge

    return Gauge(PREFIX + "train_loss", description="Training loss terms at the last logged step.",
                 tag_keys=("run", "stage", "term"))


@functools.cache  # one metric object per process, made on first use
def train_examples_per_s():
    from ray.util.metrics import Gauge

    return Gauge(PREFIX + "train_examples_per_second", description="Training examples/s, all workers.",
                 tag_keys=("run", "stage"))


@functools.cache  # one metric object per process, made on first use
def dev_accuracy():
    from ray.util.metrics import Gauge

    return Gauge(PREFIX + "dev_accuracy", description="Dev accuracy at the last evaluation.",
                 tag_keys=("run", "stage"))


def _safely(record: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(record)
    def wrapped(*args: Any, **kwargs: Any) -> None:
        try:
            record(*args, **kwargs)
        except Exception:  # a metric must never break the run it observes
            logger.debug("could not record metric %s", record.__name__, exc_info=True)
    return wrapped


@_safely
def record_precompute(rows: int, seconds: float, run: str) -> None:
    """One block of teacher logits done (called in the Ray Data actor)."""
    tags = {"run": run}
    precompute_rows().inc(rows, tags=tags)
    precompute_rows_per_s().set(rows / max(seconds, 1e-9), tags=tags)


@_safely
def record_train(metrics: dict[str, Any], stage: str, run: str) -> None:
    """A train-loop report (rank 0): loss terms, examples/s and dev accuracy, whichever it has."""
    tags = {"run": run, "stage": stage}
    for key, value in metrics.items():
        if key.startswith("train_loss") and isinstance(value, float):
            train_loss().set(value, tags={**tags, "term": key.removeprefix("train_")})
    if "examples_per_s" in metrics:
        train_examples_per_s().set(metrics["examples_per_s"], tags=tags)
    if "dev_accuracy" in metrics:
        dev_accuracy().set(metrics["dev_accuracy"], tags=tags)
