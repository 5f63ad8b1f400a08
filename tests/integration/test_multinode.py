"""distillray on a real 3-node Ray cluster on this machine (a head and two worker nodes, each its
own raylet and object store; tests/integration/multinode_cluster.py runs it in a child process).
Shards, checkpoints, models and the report live in the tests' local S3-protocol server: no node
reads a path that only another node sees.

One cluster and one run check placement and the loss of a node in each stage: a teacher actor's
node mid-precompute, a train worker's node mid-distillation, and a model replica's node under HTTP
load (a cluster start, precompute and evaluation cost more than each fault, so they are paid once).
Each case is its own test over the run's result."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.multinode, pytest.mark.timeout(600)]

RUNNER = REPO / "tests" / "integration" / "multinode_cluster.py"
# tiny data and model: 512 smoke rows (16 shards, so a teacher actor still has blocks to do after its
# first), 2 train workers (one per worker node), no teacher fine-tune
ARGS = ["data.train=smoke", "data.dev=smoke", "data.text_column=sentence", "data.max_length=32",
        "workers.num_workers=2", "workers.cpus_per_worker=1", "workers.resources={train_slot: 1}",
        "train.batch_size=16", "train.lr=2e-3", "train.log_every=8", "precompute.shard_rows=32",
        "precompute.num_actors=2", "precompute.cpus_per_actor=0.5", "teacher.finetune=false",
        "checkpoint.every=16", "workers.max_failures=2", "train.cache_shards=false"]
EPOCHS, STEPS_PER_EPOCH = 2, 512 // 16


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from tiny import make_tiny_bert

    # labelled like the smoke sample, so the job distils from it as is (no fine-tune stage)
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-mn") / "teacher", label_names=["0", "1"])


@pytest.fixture(scope="module")
def run(teacher, s3, tmp_path_factory):
    """The run on the 3-node cluster, its faults and the serving after it: the runner's result,
    the output dir and the shard cache (URIs in the bucket)."""
    out, cache = s3("multinode/run"), s3("multinode/cache")
    result = tmp_path_factory.mktemp("mn") / "result.json"
    args = [*ARGS, f"teacher.model={teacher}", f"train.epochs={EPOCHS}", f"run.output_dir={out}",
            f"precompute.cache_dir={cache}"]
    proc = subprocess.run([sys.executable, str(RUNNER), str(result), "--", *args],
                          cwd=REPO, timeout=540, capture_output=True, text=True)
    assert proc.returncode == 0 and result.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(result.read_text()), out, cache


def test_teacher_node_lost_mid_precompute_gives_the_exact_row_set(run, record_property):
    """The worker node of a teacher actor that has finished a block is removed before the shard dir
    is complete; Ray Data restarts the actor elsewhere and the job ends with every row exactly once,
    in shards whose checksums match the manifest."""
    import pyarrow.parquet as pq

    from distillray import storage
    from distillray.data.shards import load_manifest, shard_paths

    res, out, _ = run
    pre = res["precompute"]
    assert pre.get("killed") in res["worker_nodes"], f"no teacher node was removed: {pre}"
    assert pre["blocks_done"][pre["actor"]["actor_id"]] >= 1  # the lost actor had done work
    assert not pre["manifest_at_kill"] and pre["shards_at_kill"] < 512 // 32, pre  # mid-precompute
    assert res["rc"] == 0 and pre["recover_s"] is not None
    shard_dir = json.loads(storage.read_bytes(storage.join(out, "logits.json")))["shard_dir"]
    manifest = load_manifest(shard_dir, verify=True)  # every shard's sha256
    ids = sorted(i for p in shard_paths(shard_dir, manifest)
                 for i in pq.read_table(storage.resolve(p)[1], filesystem=storage.resolve(p)[0],
                                        columns=["id"]).column("id").to_pylist())
    assert ids == list(range(512)) and manifest["rows"] == 512  # each row exactly once, none missing
    report = json.loads(storage.read_bytes(storage.join(out, "report.json")))
    assert report["training"]["distill"]["steps"] == EPOCHS * STEPS_PER_EPOCH  # trained from them
    record_property("killed_after_s", round(pre["killed_after_s"], 1))  # bench/faults.py shows these
    record_property("recover_s", round(pre["recover_s"], 1))


def test_train_workers_on_separate_nodes_survive_losing_one(run, record_property):
    """jobs/distill.py with 2 train workers, one per worker node. Once a checkpoint is registered,
    the worker node that runs a train worker is removed (its raylet, object store and workers
    killed) and a replacement node joins: the run resumes from the last checkpoint, ends at exactly
    the planned step count, and report.json records the restart."""
    from distillray import storage

    res, out, _ = run
    assert res.get("killed") in res["train_nodes"], f"no node was removed (the run ended or never checkpointed): {res}"
    # placement: the first worker group ran one worker on each worker node, none on the head
    first = sorted(w["node_id"] for w in res["first_group"])
    assert first == sorted(res["train_nodes"]) and res["head"] not in first, res["first_group"]
    # the loss: the job still succeeded, on the surviving worker node and the replacement
    assert res["rc"] == 0
    assert res["killed"] not in res["nodes_alive"] and res["replacement"] in res["nodes_alive"]
    assert res["recover_s"] is not None, "no new worker group came up after the node was lost"
    survivor = next(n for n in res["train_nodes"] if n != res["killed"])
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


def test_serve_replica_node_lost_under_load(run, record_property):
    """The student served by 2 model replicas, one on each worker node, and its HTTP ingress on the
    head, through the head's HTTP proxy under steady load from 2 clients (no retries in the client). The node of one replica is
    removed: no request fails (the ingress resends what the lost replica held), one replica serves
    until a node is added back, and then two again, the new one on the new node."""
    res = run[0]
    sv = res["serve"]
    assert "error" not in sv, sv["error"]
    nodes = [r["node_id"] for r in sv["replicas"]]
    assert len(nodes) == 2 and len(set(nodes)) == 2 and res["head"] not in nodes, sv["replicas"]  # placement
    assert {a["node_id"] for a in sv["api_replicas"] + sv["api_after"]} == {res["head"]}, sv["api_replicas"]
    assert sv.get("killed") in nodes, f"no replica's node was removed: {sv}"
    assert sv["replica_lost_seen_s"] is not None  # one replica left while capacity was missing
    assert sv["recover_s"] is not None, "the lost replica was not replaced after a node was added"
    after = sorted(r["node_id"] for r in sv["replicas_after"])
    assert after == sorted([n for n in nodes if n != sv["killed"]] + [sv["replacement"]]), sv["replicas_after"]
    assert sv["failures"] == [], sv["failures"]  # every request answered 200
    assert sv["ok"] == sv["answers"] and sv["ok"] >= 60
    record_property("killed_after_s", round(sv["killed_after_s"], 1))  # into the load
    record_property("recover_s", round(sv["recover_s"], 1))
