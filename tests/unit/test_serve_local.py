"""serve/local.py's HAProxy sweep on real processes: a stand-in for Serve's HAProxyManager actor
(a process named `ray::...`) that starts a new `haproxy` each time its HAProxy exits, as a reload
does, must not leave one behind; HAProxy of another Ray node is left alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from serve.local import node_haproxies, stop_node_haproxies

NODE = "ab12" * 14  # a Ray node id: 56 hex digits
OTHER = "cd34" * 14

# the spawner: keeps one `haproxy -f <dir>/<node>/haproxy.cfg` child alive, restarting it whenever
# it exits, until it is killed itself
SPAWNER = textwrap.dedent("""
    import subprocess, sys, time
    haproxy, cfg = sys.argv[1], sys.argv[2]
    while True:
        child = subprocess.Popen([haproxy, "-c", "sleep 600; :", "-f", cfg])
        print(child.pid, flush=True)
        child.wait()
""")


def stand_ins(tmp_path: Path, node: str) -> subprocess.Popen:
    """Start a spawner named ray::HAProxyManager and wait for its first haproxy."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "haproxy").exists():
        (bin_dir / "haproxy").symlink_to("/bin/bash")  # the process is named after the file it runs
        (bin_dir / "ray::HAProxyManager").symlink_to(sys.executable)
    cfg = tmp_path / "haproxy-serve" / node / "haproxy.cfg"
    script = tmp_path / "spawner.py"
    script.write_text(SPAWNER)
    proc = subprocess.Popen([str(bin_dir / "ray::HAProxyManager"), str(script), str(bin_dir / "haproxy"), str(cfg)],
                            stdout=subprocess.PIPE, text=True)
    int(proc.stdout.readline())  # the first haproxy is running
    return proc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process names via /proc")
def test_sweep_ends_the_spawner_and_every_haproxy_of_the_node(tmp_path):
    mine = stand_ins(tmp_path, NODE)
    other = stand_ins(tmp_path, OTHER)
    try:
        assert len(node_haproxies(NODE)) == 1
        assert stop_node_haproxies(NODE, timeout_s=30) == 1
        # it returned only once they had exited: nothing of this node is left, and the spawner is
        # gone, so nothing can start another
        assert node_haproxies(NODE) == []
        assert mine.poll() is not None
        assert other.poll() is None and len(node_haproxies(OTHER)) == 1  # another node's is untouched
        assert stop_node_haproxies(OTHER, timeout_s=30) == 1
        assert other.poll() is not None
    finally:
        for p in (mine, other):
            if p.poll() is None:
                for child in psutil.Process(p.pid).children():
                    child.kill()
                p.kill()
            p.wait()


def test_sweep_with_nothing_to_stop_returns_zero():
    assert stop_node_haproxies(NODE) == 0


# the app: child subreaper, then a "raylet" that starts a "worker" (its own session, as Ray's are)
# and exits at once, as a raylet ends under a SIGTERM to the app's group. The worker has no HAProxy
# yet when the app sweeps: it starts one a moment later, as a reload queued in Serve's
# HAProxyManager does. The sweep must end the worker too, so no HAProxy ever appears.
APP = textwrap.dedent("""
    import json, subprocess, sys, time
    import psutil
    from serve.local import become_subreaper, stop_descendants
    worker_bin, spawner, haproxy, cfg = sys.argv[1:5]
    assert become_subreaper()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    raylet = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys; "
        "w = subprocess.Popen(sys.argv[1:], start_new_session=True); print(w.pid, flush=True)"),
        worker_bin, spawner, haproxy, cfg, "1.0"], stdout=subprocess.PIPE, text=True)
    worker = int(raylet.stdout.readline())
    raylet.wait()
    while psutil.Process(worker).ppid() != psutil.Process().pid:  # re-parented to this subreaper
        time.sleep(0.01)
    haproxies_at_sweep = [p.pid for p in psutil.Process(worker).children() if p.name() == "haproxy"]
    stopped = stop_descendants(exclude=before, timeout_s=30)
    print(json.dumps({"worker": worker, "stopped": stopped, "haproxies_at_sweep": haproxies_at_sweep,
                      "left": [p.pid for p in psutil.Process().children(recursive=True)]}), flush=True)
""")

DELAYED_SPAWNER = textwrap.dedent("""
    import subprocess, sys, time
    haproxy, cfg, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    time.sleep(delay)
    while True:
        subprocess.Popen([haproxy, "-c", "sleep 600; :", "-f", cfg]).wait()
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="child subreaper and /proc are Linux")
def test_descendant_sweep_ends_a_spawner_that_has_no_haproxy_yet(tmp_path):
    import json
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "haproxy").symlink_to("/bin/bash")
    (bin_dir / "ray::HAProxyManager").symlink_to(sys.executable)
    cfg = tmp_path / "haproxy-serve" / NODE / "haproxy.cfg"
    (tmp_path / "spawner.py").write_text(DELAYED_SPAWNER)
    (tmp_path / "app.py").write_text(APP)
    repo = Path(__file__).resolve().parents[2]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(repo), str(repo / "platform")])}
    out = subprocess.run([sys.executable, str(tmp_path / "app.py"), str(bin_dir / "ray::HAProxyManager"),
                          str(tmp_path / "spawner.py"), str(bin_dir / "haproxy"), str(cfg)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["haproxies_at_sweep"] == []  # a look for HAProxy alone would have found nothing to stop
    assert got["stopped"] == 1 and got["left"] == []
    assert not psutil.pid_exists(got["worker"])  # ended and reaped, so it can never start an HAProxy
    assert node_haproxies(NODE) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="child subreaper and /proc are Linux")
def test_supervisor_ends_what_an_abruptly_ended_driver_left(tmp_path):
    """The driver starts an HAProxy stand-in in its own session and is then ended with no cleanup
    (as a driver's core worker may end it): the supervisor still returns its exit code only once
    the stand-in is gone."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "haproxy").symlink_to("/bin/bash")
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""
        import os, subprocess
        p = subprocess.Popen([{str(bin_dir / "haproxy")!r}, "-c", "sleep 600; :"], start_new_session=True)
        print(p.pid, flush=True)
        os._exit(3)
    """))
    repo = Path(__file__).resolve().parents[2]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(repo), str(repo / "platform")])}
    out = subprocess.run([sys.executable, "-c", "import sys; from serve.local import supervise; "
                          f"sys.exit(supervise([{str(driver)!r}]))"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 3, out.stderr[-2000:]
    assert not psutil.pid_exists(int(out.stdout.split()[0]))
