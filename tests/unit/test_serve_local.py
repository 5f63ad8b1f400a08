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
