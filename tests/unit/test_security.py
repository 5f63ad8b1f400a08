"""Issue 7, security defaults that need no cluster: loopback binds, safetensors only,
trust_remote_code never on, run names that cannot escape run.output_dir."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import REPO
from distillray.config import load_config
from distillray.errors import ConfigError, ModelError


def test_serve_and_dashboard_bind_loopback_by_default():
    assert load_config(None, []).serve.host == "127.0.0.1"
    assert yaml.safe_load((REPO / "serve" / "config.yaml").read_text())["http_options"]["host"] == "127.0.0.1"
    src = (REPO / "platform" / "distillray" / "ray_utils.py").read_text()
    assert 'dashboard_host="127.0.0.1"' in src


@pytest.mark.parametrize("name", ["../../etc", "a/b", "/abs", ".hidden", "x" * 101])
def test_run_name_cannot_escape_output_dir(name):
    with pytest.raises(ConfigError, match="run.name"):
        load_config(None, [f"run.name={name}"])


@pytest.mark.parametrize("out", ["runs/..", "/tmp/my run", "runs/x", "/", "runs/.x"])
def test_derived_run_name_is_a_safe_folder_name(out):
    name = load_config(None, [f"run.output_dir={out}"]).run_name
    assert name and "/" not in name and not name.startswith(".") and " " not in name


def test_custom_model_code_never_runs(tiny_teacher, tmp_path):
    """A model dir that asks for its own Python code (auto_map) must not get it executed."""
    from distillray.models import load_classifier

    d = tmp_path / "evil"
    shutil.copytree(tiny_teacher, d)
    marker = tmp_path / "code-ran"
    (d / "evil_model.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n"
                                     "from transformers import BertForSequenceClassification as EvilModel\n")
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForSequenceClassification": "evil_model.EvilModel",
                       "AutoConfig": "evil_model.EvilModel"}
    (d / "config.json").write_text(json.dumps(cfg))
    try:
        load_classifier(d)
    except (ModelError, ValueError):
        pass  # refusing is fine too; running the code is not
    assert not marker.exists()


def test_no_trust_remote_code_anywhere_in_the_code():
    for path in [*(REPO / "platform").rglob("*.py"), *(REPO / "serve").rglob("*.py"), *(REPO / "jobs").rglob("*.py")]:
        assert "trust_remote_code=True" not in path.read_text(), path
