"""Serve on a Ray that this process may have started: `python serve/app.py` and `bench/serve.py`.

`local_serve` starts (or joins) Ray and Serve and, on the way out, returns only once every
HAProxy that this node's Serve started has exited. In high-throughput mode Serve's
`HAProxyManager` actor runs HAProxy as its child, in the actor's own process group, with no
parent-death signal. Serve stops it only through a graceful `serve.shutdown()`; when the GCS and
raylet are already gone (a SIGTERM to the app's whole process group ends them with the app), that
shutdown cannot run, and the actor outlives the raylet by up to a minute, long enough to start a
new HAProxy in a reload after a sweep that looked only once. So the sweep here ends the actor
first (the parent of each HAProxy of this node), then HAProxy, and looks again until none is left.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from typing import Iterator

from distillray.config import Config
from distillray.ray_utils import init_ray

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def local_serve(cfg: Config, port: int, request_timeout_s: float = 30) -> Iterator[None]:
    """Ray (joined or started) and Serve's HTTP ingress on `port` for the duration of the block."""
    import ray
    from ray import serve

    started = init_ray(cfg)
    node_id = ray.get_runtime_context().get_node_id()
    try:
        serve.start(http_options={"host": cfg.serve.host, "port": port, "request_timeout_s": request_timeout_s})
        yield
    finally:
        if not started or _local_cluster_alive():
            _logged(serve.shutdown)
        else:  # with the GCS gone, serve.shutdown could only wait out its 30 s timeout
            logger.info("the local Ray's GCS and raylet have already stopped; cleaning up what they left")
        if started:
            _logged(ray.shutdown)
            stop_node_haproxies(node_id)


def _logged(step) -> None:
    """Run one shutdown step; a failure is logged, and the steps after it still run."""
    try:
        step()
    except Exception as e:  # noqa: BLE001 - shutting down: report, go on
        logger.warning("%s failed while stopping: %s", step.__qualname__, e)


def _local_cluster_alive(grace_s: float = 2.0) -> bool:
    """Whether the GCS and raylet that this process started are still running `grace_s` from now
    (a SIGTERM to the process group reaches them too, and they take a moment to exit)."""
    import psutil

    procs = [p for p in psutil.Process().children() if _name(p) in ("gcs_server", "raylet")]
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    return len(procs) == 2 and len(alive) == 2


def _name(p) -> str:
    import psutil

    try:
        return p.name()
    except psutil.Error:
        return ""


def node_haproxies(node_id: str) -> list:
    """HAProxy processes of this Ray node's Serve: their `-f` config path has the node id as a
    folder (Serve keeps one config per node)."""
    import psutil

    procs = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if p.info["name"] == "haproxy" and "-f" in cmd[:-1] and node_id in cmd[cmd.index("-f") + 1].split("/"):
            procs.append(p)
    return procs


def stop_node_haproxies(node_id: str, timeout_s: float = 30.0) -> int:
    """End every HAProxy of this node's Serve, and the Ray worker that spawns them, and return only
    once they have exited (SIGTERM, then SIGKILL after 5 s). Returns how many HAProxy processes
    were stopped; raises RuntimeError naming the pids if any is still running after `timeout_s`."""
    import psutil

    stopped: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while procs := node_haproxies(node_id):
        if time.monotonic() > deadline:
            raise RuntimeError(f"HAProxy of Ray node {node_id} still running after {timeout_s:.0f} s: "
                               f"pids {[p.pid for p in procs]}; kill them by hand")
        # the spawner first, so that no reload starts another HAProxy behind this sweep
        spawners = {}
        for p in procs:
            with contextlib.suppress(psutil.Error):
                parent = p.parent()
                if parent is not None and parent.name().startswith("ray::"):
                    spawners[parent.pid] = parent
        _end(list(spawners.values()), signal.SIGKILL)
        _end(procs, signal.SIGTERM)
        stopped |= {p.pid for p in procs}
    if stopped:
        logger.warning("stopped %d HAProxy process(es) that Serve left running", len(stopped))
    return len(stopped)


def _end(procs: list, sig: int, grace_s: float = 5.0) -> None:
    """Send `sig` and wait for the processes to exit; SIGKILL those still running after `grace_s`."""
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
