"""A 3-node Ray cluster on this machine, for tests/integration/test_multinode.py.

`ray.cluster_utils.Cluster` starts a head and two worker nodes, each with its own raylet and
object store (the same processes `ray start` runs per machine). It runs in a child process of
the test, so its Ray never meets the test session's local one:

    python tests/integration/multinode_cluster.py RESULT_JSON -- DISTILL_ARGS...

It runs jobs/distill.py on the cluster and loses a node twice during it, adding a replacement each
time: a worker node with a teacher actor once that actor has processed a block of the precompute,
and a worker node with a Ray Train worker once the student run has registered a checkpoint. Then it
serves the student with 2 model replicas, one per worker node, under steady HTTP load, loses the
node of one, and adds a node back. The result (exit code, node ids, where actors, workers and
replicas ran before and after, every HTTP status, times) is written as JSON for the test to check.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "jobs"))
sys.path.insert(0, str(REPO / "platform"))
sys.path.insert(0, str(REPO))  # serve.app

TOTAL_TIMEOUT_S = 240  # for each wait below: polling the cluster's state, never a fixed sleep

# Each worker node offers one train slot and one serve slot: workers.resources={train_slot: 1} puts
# one train worker, serve.resources={serve_slot: 1} one model replica, on each worker node.
WORKER_NODE = {"num_cpus": 2, "resources": {"train_slot": 1, "serve_slot": 1}, "object_store_memory": 150 << 20}


def _free_port() -> int:
    """A free port below Linux's ephemeral range (32768+): a port the kernel handed out and took
    back can be handed out again to one of Ray's many client sockets before Serve binds it."""
    import random

    for port in random.sample(range(20000, 32000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def _gcs() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def train_workers(alive_only: bool = False) -> list[dict[str, Any]]:
    """Ray Train workers known to the cluster (Ray's state API): actor id, node id, state."""
    from ray.util.state import list_actors

    filters = [("class_name", "=", "RayTrainWorker")] + ([("state", "=", "ALIVE")] if alive_only else [])
    actors = list_actors(address=_gcs(), filters=filters, limit=1000)
    return [{"actor_id": a.actor_id, "node_id": a.node_id, "state": a.state} for a in actors]


TEACHER, REPLICA, INGRESS = "MapWorker(MapBatches(TeacherLogits))", ":Classifier", ":Api"  # actor class names


def alive_actors(class_suffix: str) -> list[dict[str, Any]]:
    """Alive actors whose class name ends with `class_suffix`: actor id, node id, pid."""
    from ray.util.state import list_actors

    actors = list_actors(address=_gcs(), filters=[("state", "=", "ALIVE")], limit=1000)
    return [{"actor_id": a.actor_id, "node_id": a.node_id, "pid": a.pid} for a in actors
            if a.class_name.endswith(class_suffix)]


def blocks_done(actor_ids: list[str]) -> dict[str, int]:
    """Per teacher actor (a Ray Data map worker), how many blocks it has finished (its finished
    `submit` calls, from Ray's state API)."""
    from ray.util.state import list_tasks

    tasks = list_tasks(address=_gcs(), filters=[("state", "=", "FINISHED")], limit=10000)
    return {a: sum(1 for t in tasks if t.actor_id == a and t.name.endswith(".submit")) for a in actor_ids}


def shard_files(cache_dir: str) -> tuple[int, bool]:
    """(shard files, whether a manifest exists) under the precompute cache dir."""
    import pyarrow.fs as pafs

    from distillray import storage

    fs, path = storage.resolve(cache_dir)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError:
        return 0, False
    names = [i.path.rsplit("/", 1)[-1] for i in infos]
    return sum(n.startswith("shard-") and n.endswith(".parquet") for n in names), "manifest.json" in names


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

    from distillray import storage

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
        out |= _run_and_lose_nodes(cluster, workers, [*args, f"run.address={cluster.address}"], args)
        out["train_workers"] = train_workers()
        out["nodes_alive"] = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        if out.get("rc") == 0:
            output_dir = next(a.split("=", 1)[1] for a in args if a.startswith("run.output_dir="))
            t1 = time.time()
            out["serve"] = _serve_and_lose_a_node(cluster, workers, storage.join(output_dir, "student"))
            out["serve"]["phase_s"] = time.time() - t1
    finally:
        result_path.write_text(json.dumps(out, indent=2))
        ray.shutdown()
        cluster.shutdown()
    return 0


def _wait(cond, deadline: float, every: float = 0.2, alive=lambda: True):
    """Poll `cond()` until it returns something truthy (returned), the deadline passes or `alive()`
    turns false (None)."""
    while time.time() < deadline and alive():
        got = cond()
        if got:
            return got
        time.sleep(every)  # polling the cluster or the bucket
    return None


def _lose_a_teacher_node(cluster, workers: list, cache_dir: str, job: threading.Thread) -> dict[str, Any]:
    """Once a teacher actor on a worker node has finished a block, remove that node mid-precompute.

    The actors on worker nodes are paused (SIGSTOP) from the first shard file on, while the state API
    tells which of them finished a block: then the precompute provably cannot end before the kill
    (the paused actors hold their remaining blocks), and the kill is checked to come before the
    manifest."""
    deadline = time.time() + TOTAL_TIMEOUT_S
    worker_ids = {w.node_id for w in workers}

    def teachers() -> list[dict[str, Any]]:
        return [a for a in alive_actors(TEACHER) if a["node_id"] in worker_ids]

    if not _wait(lambda: teachers() and shard_files(cache_dir)[0] >= 1, deadline, 0.1, job.is_alive):
        return {"killed": None, "why": "no teacher actor on a worker node before a shard was written"}
    acts = teachers()
    for a in acts:
        os.kill(a["pid"], signal.SIGSTOP)
    try:
        done = _wait(lambda: (d := blocks_done([a["actor_id"] for a in acts])) and any(d.values()) and d,
                     deadline, 0.5, job.is_alive)
        shards_at_kill, manifest_at_kill = shard_files(cache_dir)
        if not done:
            return {"killed": None, "why": "no teacher actor on a worker node reported a finished block"}
        actor = max(acts, key=lambda a: done[a["actor_id"]])
        victim = next(w for w in workers if w.node_id == actor["node_id"])
        t_kill = time.time()
        cluster.remove_node(victim, allow_graceful=False)  # SIGKILL: raylet, object store, its workers
    finally:
        for a in acts:
            try:
                os.kill(a["pid"], signal.SIGCONT)
            except ProcessLookupError:  # it died with its node
                pass
    workers.remove(victim)
    workers.append(cluster.add_node(**WORKER_NODE))  # training needs two train slots again
    return {"killed": victim.node_id, "actor": actor, "teacher_actors": acts, "blocks_done": done,
            "shards_at_kill": shards_at_kill, "manifest_at_kill": manifest_at_kill,
            "replacement": workers[-1].node_id, "killed_at": t_kill}


def _run_and_lose_nodes(cluster, workers: list, job_args: list[str], args: list[str]) -> dict[str, Any]:
    import distill

    output_dir = next(a.split("=", 1)[1] for a in args if a.startswith("run.output_dir="))
    cache_dir = next(a.split("=", 1)[1] for a in args if a.startswith("precompute.cache_dir="))
    res: dict[str, Any] = {}
    job = threading.Thread(target=lambda: res.update(rc=distill.main(job_args)), daemon=True)
    t_start = time.time()
    job.start()
    pre = _lose_a_teacher_node(cluster, workers, cache_dir, job)
    if pre.get("killed"):
        pre["killed_after_s"] = pre.pop("killed_at") - t_start
        # recovered: the shard dir is complete (its manifest written) on the remaining nodes
        t_done = _wait(lambda: shard_files(cache_dir)[1] and time.time(), time.time() + TOTAL_TIMEOUT_S, 0.2, job.is_alive)
        pre["recover_s"] = t_done - t_start - pre["killed_after_s"] if t_done else None
    res["precompute"] = pre
    res["train_nodes"] = [w.node_id for w in workers]
    if not _wait(lambda: checkpoint_registered(output_dir), time.time() + TOTAL_TIMEOUT_S, 0.5, job.is_alive):
        job.join(timeout=60)
        return {**res, "killed": None}
    alive = train_workers(alive_only=True)
    res["first_group"] = alive
    victim = next(w for w in workers if w.node_id in {a["node_id"] for a in alive})
    before = {a["actor_id"] for a in alive}
    t_kill = time.time()
    cluster.remove_node(victim, allow_graceful=False)  # SIGKILL: raylet, object store, its workers
    workers.remove(victim)
    workers.append(cluster.add_node(**WORKER_NODE))

    def new_group() -> bool:
        now = train_workers(alive_only=True)
        return len(now) == 2 and not {a["actor_id"] for a in now} & before

    recovered = _wait(lambda: new_group() and time.time(), t_kill + TOTAL_TIMEOUT_S, 0.5, job.is_alive)
    job.join(timeout=600)
    return {**res, "killed": victim.node_id, "replacement": workers[-1].node_id,
            "killed_after_s": t_kill - t_start, "recover_s": recovered - t_kill if recovered else None}


class Load:
    """Steady HTTP load: `clients` threads each posting one valid request after another. Every
    answer is kept (status, and the body of any non-200): nothing is retried."""

    def __init__(self, url: str, clients: int) -> None:
        self.url, self.answers = url, []  # (time, status or exception name, body of a non-200)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        import httpx

        texts = ["a fine, funny film", "dull and far too long", "the cast is great", "not worth it"]
        with httpx.Client(timeout=30) as c:
            while not self.stop.is_set():
                try:
                    r = c.post(self.url, json={"text": texts[len(self.answers) % 4]})
                    self.answers.append((time.time(), r.status_code, r.text[:300] if r.status_code != 200 else ""))
                except httpx.HTTPError as e:
                    self.answers.append((time.time(), type(e).__name__, str(e)[:300]))

    def ok_since(self, t: float) -> int:
        return sum(1 for a in list(self.answers) if a[0] >= t and a[1] == 200)

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def _serve_and_lose_a_node(cluster, workers: list, student: str) -> dict[str, Any]:
    """The student served by 2 model replicas, one per worker node (serve.resources), through the
    head's HTTP proxy under steady load; the node of one replica is removed, then a node added."""
    from ray import serve

    from distillray.config import load_config
    from serve.app import APP_NAME, bind

    port = _free_port()
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 20})
    res: dict[str, Any] = {}
    try:
        cfg = load_config(None, [f"serve.model={student}", "serve.num_replicas=2", "serve.cpus_per_replica=0.5",
                                 "serve.resources={serve_slot: 1}", "serve.max_batch_size=8"])
        t0 = time.time()
        serve.run(bind(cfg), name=APP_NAME, route_prefix="/")
        res["deploy_s"] = time.time() - t0
        replicas, api = alive_actors(REPLICA), alive_actors(INGRESS)
        res |= {"replicas": replicas, "api_replicas": api}
        deadline = time.time() + TOTAL_TIMEOUT_S
        t_load = time.time()
        with Load(f"http://127.0.0.1:{port}/v1/classify", clients=2) as load:
            if not _wait(lambda: load.ok_since(0) >= 20, deadline):  # steady load: answers flowing
                return {**res, "killed": None, "answers": load.answers}
            # the node of a model replica (one that also hosts an ingress replica, if any does)
            nodes = [r["node_id"] for r in replicas]
            victim_id = next((n for n in nodes if n in {a["node_id"] for a in api}), nodes[0])
            victim = next(w for w in workers if w.node_id == victim_id)
            gone = {r["actor_id"] for r in replicas if r["node_id"] == victim_id}
            t_kill = time.time()
            cluster.remove_node(victim, allow_graceful=False)
            workers.remove(victim)
            # the controller saw the loss: one model replica left, until a node brings a serve slot
            seen = _wait(lambda: len(alive_actors(REPLICA)) == 1 and time.time(), deadline, 0.5)
            res["replica_lost_seen_s"] = seen - t_kill if seen else None
            _wait(lambda: load.ok_since(seen or t_kill) >= 20, deadline)  # served by one replica meanwhile
            t_add = time.time()
            workers.append(cluster.add_node(**WORKER_NODE))
            back = _wait(lambda: (now := alive_actors(REPLICA)) and len(now) == 2
                         and not {r["actor_id"] for r in now} & gone and time.time(), deadline, 0.5)
            t_back = time.time()
            _wait(lambda: load.ok_since(t_back) >= 20, deadline)  # and serving on both again
        res |= {"killed": victim_id, "killed_after_s": t_kill - t_load, "killed_replicas": sorted(gone), "replacement": workers[-1].node_id,
                "node_added_after_s": t_add - t_kill, "recover_s": back - t_kill if back else None,
                "replicas_after": alive_actors(REPLICA), "api_after": alive_actors(INGRESS),
                "answers": len(load.answers), "ok": sum(a[1] == 200 for a in load.answers),
                "failures": [(round(a[0] - t_kill, 2), *a[1:]) for a in load.answers if a[1] != 200]}
        return res
    finally:
        serve.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
