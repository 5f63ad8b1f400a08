"""deploy/kuberay manifests, checked offline. No KubeRay CRD schema can be installed from the
package registries this project uses (PyPI ships no KubeRay CRDs; the operator is a Go module),
so the checks are structural: kinds and required fields as the KubeRay v1 API reference gives
them, Ray's own KubeRay autoscaler parsing of each cluster spec (group resources), distillray's
config validation of the job's overrides and of the Serve app's args, and Ray Serve's
`ServeDeploySchema` for serveConfigV2."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO

KUBERAY = REPO / "deploy" / "kuberay"
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _docs(name: str) -> dict[str, dict[str, Any]]:
    """The manifest's objects by kind."""
    docs = [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d]
    return {d["kind"]: d for d in docs}


def _cluster_yaml() -> dict[str, Any]:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _ray_autoscaler_view(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """What Ray's KubeRay autoscaler makes of a RayCluster spec (it also runs Ray's own
    cluster-config validation on the result)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    return _derive_autoscaling_config_from_ray_cr({"metadata": {"name": name, "namespace": "default"}, "spec": spec})


def _check_cluster_spec(name: str, spec: dict[str, Any], token_secret: dict[str, Any]) -> dict[str, Any]:
    cluster = _cluster_yaml()
    assert spec["rayVersion"] == "2.60.0"
    # token authentication stays on: the operator hands this secret's token to every pod
    assert spec["authOptions"] == {"mode": "token", "secretName": token_secret["metadata"]["name"]}
    assert "auth_token" in token_secret.get("stringData", token_secret.get("data", {}))
    for c in _containers(spec):
        assert c["image"] == cluster["docker"]["image"], c["name"]
        # cluster.yaml's setup (torch pinned first, then the project), then KubeRay's own ray start line
        setup = " ".join(c["args"])
        assert setup.index(cluster["setup_commands"][0]) < setup.index("pip install -q -e /home/ray/distillray")
        assert setup.rstrip().endswith("$KUBERAY_GEN_RAY_START_CMD")
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for g in groups:
        assert g["template"]["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
        mounts = {m["mountPath"] for c in g["template"]["spec"]["containers"] for m in c["volumeMounts"]}
        fetched = {m["mountPath"] for c in g["template"]["spec"]["initContainers"] for m in c["volumeMounts"]}
        assert "/home/ray/distillray" in mounts & fetched
    for w in spec["workerGroupSpecs"]:
        assert DNS1123.match(w["groupName"]) and 0 <= w["minReplicas"] <= w["replicas"] <= w["maxReplicas"]
    view = _ray_autoscaler_view(name, spec)
    types = view["available_node_types"]
    assert "GPU" not in types["headgroup"]["resources"]  # the head is CPU-only, as in cluster.yaml
    gpu = types["gpu"]["resources"]
    assert gpu["GPU"] == 1 and gpu["CPU"] == 8
    return view


def test_rayjob_runs_the_distill_job_on_gpu_workers_with_storage_in_a_bucket():
    from distillray import storage
    from distillray.config import load_config

    docs = _docs("rayjob-distill.yaml")
    job, secret = docs["RayJob"], docs["Secret"]
    assert job["apiVersion"] == "ray.io/v1" and DNS1123.match(job["metadata"]["name"])
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] >= 1
    yaml.safe_load(spec["runtimeEnvYAML"])
    _check_cluster_spec(job["metadata"]["name"], spec["rayClusterSpec"], secret)
    # the entrypoint: a real job file, a real preset, overrides that distillray's config accepts
    cmd = spec["entrypoint"].split("&&")[-1]
    argv = shlex.split(cmd)
    assert argv[:2] == ["python", "jobs/distill.py"] and (REPO / argv[1]).is_file()
    assert argv[2] == "--config"
    assert (REPO / "platform" / "distillray" / "presets" / f"{argv[3]}.yaml").is_file()
    cfg = load_config(argv[3], argv[4:])
    assert storage.is_remote(cfg.run.output_dir) and storage.is_remote(cfg.precompute.cache_dir)
    assert cfg.workers.use_gpu and cfg.precompute.use_gpu
    gpu_group = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert cfg.workers.num_workers <= gpu_group["replicas"]  # one GPU per Ray Train worker
    assert cfg.workers.cpus_per_worker <= 8
    # the driver reads the data files the head's init container fetched
    head_init = " ".join(spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["initContainers"][0]["args"])
    assert Path(cfg.data.train).parent.as_posix() in head_init and Path(cfg.data.dev).parent.as_posix() in head_init
    # DeepSpeed / NCCL need shared memory on GPU pods (cluster.yaml: --shm-size=16g)
    w = gpu_group["template"]["spec"]
    assert any(m["mountPath"] == "/dev/shm" for m in w["containers"][0]["volumeMounts"])
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in w["volumes"]


def test_rayservice_serves_the_student_with_rays_own_serve_schema():
    from ray.serve.schema import ServeDeploySchema

    from distillray import storage
    from distillray.config import load_config

    svc = _docs("rayservice-student.yaml")["RayService"]
    token = _docs("rayjob-distill.yaml")["Secret"]
    assert svc["apiVersion"] == "ray.io/v1" and DNS1123.match(svc["metadata"]["name"])
    _check_cluster_spec(svc["metadata"]["name"], svc["spec"]["rayClusterConfig"], token)
    serve_cfg = ServeDeploySchema.model_validate(yaml.safe_load(svc["spec"]["serveConfigV2"]))
    assert serve_cfg.http_options.host == "0.0.0.0"  # KubeRay's serve Service reaches the proxy in the pod
    (app,) = serve_cfg.applications
    module, func = app.import_path.split(":")
    assert module == "serve.app" and f"def {func}(" in (REPO / "serve" / "app.py").read_text()
    # build_app's args become serve.* / dotted overrides: distillray's config must accept them
    args = dict(app.args)
    model = args.pop("model")
    assert storage.is_remote(model)
    cfg = load_config(None, [f"{k if '.' in k else 'serve.' + k}={v}" for k, v in args.items()])
    deployments = {d.name: d for d in app.deployments}
    assert set(deployments) == {"Api", "Classifier"}  # the names serve/app.py binds
    clf = deployments["Classifier"]
    assert clf.max_ongoing_requests >= cfg.serve.max_batch_size
    assert clf.ray_actor_options.num_gpus == 1 and cfg.workers.use_gpu
    gpu_group = svc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert clf.num_replicas >= 2 and gpu_group["minReplicas"] >= 1 and gpu_group["replicas"] >= clf.num_replicas


@pytest.mark.parametrize("name", ["rayjob-distill.yaml", "rayservice-student.yaml"])
def test_a_missing_field_is_caught(name):
    """The structural check can fail: a worker group without maxReplicas is rejected by Ray's parser."""
    docs = _docs(name)
    obj = docs.get("RayJob") or docs["RayService"]
    spec = obj["spec"].get("rayClusterSpec") or obj["spec"]["rayClusterConfig"]
    del spec["workerGroupSpecs"][0]["maxReplicas"]
    with pytest.raises(KeyError):
        _ray_autoscaler_view(obj["metadata"]["name"], spec)


def test_no_real_token_or_key_committed():
    for p in KUBERAY.glob("*.yaml"):
        text = p.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}|AWS_SECRET_ACCESS_KEY=(?!\.\.\.)", text), p
        for d in yaml.safe_load_all(text):
            if d and d["kind"] == "Secret":
                assert set(d["stringData"].values()) == {"REPLACE-WITH-A-LONG-RANDOM-TOKEN"}, p
