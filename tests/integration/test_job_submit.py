"""`ray job submit` against a real head, as a user runs it: `ray start --head` on 127.0.0.1 with
token authentication on, `ray job submit --working-dir . --runtime-env runtime_env.yaml -- python
jobs/distill.py ...`, wait for SUCCEEDED, check the artefacts, and read distillray's custom
metrics back from the head's Prometheus export while the job runs.

The head is this test's own: its own temp dir, free ports and auth token, started as a
`ray start --head --block` subprocess in its own process group. It is stopped by killing that
group, then every process that inherited its marker variable, never with `ray stop` (which would
stop every Ray instance on the machine, including the session's `ray_local`). Clients run as
subprocesses or over plain HTTP, so the token settings never leak into this pytest process.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(960)]

BIN = Path(sys.executable).parent  # the venv: the head, and so every job, runs its python
MARKER = "DISTILLRAY_TEST_HEAD"
JOB_TIMEOUT_S = 720  # ~4 min on an idle 2-core machine; far more when it is shared


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries this head's marker (all of them inherit it)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if f"{MARKER}={marker}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:  # exited, or not ours to read
            pass
    return pids


@dataclass
class Head:
    dashboard: str  # http://127.0.0.1:PORT: dashboard and job API (token auth)
    metrics: str  # http://127.0.0.1:PORT/metrics: Prometheus text (no auth)
    token: str
    env: dict[str, str]  # what a client on this machine needs (RAY_AUTH_MODE, token path)

    def api(self, path: str, token: str | None = "self") -> tuple[int, str]:
        req = urllib.request.Request(self.dashboard + path)
        if token:
            req.add_header("Authorization", f"Bearer {self.token if token == 'self' else token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")


def _die_with_parent() -> None:
    """In the `ray start` child: SIGTERM it if pytest dies, so no head outlives a killed test run."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)


