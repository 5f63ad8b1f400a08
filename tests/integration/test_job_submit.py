"""`ray job submit` exactly as the README tells a user to run it: the bash block of "Running with
`ray job submit`" (between <!-- job-submit:start --> and <!-- job-submit:end -->) runs as written,
from the PATH a user's shell has: no virtualenv on it, only what the block's own `source
.venv/bin/activate` puts there. So the job's `python` is whatever the block makes it, as for a
user. The test waits for the job to succeed, checks the artefacts, that the job API refuses a
request without the token, and reads distillray's custom metrics back from the head's Prometheus
export while the job runs.

What the test changes in the block, and why (each edit must find its text, so the README cannot
drift from what runs here):
- `ray start --head` gets free ports, its own --temp-dir and a small object store, so other Ray
  instances on the machine (the session's `ray_local`, other users') are untouched;
- `127.0.0.1:8265` becomes that head's dashboard port;
- the job gets overrides appended (the smoke sample, a tiny teacher, 12 steps, a temp output
  dir): minutes, not the demo's ten;
- the block's final `ray stop` is left out: it stops every Ray instance of this user on the
  machine. The test stops its head by killing the processes that inherited its marker variable.
HOME is a fresh temp dir, so `ray get-auth-token --generate` writes this head's own token to
HOME/.ray/auth_token, and no token setting leaks into this pytest process.
"""

from __future__ import annotations

import json
import os
import re
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
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(960)]

MARKER = "DISTILLRAY_TEST_HEAD"
BLOCK_START, BLOCK_END = "<!-- job-submit:start -->", "<!-- job-submit:end -->"
JOB_TIMEOUT_S = 720  # ~4 min on an idle 2-core machine; far more when it is shared


def readme_block() -> str:
    """The README's job-submit bash block, as a user would paste it."""
    text = (REPO / "README.md").read_text()
    m = re.search(re.escape(BLOCK_START) + r"\s*```bash\n(.*?)```\s*" + re.escape(BLOCK_END), text, re.S)
    assert m, f"README.md has no ```bash block between {BLOCK_START} and {BLOCK_END}"
    return m.group(1)


def _edit(script: str, old: str, new: str) -> str:
    assert old in script, f"the README's job-submit block no longer has {old!r}: update this test"
    return script.replace(old, new)


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


