"""cluster.yaml passes Ray's own cluster-config validation (offline), and broken copies fail
with a message that names the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from conftest import REPO
from distillray.cluster import main, validate_cluster_yaml
from distillray.errors import ConfigError

CLUSTER_YAML = REPO / "cluster.yaml"


def _broken(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    cfg = yaml.safe_load(CLUSTER_YAML.read_text())
    change(cfg)
    out = tmp_path / "cluster.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


def test_shipped_cluster_yaml_is_valid():
    cfg = validate_cluster_yaml(CLUSTER_YAML)
    assert cfg["provider"]["type"] == "aws"
    assert cfg["docker"]["image"] == "rayproject/ray:2.60.0-py311-gpu"
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert "GPU" not in head["resources"] and not head["node_config"]["InstanceType"].startswith(("g", "p"))
    gpu = cfg["available_node_types"]["gpu_worker"]
    assert gpu["node_config"]["InstanceType"].startswith("g5") and gpu["min_workers"] == 0 < gpu["max_workers"]
    assert cfg["idle_timeout_minutes"] > 0
    assert cfg["setup_commands"][0] == "pip install -q torch==2.13.0"  # before the project pulls torch
    assert any("pip install -q -e /home/ray/distillray" in c for c in cfg["setup_commands"])
    assert cfg["file_mounts"]["/home/ray/distillray"] == "."
    assert all("RAY_AUTH_MODE=token" in c for c in (cfg["head_start_ray_commands"][-1],
                                                     cfg["worker_start_ray_commands"][-1]))


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("provider"), "'provider' with a 'type'"),
    (lambda c: c["provider"].update(type="nocloud"), "Unsupported node provider: nocloud"),
    (lambda c: c.update(max_workers="four"), "max_workers: 'four' is not of type 'integer'"),
    (lambda c: c["docker"].update(imag="x"), "docker: Additional properties are not allowed ('imag'"),
    (lambda c: c.update(head_node_type="nope"), "`head_node_type` must be one of"),
    (lambda c: c["available_node_types"]["gpu_worker"].update(min_workers=3, max_workers=2),
     "available_node_types.gpu_worker: needs 0 <= min_workers <= max_workers"),
])
def test_broken_copies_fail_with_a_clear_message(tmp_path, change, message):
    with pytest.raises(ConfigError, match="cluster.yaml: ") as e:
        validate_cluster_yaml(_broken(tmp_path, change))
    assert message in str(e.value)


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("provider: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        validate_cluster_yaml(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        validate_cluster_yaml(tmp_path / "absent.yaml")


def test_cli(tmp_path, capsys):
    assert main([str(CLUSTER_YAML)]) == 0
    assert "valid (aws" in capsys.readouterr().out
    assert main([str(_broken(tmp_path, lambda c: c.pop("provider")))]) == 2
    assert "provider" in capsys.readouterr().err
