"""A 3-node Ray cluster on this machine, for tests/integration/test_multinode.py.

`ray.cluster_utils.Cluster` starts a head and two worker nodes, each with its own raylet and
object store (the same processes `ray start` runs per machine). It runs in a child process of
the test, so its Ray never meets the test session's local one:

    python tests/integration/multinode_cluster.py RESULT_JSON -- DISTILL_ARGS...

It runs jobs/distill.py on the cluster. Once the student run has registered a checkpoint, it notes
where the Ray Train workers run, removes a worker node that runs one (all its processes killed:
raylet, object store, workers) and adds a replacement node. The result (exit code, node ids, where
the workers ran before and after, times) is written as JSON for the test to check.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "jobs"))
sys.path.insert(0, str(REPO / "platform"))

# Each worker node offers one train slot; workers.resources={train_slot: 1} puts one train worker per node.
WORKER_NODE = {"num_cpus": 2, "resources": {"train_slot": 1}, "object_store_memory": 150 << 20}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_workers(alive_only: bool = False) -> list[dict[str, Any]]:
    """Ray Train workers known to the cluster (Ray's state API): actor id, node id, state."""
    import ray
    from ray.util.state import list_actors

    filters = [("class_name", "=", "RayTrainWorker")] + ([("state", "=", "ALIVE")] if alive_only else [])
    actors = list_actors(address=ray.get_runtime_context().gcs_address, filters=filters, limit=1000)
    return [{"actor_id": a.actor_id, "node_id": a.node_id, "state": a.state} for a in actors]


def checkpoint_registered(output_dir: str) -> bool:
    """True once Ray Train has registered a checkpoint of the student run (its controller writes
    the checkpoint manager's snapshot after registering one)."""
    import pyarrow.fs as pafs

    from distillray import storage

    fs, path = storage.resolve(storage.join(output_dir, "ray"))
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError:
        return False
    for i in infos:
        if "-student-" in i.path and i.path.endswith("checkpoint_manager_snapshot.json"):
            with fs.open_input_stream(i.path) as f:
                if json.loads(f.read()).get("checkpoint_results"):
                    return True
    return False


def main(argv: list[str]) -> int:
    import ray
    from ray.cluster_utils import Cluster

    result_path, args = Path(argv[0]), argv[2:]
    head_args = {"num_cpus": 1, "include_dashboard": True, "dashboard_host": "127.0.0.1",
                 "dashboard_port": _free_port(), "object_store_memory": 150 << 20}
    t0 = time.time()
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    out: dict[str, Any] = {}
    try:
        workers = [cluster.add_node(**WORKER_NODE) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)  # the job's ray_session joins this connection
        out |= {"head": cluster.head_node.node_id, "worker_nodes": [w.node_id for w in workers],
                "cluster_start_s": time.time() - t0}
        out |= _run_and_lose_a_node(cluster, workers, [*args, f"run.address={cluster.address}"], args)
        out["train_workers"] = train_workers()
        out["nodes_alive"] = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    finally:
        result_path.write_text(json.dumps(out, indent=2))
        ray.shutdown()
        cluster.shutdown()
    return 0


def _run_and_lose_a_node(cluster, workers, job_args: list[str], args: list[str]) -> dict[str, Any]:
    import distill

    output_dir = next(a.split("=", 1)[1] for a in args if a.startswith("run.output_dir="))
    res: dict[str, Any] = {}
    job = threading.Thread(target=lambda: res.update(rc=distill.main(job_args)), daemon=True)
    t_start = time.time()
    job.start()
    deadline = time.time() + 240
    while job.is_alive() and time.time() < deadline and not checkpoint_registered(output_dir):
        time.sleep(0.5)  # polling the bucket
    if not job.is_alive() or time.time() >= deadline:
        job.join(timeout=60)
        return {**res, "killed": None}
    alive = train_workers(alive_only=True)
    res["first_group"] = alive
    victim = next(w for w in workers if w.node_id in {a["node_id"] for a in alive})
    before = {a["actor_id"] for a in alive}
    t_kill = time.time()
    cluster.remove_node(victim, allow_graceful=False)  # SIGKILL: raylet, object store, its workers
    replacement = cluster.add_node(**WORKER_NODE)
    recovered = None
    while job.is_alive() and time.time() < t_kill + 240:
        now = train_workers(alive_only=True)
        if len(now) == 2 and not {a["actor_id"] for a in now} & before:
            recovered = time.time() - t_kill  # a new worker group is up again
            break
        time.sleep(0.5)
    job.join(timeout=600)
    return {**res, "killed": victim.node_id, "replacement": replacement.node_id,
            "killed_after_s": t_kill - t_start, "recover_s": recovered}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