def _stop(proc: subprocess.Popen, marker: str) -> list[int]:
    """Stop the block's shell and this head only; returns pids that would not die (should be none)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):  # what `ray stop` does, to ours
        for pid in _marked_pids(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait_s
        while _marked_pids(marker) and time.time() < deadline:
            time.sleep(1)
    return _marked_pids(marker)


def _user_env(home: Path, marker: str) -> dict[str, str]:
    """A user's shell: this one's variables without the virtualenv (on PATH or VIRTUAL_ENV), Ray
    or Python settings; a fresh HOME."""
    venv_bins = {Path(sys.prefix, "bin").resolve(), (REPO / ".venv" / "bin").resolve()}
    if os.environ.get("VIRTUAL_ENV"):
        venv_bins.add(Path(os.environ["VIRTUAL_ENV"], "bin").resolve())
    path = os.pathsep.join(p for p in os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep)
                           if p and Path(p).resolve() not in venv_bins)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "VIRTUAL_ENV", "PYTHON", "CONDA", "PYTEST", "DISTILLRAY"))}
    env.update({
        "HOME": str(home), "PATH": path, MARKER: marker,
        # DeepSpeed's CPU comm op, built once per machine: reuse it, not a rebuild in the new HOME
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR",
                                               str(Path.home() / ".cache" / "torch_extensions")),
        "RAY_metrics_report_interval_ms": "1000",  # export custom metrics every second (default 10 s)
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # no Serve here: stop at once, not after 30 s
    })
    return env


def _api(dashboard: str, path: str, token: str | None) -> tuple[int, str]:
    req = urllib.request.Request(dashboard + path)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _metric_names(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^(ray_distillray_\w+?)(?:_bucket|_count|_sum)?[{ ]", text, re.M)}


def _scrape(url: str) -> set[str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return _metric_names(r.read().decode())
    except OSError:
        return set()


def test_readme_job_submit_block_with_token_auth_and_metrics(tmp_path):
    from tiny import make_tiny_bert

    activate = REPO / ".venv" / "bin" / "activate"
    if not activate.exists():
        pytest.skip(f"{activate} not found: the README's block activates the repo's .venv (make setup)")
    # Labels named as the demo preset names them, so the teacher counts as fine-tuned: no fine-tune.
    teacher = make_tiny_bert(tmp_path / "teacher", label_names=["negative", "positive"])
    out = tmp_path / "run"
    home = tmp_path / "home"
    home.mkdir()
    # A short root: Ray's unix socket paths live under it and must stay under 107 characters.
    temp_dir = Path(tempfile.mkdtemp(prefix="drhead-", dir="/tmp"))
    marker = uuid.uuid4().hex
    gcs, dash, metrics, agent_http, agent_grpc, env_agent, client, node_mgr, obj_mgr = _free_ports(9)
    dashboard, metrics_url = f"http://127.0.0.1:{dash}", f"http://127.0.0.1:{metrics}/metrics"

    script = readme_block()
    # Ray 2.60 swaps a loopback --node-ip-address for the machine's routable IP and its GCS listens
    # on all interfaces: the dashboard (--dashboard-host) is what stays on 127.0.0.1, and the
    # token is what guards the rest. Every port is a free one, so other Ray instances are untouched.
    script = _edit(script, "ray start --head", " ".join([
        "ray start --head --disable-usage-stats --node-ip-address 127.0.0.1", "--port", str(gcs),
        "--dashboard-port", str(dash), "--metrics-export-port", str(metrics),
        "--dashboard-agent-listen-port", str(agent_http), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--runtime-env-agent-port", str(env_agent), "--ray-client-server-port", str(client),
        "--node-manager-port", str(node_mgr), "--object-manager-port", str(obj_mgr),
        "--object-store-memory", str(512 * 2**20), "--temp-dir", str(temp_dir)]))
    script = _edit(script, "127.0.0.1:8265", f"127.0.0.1:{dash}")
    lines = script.replace("\\\n", " ").splitlines()
    submit = [i for i, ln in enumerate(lines) if "ray job submit" in ln and "python jobs/distill.py" in ln]
    assert len(submit) == 1, f"expected one `ray job submit ... python jobs/distill.py` in the block:\n{script}"
    lines[submit[0]] += " " + " ".join([
        "data.train=smoke", "data.dev=smoke", "data.max_length=32", f"teacher.model={teacher}",
        "workers.num_workers=1", "train.batch_size=16", "train.epochs=1",
        "train.max_steps=12", "train.log_every=2", "train.eval_every=4", "checkpoint.every=0",
        "precompute.shard_rows=64", f"run.output_dir={out}", f"precompute.cache_dir={tmp_path / 'cache'}",
        "run.name=job-submit-test"])
    stops = [i for i, ln in enumerate(lines) if ln.strip() == "ray stop"]
    assert stops, "the README's job-submit block no longer ends with `ray stop`: update this test"
    script = "\n".join(ln for i, ln in enumerate(lines) if i not in stops) + "\n"

    env = _user_env(home, marker)
    log = tmp_path / "block.log"
    with open(log, "wb") as f:  # a file, not a pipe: Ray's daemons inherit the shell's stdout
        proc = subprocess.Popen(["bash", "--noprofile", "--norc", "-c", script], env=env, cwd=REPO,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    seen: set[str] = set()
    token = None
    refused = None
    jobs: list[dict] = []
    try:
        deadline = time.time() + JOB_TIMEOUT_S
        while proc.poll() is None and time.time() < deadline:
            time.sleep(1)
            token_file = home / ".ray" / "auth_token"
            if token is None and token_file.exists():
                token = token_file.read_text().strip() or None
            if token is None:
                continue
            try:
                if refused is None and _api(dashboard, "/api/version", token)[0] == 200:
                    refused = _api(dashboard, "/api/jobs/", None)
                code, body = _api(dashboard, "/api/jobs/", token)
            except OSError:  # the head is not up yet
                continue
            if code == 200:
                jobs = json.loads(body)
            seen |= _scrape(metrics_url)
        block_out = log.read_text(errors="replace")
        assert proc.poll() is not None, f"the block did not finish in {JOB_TIMEOUT_S} s:\n{block_out[-6000:]}"
        assert token, f"no token in {home}/.ray/auth_token after the block's `ray get-auth-token`:\n{block_out}"
        assert refused and refused[0] == 401, f"token auth is not on: GET /api/jobs/ without a token gave {refused}"
        code, body = _api(dashboard, "/api/jobs/", token)
        assert code == 200, f"GET /api/jobs/ with the token: HTTP {code} {body[:300]}"
        jobs = json.loads(body)
        assert len(jobs) == 1, f"expected the block's one job, got {jobs}"
        assert jobs[0]["status"] == "SUCCEEDED", f"job ended {jobs[0]['status']}; the block's output:\n{block_out[-8000:]}"
        seen |= _scrape(metrics_url)  # gauges set by the long-lived driver process may still be there
    finally:
        left = _stop(proc, marker)
        for driver_log in temp_dir.glob("session_*/logs/job-driver-*.log"):  # kept for debugging
            shutil.copy(driver_log, tmp_path)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"processes of the test head still alive after stopping it: {left}"

    report = json.loads((out / "report.json").read_text())
    assert 0.0 <= report["student"]["accuracy"] <= 1.0
    assert (out / "student" / "model.safetensors").exists()
    assert report["training"]["distill"]["steps"] == 12
    assert '"student_accuracy"' in block_out  # the job's last line, through `ray job logs --follow`
    # `ray job logs --follow` ends with it, then `ray job status` says it again
    assert len(re.findall(r"Job '[\w-]+' succeeded", block_out)) == 2, block_out[-3000:]
    print("distillray metrics seen on the Prometheus export:", sorted(seen))
    assert seen, "no ray_distillray_* metric appeared on the metrics export while the job ran"
    assert seen & {"ray_distillray_train_loss", "ray_distillray_train_examples_per_second",
                   "ray_distillray_dev_accuracy"}, f"no train metric seen: {sorted(seen)}"
