"""Issue 7 against a real Serve instance: hostile HTTP (huge bodies, deep nesting, 10,000 texts,
slow clients, connection churn) while valid traffic keeps flowing, and a replica SIGKILLed under
load that comes back."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import httpx
import pytest

from test_serve import LIMITS, TEXTS, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def server(ray_local, tiny_teacher):
    from ray import serve

    from distillray.config import load_config
    from serve.app import bind

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 20})
    serve.run(bind(load_config(None, [f"serve.model={tiny_teacher}", *LIMITS, "serve.num_replicas=2",
                                      "serve.cpus_per_replica=0.5"])),
              name="distillray", route_prefix="/")
    yield port
    serve.shutdown()


class Background:
    """Valid requests in a loop on `clients` other threads: status codes and latencies."""

    def __init__(self, url: str, clients: int = 1) -> None:
        self.url, self.codes, self.lat = url, [], []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def run(self) -> None:
        with httpx.Client(timeout=25) as c:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    self.codes.append(c.post(self.url, json={"text": TEXTS[len(self.codes) % 4]}).status_code)
                except httpx.HTTPError as e:
                    self.codes.append(type(e).__name__)
                self.lat.append(time.perf_counter() - t0)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def raw(port: int, data: bytes, read: bool = True, timeout: float = 30) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if not read:
            return b""
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)


def post_raw(body: bytes, ctype: str = "application/json") -> bytes:
    return (f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def test_hostile_requests_get_4xx_while_valid_traffic_flows(server):
    port = server
    url = f"http://127.0.0.1:{port}/v1/classify"
    with Background(url) as bg:
        big = httpx.post(url, content=b'{"text": "' + b"a" * (10 << 20) + b'"}',
                         headers={"content-type": "application/json"}, timeout=60)
        assert big.status_code == 413 and "limit" in big.json()["error"]
        deep = httpx.post(url, content=b"[" * 200_000 + b"]" * 200_000,
                          headers={"content-type": "application/json"}, timeout=60)
        assert deep.status_code == 400 and "nested" in deep.json()["error"]
        deep_obj = httpx.post(url, content=b'{"texts": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                              headers={"content-type": "application/json"}, timeout=60)
        assert deep_obj.status_code in (400, 422) and "error" in deep_obj.json()
        many = httpx.post(url, json={"texts": ["ok"] * 10_000}, timeout=60)
        assert many.status_code == 413 and "max_batch_texts" in many.json()["error"]
        # a slow client: promises 1000 bytes, sends 10, stalls; must not block anyone else
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"text\": \"")
        # churn: connections opened and dropped, some mid-request
        for i in range(200):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                if i % 2:
                    s.sendall(post_raw(b'{"text": "hal')[:-5])
        n_before = len(bg.codes)
        time.sleep(3)
        slow.close()
        assert len(bg.codes) > n_before, "valid traffic stalled behind the slow client"
    ok = [c for c in bg.codes if c == 200]
    assert len(ok) == len(bg.codes) and len(ok) > 10, set(map(str, bg.codes))
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200


def test_killed_replica_is_retried_comes_back_and_then_all_succeed(server):
    import ray
    from ray.util.state import list_actors

    port = server
    url = f"http://127.0.0.1:{port}/v1/classify"
    replicas = [a for a in list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")]) if a.class_name.endswith(":Classifier")]
    assert len(replicas) == 2
    with Background(url, clients=8) as bg:  # 8 in flight: the killed replica holds some of them
        time.sleep(1)
        os.kill(replicas[0].pid, signal.SIGKILL)
        deadline = time.time() + 120
        while time.time() < deadline:  # the controller replaces the dead replica
            alive = [a for a in list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")]) if a.class_name.endswith(":Classifier")]
            if len(alive) == 2 and replicas[0].actor_id not in {a.actor_id for a in alive}:
                break
            time.sleep(1)
        else:
            pytest.fail("the killed replica was not replaced within 120 s")
        time.sleep(2)
    assert max(bg.lat) < 25, f"a request hung for {max(bg.lat):.1f}s"
    # a request in flight on the dead replica is resent by the Api ingress to the live one
    failed = [c for c in bg.codes if c != 200]
    assert failed == [], failed
    assert len(bg.codes) > 10
    with httpx.Client(timeout=30) as c:
        codes = [c.post(url, json={"text": TEXTS[i % 4]}).status_code for i in range(100)]
    assert codes == [200] * 100
