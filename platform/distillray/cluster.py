"""Offline checks of a Ray cluster launcher config (`cluster.yaml`).

`ray up` validates a config only once it is about to create cloud resources, and there is no
`ray up --dry-run`. This runs the same steps without any cloud SDK or network: merge the
provider's defaults (`prepare_config`), then check the result against Ray's JSON schema and
cross-field rules (`validate_config`). Both are private Ray APIs, so they are used here only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from distillray.errors import ConfigError


def validate_cluster_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Validate a cluster launcher YAML the way `ray up` would, offline.

    Returns the config as Ray will use it (provider defaults filled in). Raises `ConfigError`
    naming the file, the field and what is wrong.
    """
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the cluster config ({e})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e}); fix the file") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (cluster_name, provider, ...)")
    # prepare_config indexes config["provider"]["type"] before any check: catch that here.
    provider = raw.get("provider")
    if not isinstance(provider, dict) or "type" not in provider:
        raise ConfigError(f"{path}: 'provider' with a 'type' (aws, gcp, azure, ...) is required; "
                          "fix: add e.g. provider: {type: aws, region: us-west-2}")
    try:
        prepared = prepare_config(raw)
        validate_config(prepared)
    except jsonschema.ValidationError as e:
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ConfigError(f"{path}: {where}: {e.message}; fix that field "
                          "(see https://docs.ray.io/en/latest/cluster/vms/references/ray-cluster-configuration.html)") from e
    except NotImplementedError as e:  # unknown provider type
        raise ConfigError(f"{path}: provider.type: {e}; fix: use aws, gcp, azure, ...") from e
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ConfigError(f"{path}: invalid cluster config: {e}") from e
    _check_worker_counts(path, prepared)
    return prepared


def _check_worker_counts(path: Path, cfg: dict[str, Any]) -> None:
    """Rules Ray's schema leaves out: 0 <= min_workers <= max_workers <= the global max."""
    for name, node in cfg["available_node_types"].items():
        lo, hi = node.get("min_workers", 0), node.get("max_workers", 0)
        if not 0 <= lo <= hi <= cfg["max_workers"]:
            raise ConfigError(
                f"{path}: available_node_types.{name}: needs 0 <= min_workers <= max_workers <= "
                f"max_workers (global), got min_workers={lo} max_workers={hi} and the global "
                f"max_workers={cfg['max_workers']}; fix those counts")


def main(argv: list[str] | None = None) -> int:
    """`python -m distillray.cluster [cluster.yaml]`: validate, print one line, exit 0 or 2."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    target = args[0] if args else "cluster.yaml"
    try:
        cfg = validate_cluster_yaml(target)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    types = ", ".join(f"{name} ({t.get('min_workers', 0)}-{t.get('max_workers', 0)})"
                      for name, t in cfg["available_node_types"].items() if name != cfg["head_node_type"])
    print(f"{target}: valid ({cfg['provider']['type']}; head {cfg['head_node_type']}; workers {types})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