def _stop(proc: subprocess.Popen, marker: str) -> list[int]:
    """Stop this head only; returns pids that would not die (should be none)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` shuts its processes down
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    deadline = time.time() + 20
    while (left := _marked_pids(marker)) and time.time() < deadline:
        time.sleep(1)
    for pid in left:  # workers or job drivers that outlived the head
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(1)
    return _marked_pids(marker)


@pytest.fixture
def ray_head(tmp_path) -> Iterator[Head]:
    # A short root: Ray's unix socket paths live under it and must stay under 107 characters.
    temp_dir = Path(tempfile.mkdtemp(prefix="drhead-", dir="/tmp"))
    token_path = temp_dir / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    marker = uuid.uuid4().hex
    gcs, dash, metrics, agent_http, agent_grpc, env_agent, client, node_mgr, obj_mgr = _free_ports(9)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)})
    client_env = dict(env)
    env.update({
        MARKER: marker,
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # the job's `python` is this venv's
        "RAY_metrics_report_interval_ms": "1000",  # export custom metrics every second (default 10 s)
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # no Serve here: stop at once, not after 30 s
    })
    # Ray 2.60 swaps a loopback --node-ip-address for the machine's routable IP and its GCS listens
    # on all interfaces: the dashboard (--dashboard-host) is what stays on 127.0.0.1, and the
    # token is what guards the rest. Every port is a free one, so other Ray instances are untouched.
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
           "--node-ip-address", "127.0.0.1", "--port", str(gcs),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
           "--metrics-export-port", str(metrics), "--dashboard-agent-listen-port", str(agent_http),
           "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(env_agent),
           "--ray-client-server-port", str(client), "--node-manager-port", str(node_mgr),
           "--object-manager-port", str(obj_mgr), "--num-cpus", "4",
           "--object-store-memory", str(512 * 2**20), "--temp-dir", str(temp_dir)]
    log = tmp_path / "ray-start.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)
    head = Head(f"http://127.0.0.1:{dash}", f"http://127.0.0.1:{metrics}/metrics",
                token_path.read_text(), client_env)
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, f"ray start exited with {proc.returncode}:\n{log.read_text()}"
            try:
                if head.api("/api/version")[0] == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline, f"the head did not come up in 120 s:\n{log.read_text()}"
            time.sleep(1)
        yield head
    finally:
        left = _stop(proc, marker)
        for driver_log in temp_dir.glob("session_*/logs/job-driver-*.log"):  # kept for debugging
            shutil.copy(driver_log, tmp_path)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"processes of the test head still alive after stopping it: {left}"


def _ray_cli(head: Head, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=head.env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def _metric_names(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^(ray_distillray_\w+?)(?:_bucket|_count|_sum)?[{ ]", text, re.M)}


def test_job_submit_distill_with_token_auth_and_metrics(ray_head, tmp_path):
    from tiny import make_tiny_bert

    # Labels "0"/"1" match the smoke sample's, so the teacher counts as fine-tuned: no fine-tune.
    teacher = make_tiny_bert(tmp_path / "teacher")
    out = tmp_path / "run"
    job_id = f"distillray-test-{uuid.uuid4().hex[:8]}"

    status, body = ray_head.api("/api/jobs/", token=None)
    assert status == 401, f"token auth is not on: GET /api/jobs/ without a token gave {status} {body[:200]}"

    submit = _ray_cli(
        ray_head, "job", "submit", "--address", ray_head.dashboard, "--submission-id", job_id,
        "--working-dir", ".", "--runtime-env", "runtime_env.yaml", "--no-wait", "--",
        "python", "jobs/distill.py", "data.train=smoke", "data.dev=smoke", "data.text_column=sentence",
        "data.max_length=32", f"teacher.model={teacher}", "train.num_workers=1", "train.batch_size=16",
        "train.epochs=1", "train.max_steps=12", "train.log_every=2", "train.eval_every=4",
        "train.checkpoint_every=0", "precompute.shard_rows=64", f"run.output_dir={out}",
        f"precompute.cache_dir={tmp_path / 'cache'}", "run.name=job-submit-test")
    assert submit.returncode == 0, f"ray job submit failed:\n{submit.stdout}\n{submit.stderr}"

    seen: set[str] = set()
    deadline = time.time() + JOB_TIMEOUT_S
    state = "PENDING"
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(ray_head.metrics, timeout=5) as r:
                seen |= _metric_names(r.read().decode())
        except OSError:
            pass
        code, body = ray_head.api(f"/api/jobs/{job_id}")
        assert code == 200, f"job status: HTTP {code} {body[:300]}"
        if json.loads(body)["status"] != state:
            state = json.loads(body)["status"]
            print(f"{time.strftime('%X')} job {job_id}: {state}")
        if state in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(0.5)
    logs = _ray_cli(ray_head, "job", "logs", "--address", ray_head.dashboard, job_id)
    job_log = logs.stdout[-6000:] + logs.stderr[-2000:]
    assert state == "SUCCEEDED", f"job ended {state} (or timed out after {JOB_TIMEOUT_S} s); logs:\n{job_log}"

    report = json.loads((out / "report.json").read_text())
    assert 0.0 <= report["student"]["accuracy"] <= 1.0
    assert (out / "student" / "model.safetensors").exists()
    assert report["training"]["distill"]["steps"] == 12
    assert '"student_accuracy"' in job_log  # the job's last line, through `ray job logs`

    try:  # gauges set by the long-lived driver process may still be there
        with urllib.request.urlopen(ray_head.metrics, timeout=5) as r:
            seen |= _metric_names(r.read().decode())
    except OSError:
        pass
    print("distillray metrics seen on the Prometheus export:", sorted(seen))
    assert seen, "no ray_distillray_* metric appeared on the metrics export while the job ran"
    assert seen & {"ray_distillray_train_loss", "ray_distillray_train_examples_per_second",
                   "ray_distillray_dev_accuracy"}, f"no train metric seen: {sorted(seen)}"
