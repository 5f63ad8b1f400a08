"""distillray on a real 3-node Ray cluster on this machine (a head and two worker nodes, each its
own raylet and object store; tests/integration/multinode_cluster.py runs it in a child process).
Shards, checkpoints, models and the report live in the tests' local S3-protocol server: no node
reads a path that only another node sees.

One run checks both placement and the loss of a node (a cluster start, precompute and evaluation
cost more than the training itself, so they are paid once)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.multinode, pytest.mark.timeout(600)]

RUNNER = REPO / "tests" / "integration" / "multinode_cluster.py"
# tiny data and model: 512 smoke rows, 2 train workers (one per worker node), no teacher fine-tune
ARGS = ["data.train=smoke", "data.dev=smoke", "data.text_column=sentence", "data.max_length=32",
        "workers.num_workers=2", "workers.cpus_per_worker=1", "workers.resources={train_slot: 1}",
        "train.batch_size=16", "train.lr=2e-3", "train.log_every=8", "precompute.shard_rows=128",
        "precompute.num_actors=2", "precompute.cpus_per_actor=0.5", "teacher.finetune=false",
        "checkpoint.every=8", "workers.max_failures=2", "train.cache_shards=false"]
EPOCHS, STEPS_PER_EPOCH = 2, 512 // 16


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from tiny import make_tiny_bert

    # labelled like the smoke sample, so the job distils from it as is (no fine-tune stage)
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-mn") / "teacher", label_names=["0", "1"])


def test_train_workers_on_separate_nodes_survive_losing_one(teacher, s3, tmp_path, record_property):
    """jobs/distill.py with 2 train workers, one per worker node. Once a checkpoint is registered,
    the worker node that runs a train worker is removed (its raylet, object store and workers
    killed) and a replacement node joins: the run resumes from the last checkpoint, ends at exactly
    the planned step count, and report.json records the restart."""
    from distillray import storage

    out, cache = s3("multinode/run"), s3("multinode/cache")
    result = tmp_path / "result.json"
    args = [*ARGS, f"teacher.model={teacher}", f"train.epochs={EPOCHS}", f"run.output_dir={out}",
            f"precompute.cache_dir={cache}"]
    proc = subprocess.run([sys.executable, str(RUNNER), str(result), "--", *args],
                          cwd=REPO, timeout=540, capture_output=True, text=True)
    assert proc.returncode == 0 and result.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(result.read_text())
    assert res.get("killed") in res["worker_nodes"], f"no node was removed (the run ended or never checkpointed): {res}"
    # placement: the first worker group ran one worker on each worker node, none on the head
    first = sorted(w["node_id"] for w in res["first_group"])
    assert first == sorted(res["worker_nodes"]) and res["head"] not in first, res["first_group"]
    # the loss: the job still succeeded, on the surviving worker node and the replacement
    assert res["rc"] == 0
    assert res["killed"] not in res["nodes_alive"] and res["replacement"] in res["nodes_alive"]
    assert res["recover_s"] is not None, "no new worker group came up after the node was lost"
    survivor = next(n for n in res["worker_nodes"] if n != res["killed"])
    later = {w["node_id"] for w in res["train_workers"] if w["actor_id"] not in
             {f["actor_id"] for f in res["first_group"]}}
    assert later == {survivor, res["replacement"]}, res["train_workers"]
    # the run: exactly the planned steps, the restart recorded, every output in the bucket
    report = json.loads(storage.read_bytes(storage.join(out, "report.json")))
    assert report["training"]["distill"]["steps"] == EPOCHS * STEPS_PER_EPOCH
    assert report["training"]["distill"]["resumes"] >= 1
    assert report["student"]["accuracy"] > 0 and report["config"]["workers"]["resources"] == {"train_slot": 1}
    shard_dir = json.loads(storage.read_bytes(storage.join(out, "logits.json")))["shard_dir"]
    assert shard_dir.startswith("s3://") and storage.is_file(storage.join(shard_dir, "manifest.json"))
    for name in ("student/model.safetensors", "teacher/config.json", "metrics/distill.jsonl"):
        assert storage.is_file(storage.join(out, name)), name
    record_property("killed_after_s", round(res["killed_after_s"], 1))  # bench/faults.py shows these
    record_property("recover_s", round(res["recover_s"], 1))
