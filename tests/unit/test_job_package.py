"""What `ray job submit --working-dir . --runtime-env runtime_env.yaml` uploads: the code the job
runs, and none of .venv, runs/, caches, tests or .git. Uses Ray's own packaging code (private API,
the same function `ray job submit` calls), so .rayignore / .gitignore are read exactly as Ray does."""

from __future__ import annotations

from pathlib import Path
from zipfile import ZipFile

import yaml
from ray._private import ray_constants
from ray._private.runtime_env.packaging import _zip_files

from conftest import REPO


def _uploaded(path: Path, excludes: list[str], tmp_path: Path, parent: bool = False) -> list[str]:
    out = tmp_path / f"{path.name}.zip"
    _zip_files(str(path), excludes, str(out), include_gitignore=True, include_parent_dir=parent)
    return ZipFile(out).namelist()


def test_working_dir_upload_holds_code_only(tmp_path):
    env = yaml.safe_load((REPO / "runtime_env.yaml").read_text())
    excludes = ray_constants.get_runtime_env_default_excludes() + env["excludes"]
    names = _uploaded(REPO, excludes, tmp_path)
    assert {"jobs/distill.py", "pyproject.toml", "platform/distillray/config/__init__.py",
            "platform/distillray/presets/demo.yaml"} <= set(names)
    for left_out in (".venv/", "venv/", "runs/", ".git/", "tests/", ".pytest_cache/", ".cache/", "bench/"):
        assert not [n for n in names if n.startswith(left_out)], left_out
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or ".egg-info" in n]
    assert sum((REPO / n).stat().st_size for n in names if (REPO / n).is_file()) < 5 * 2**20


def test_py_modules_upload_is_the_library(tmp_path):
    env = yaml.safe_load((REPO / "runtime_env.yaml").read_text())
    (lib,) = env["py_modules"]
    names = _uploaded(REPO / lib, env["excludes"], tmp_path, parent=True)
    assert {"distillray/__init__.py", "distillray/presets/sst2.yaml"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
