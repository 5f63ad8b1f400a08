"""Serve on a Ray that this process may have started: `python serve/app.py` and `bench/serve.py`.

`local_serve` starts (or joins) Ray and Serve and, when it started Ray, returns only once every
process that Ray started for it has exited, HAProxy included. In high-throughput mode HAProxy is a
child of Serve's `HAProxyManager` actor, a Ray worker that the raylet starts in its own process
group: a signal to the app's process group reaches neither, and Serve's controller ends HAProxy only
in a graceful `serve.shutdown()`. A manager that outlives the raylet can still start an HAProxy (a
reload queued while replicas were being removed) after any look for HAProxy processes. So, on
Linux, this process makes itself the child subreaper before Ray starts: every process Ray leaves
behind is re-parented to it, and the sweep ends them all (Ray's workers first, with SIGKILL, so
none starts another HAProxy; then HAProxy with SIGTERM) and reaps them until none is left.
Elsewhere it falls back to ending this node's HAProxy processes and their parents.

`python serve/app.py` runs under `supervise`: a parent that is not a Ray driver, waits for the
app, then sweeps, so the guarantee holds even when the driver itself is ended abruptly.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from typing import Iterator

from distillray.config import Config
from distillray.ray_utils import init_ray

logger = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


@contextlib.contextmanager
def local_serve(cfg: Config, port: int, request_timeout_s: float = 30) -> Iterator[None]:
    """Ray (joined or started) and Serve's HTTP ingress on `port` for the duration of the block."""
    import ray
    from ray import serve

    reaper = become_subreaper()
    before = _descendant_pids()
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
            if reaper:
                stop_descendants(exclude=before)
            else:  # no subreaper (not Linux): look for this node's HAProxy processes instead
                stop_node_haproxies(node_id)


SUPERVISED_ENV = "DISTILLRAY_SUPERVISED"  # set in the child that `supervise` starts


def supervise(argv: list[str]) -> int:
    """Run `python <argv>` as a child of this process and return its exit code only once it, and
    every process it started, has exited. The child is the Ray driver; this process is not, so
    nothing in Ray can end it before its sweep: a driver can be ended by its core worker when the
    raylet goes, which would leave Ray's workers, and HAProxy, re-parented to init. SIGTERM is
    passed on to the child; SIGINT reaches it from the terminal with its process group."""
    import subprocess

    reaper = become_subreaper()
    child = subprocess.Popen([sys.executable, *argv], env=os.environ | {SUPERVISED_ENV: "1"})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: child.poll() is None and child.send_signal(signal.SIGTERM))
    rc = child.wait()
    if reaper:
        stop_descendants()
    return rc


def become_subreaper() -> bool:
    """Make this process the child subreaper (Linux >= 3.4): orphaned descendants are re-parented
    to it rather than to init, so it can find, end and reap whatever its Ray leaves behind."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        logger.warning("could not become the child subreaper (errno %d); HAProxy cleanup falls back to a "
                       "search by Ray node", ctypes.get_errno())
        return False
    return True


def _descendant_pids() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def stop_descendants(exclude: set[int] = frozenset(), timeout_s: float = 60.0) -> int:
    """End every descendant of this process not in `exclude` and return once all have exited and
    been reaped: non-HAProxy processes (Ray's workers, the spawners) get SIGKILL first, then HAProxy
    gets SIGTERM (SIGKILL after a grace period). Looks again until none is left, since an orphan is
    re-parented here only as its parent dies. Returns how many were stopped; raises RuntimeError
    naming the pids if any is still running after `timeout_s`."""
    import psutil

    stopped: dict[int, str] = {}
    deadline = time.monotonic() + timeout_s
    while procs := [p for p in psutil.Process().children(recursive=True) if p.pid not in exclude]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of the local Ray still running after {timeout_s:.0f} s: "
                               f"{sorted((p.pid, _name(p)) for p in procs)}; kill them by hand")
        stopped |= {p.pid: _name(p) or "?" for p in procs}  # named while they still run
        haproxies = [p for p in procs if stopped[p.pid] == "haproxy"]
        _end([p for p in procs if p not in haproxies], signal.SIGKILL)
        _end(haproxies, signal.SIGTERM)
    if stopped:
        names = collections.Counter(stopped.values())
        logger.info("stopped %d process(es) that the local Ray left running: %s", len(stopped),
                    ", ".join(f"{n} x{c}" for n, c in sorted(names.items())))
    return len(stopped)


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
