"""The Serve app over real HTTP on 127.0.0.1, with a tiny model: predictions, every bad-input
case (4xx + JSON, and the server still answers), concurrency, the Serve config file, and a tiny
QA model's POST /v1/answer served beside it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TEXTS = ["a wonderful film with a great cast .", "a dull , lifeless movie .", "it is what it is",
         "the plot never comes together , but the actors try hard ."]
LIMITS = ["serve.max_batch_texts=8", "serve.max_chars=200", "serve.max_batch_size=16"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(ray_local, tiny_teacher):
    from ray import serve

    from distillray.config import load_config
    from serve.app import bind

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 30})
    serve.run(bind(load_config(None, [f"serve.model={tiny_teacher}", *LIMITS])), name="distillray",
              route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def classify(url: str, payload, **kw) -> httpx.Response:
    return httpx.post(f"{url}/v1/classify", json=payload, timeout=30, **kw)


def assert_still_serving(url: str) -> None:
    r = classify(url, {"text": TEXTS[0]})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 1


def test_predictions_equal_an_in_process_forward(server, tiny_teacher):
    from distillray.inference import load_for_inference
    from serve.schemas import ClassifyResponse

    r = classify(server, {"texts": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    # the ingress returns its JSON without FastAPI's response_model pass: it must still match it
    assert ClassifyResponse.model_validate(body).model_dump() == body
    assert body["model"].startswith("teacher@")
    ref = load_for_inference(tiny_teacher).predict_proba(TEXTS)
    labels = ["negative", "positive"]
    for pred, p in zip(body["predictions"], ref):
        assert list(pred["probs"]) == labels
        np.testing.assert_allclose([pred["probs"][k] for k in labels], p, atol=1e-5)
        assert pred["label"] == labels[int(np.argmax(p))]
        assert pred["score"] == pytest.approx(float(np.max(p)), abs=1e-5)
    single = classify(server, {"text": TEXTS[1]}).json()["predictions"]
    np.testing.assert_allclose(list(single[0]["probs"].values()), ref[1], atol=1e-5)


def test_model_info_health_and_docs(server):
    info = httpx.get(f"{server}/v1/model").json()
    assert info["labels"] == ["negative", "positive"] and info["params"] > 0 and info["quantized"] is False
    assert httpx.get(f"{server}/healthz").json()["status"] == "ok"
    spec = httpx.get(f"{server}/openapi.json").json()
    assert "/v1/classify" in spec["paths"] and "/v1/model" in spec["paths"]
    assert httpx.get(f"{server}/docs").status_code == 200


def test_request_latency_and_batch_metrics_reach_the_prometheus_export(server):
    """distillray_serve_{requests,latency_ms,batch_size}, read back from this node's metrics export,
    all under one `model` tag: the id /v1/model reports (so a dashboard can join them). The node may
    also export the series of other apps served earlier in the session, under their own tags."""
    import re
    import urllib.request

    import ray

    for t in TEXTS:
        assert classify(server, {"text": t}).status_code == 200
    assert classify(server, {"text": ""}).status_code == 422  # rejected requests count too
    model_id = httpx.get(f"{server}/v1/model").json()["model"]
    node = next(n for n in ray.nodes() if n["Alive"])
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    want = ("ray_distillray_serve_requests", "ray_distillray_serve_latency_ms_bucket",
            "ray_distillray_serve_batch_size_bucket")  # a counter may carry a _total suffix
    lines: list[str] = []
    missing = list(want)
    deadline = time.time() + 90  # exported every 10 s by default
    while time.time() < deadline and missing:
        with urllib.request.urlopen(url, timeout=5) as r:
            exported = [ln for ln in r.read().decode().splitlines() if ln.startswith("ray_distillray_serve")]
        lines = [ln for ln in exported if f'model="{model_id}"' in ln]  # this app's series
        seen = {ln.split("{")[0].split(" ")[0] for ln in lines}
        missing = [w for w in want if not any(n.startswith(w) for n in seen)]
        time.sleep(2)
    tags = {m for ln in exported for m in re.findall(r'model="([^"]*)"', ln)}
    assert not missing, f"missing from {url} under model={model_id!r}: {missing} (models seen: {sorted(tags)})"
    assert all(re.findall(r'model="([^"]*)"', ln) for ln in exported), "a series without a model tag"
    assert any('code="422"' in ln for ln in lines if ln.startswith(want[0]))


BAD = [  # (name, request kwargs, status, words in the error)
    ("missing field", {"json": {}}, 422, "exactly one"),
    ("both fields", {"json": {"text": "a", "texts": ["b"]}}, 422, "exactly one"),
    ("wrong type", {"json": {"text": 123}}, 422, "valid string"),
    ("list of non-strings", {"json": {"texts": [1, 2]}}, 422, "valid string"),
    ("unknown field", {"json": {"text": "a", "colour": "red"}}, 422, "colour"),
    ("empty string", {"json": {"text": ""}}, 422, "empty"),
    ("empty list", {"json": {"texts": []}}, 422, "empty"),
    ("too many texts", {"json": {"texts": ["ok"] * 9}}, 413, "max_batch_texts=8"),
    ("text too long", {"json": {"text": "x" * 201}}, 413, "max_chars=200"),
    ("invalid JSON", {"content": b'{"text": ', "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ("invalid UTF-8", {"content": b'{"text": "\xff\xfe"}', "headers": {"content-type": "application/json"}}, 400, "UTF-8"),
    ("wrong content type", {"content": b"text=hello", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415, "application/json"),
    ("no body", {"content": b"", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
]


@pytest.mark.parametrize("name,kwargs,status,words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_4xx_with_json_and_the_server_still_answers(server, name, kwargs, status, words):
    r = httpx.post(f"{server}/v1/classify", timeout=30, **kwargs)
    assert r.status_code == status, (name, r.status_code, r.text)
    assert words in r.json()["error"], r.json()
    assert_still_serving(server)


def test_unknown_path_and_wrong_method(server):
    r = httpx.get(f"{server}/v1/nope")
    assert r.status_code == 404 and "/v1/classify" in r.json()["error"]
    r = httpx.get(f"{server}/v1/classify")
    assert r.status_code == 405 and "POST" in r.json()["error"]
    r = httpx.delete(f"{server}/v1/model")
    assert r.status_code == 405 and "error" in r.json()
    assert_still_serving(server)


def test_long_token_sequences_are_truncated(server):
    r = classify(server, {"text": "!" * 190})  # 190 tokens > the tiny model's 128 positions
    assert r.status_code == 200, r.text


def test_200_concurrent_requests_all_succeed(server):
    async def run() -> list[int]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            async def one(i: int) -> int:
                payload = {"text": TEXTS[i % 4]} if i % 3 else {"texts": TEXTS[: 1 + i % 4]}
                r = await client.post(f"{server}/v1/classify", json=payload)
                n = len(r.json()["predictions"]) if r.status_code == 200 else -1
                return r.status_code if n == (1 if i % 3 else 1 + i % 4) else -n
            return await asyncio.gather(*(one(i) for i in range(200)))

    codes = asyncio.run(run())
    assert codes == [200] * 200


def test_a_replica_lost_mid_request_gets_503_json_and_the_app_recovers(server, tiny_teacher):
    """With serve.retries=0 and a 10 s batch wait in the Classifier, a request sits inside the
    Classifier replica from just after it was sent until 10 s later;
    killing that replica answers it 503 + Retry-After + JSON (not a 500, not a hang), and the app
    answers again once Serve has replaced the replica."""
    from concurrent.futures import ThreadPoolExecutor

    import ray
    from ray import serve

    from distillray.config import load_config
    from serve.app import bind

    serve.run(bind(load_config(None, [f"serve.model={tiny_teacher}", "serve.retries=0",
                                      "serve.model_batch_wait_timeout_s=10", "serve.max_batch_size=16"])),
              name="fragile", route_prefix="/fragile")
    url = f"{server}/fragile"
    try:
        assert_still_serving(url)  # the Api now knows the model: the next call goes straight in
        replica = next(a for a in ray.util.list_named_actors(all_namespaces=True)
                       if a["name"].startswith("SERVE_REPLICA::fragile#Classifier#"))
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(classify, url, {"text": TEXTS[0]})
            time.sleep(3)  # past the ingress's 5 ms wait: inside the replica, waiting for its batch
            assert not pending.done()
            ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
            r = pending.result(timeout=30)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "2"
        body = r.json()
        assert body["error"].startswith("no model replica could answer after 1 attempt ") and "retry" in body["error"], body
        deadline = time.time() + 120
        while time.time() < deadline:
            r = classify(url, {"text": TEXTS[1]})
            if r.status_code == 200:
                break
            assert r.status_code == 503, r.text  # while the replacement starts: still no 500
            time.sleep(1)
        assert r.status_code == 200, f"no answer {time.time() - deadline + 120:.0f} s after the kill: {r.text}"
    finally:
        serve.delete("fragile")
    assert_still_serving(server)  # the other app never noticed


# --- extractive QA: POST /v1/answer on a QA model dir, as a second app on the same Serve ----------

QA_LIMITS = ["serve.max_batch_texts=8", "serve.max_chars=200", "serve.max_context_chars=5000"]
FILLER = "The river runs past the old mill and the quiet farms before it reaches the sea. "


def make_pointing_qa_bert(out: Path, word: str = "zebra") -> Path:
    """A tiny random BertForQuestionAnswering (tests/tiny.py) whose span head points at `word`: its
    layers add nothing to their input (attention and FFN output weights zeroed, so each layer is
    the identity after its LayerNorm), `word`'s embedding is a large +-1 vector v, and the start
    and end heads are v: `word` gets a logit near hidden_size, every other token a random one
    about a sixth of that. A real model, with answers known in advance."""
    import torch
    from transformers import BertForQuestionAnswering

    from distillray.models import load_tokenizer
    from tiny import make_tiny_qa_bert

    make_tiny_qa_bert(out, layers=2)
    model = BertForQuestionAnswering.from_pretrained(out)
    tok = load_tokenizer(out)
    hidden = model.config.hidden_size
    v = torch.tensor([1.0, -1.0] * (hidden // 2))  # mean 0, variance 1: LayerNorm leaves it as is
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            for dense in (layer.attention.output.dense, layer.output.dense):
                dense.weight.zero_()
                dense.bias.zero_()
        model.bert.embeddings.word_embeddings.weight[tok.convert_tokens_to_ids(word)] = 20 * v
        model.qa_outputs.weight.copy_(torch.stack([v, v]))
        model.qa_outputs.bias.zero_()
    model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def qa_model(tmp_path_factory) -> Path:
    return make_pointing_qa_bert(tmp_path_factory.mktemp("qa") / "student")


@pytest.fixture(scope="module")
def qa_server(server, qa_model):
    """The QA app beside the classifier app, on the same Serve, under /qa."""
    from ray import serve

    from distillray.config import load_config
    from serve.app import bind

    serve.run(bind(load_config(None, [f"serve.model={qa_model}", *QA_LIMITS])), name="qa", route_prefix="/qa")
    yield f"{server}/qa"
    serve.delete("qa")


def answer(url: str, payload, **kw) -> httpx.Response:
    return httpx.post(f"{url}/v1/answer", json=payload, timeout=30, **kw)


def test_answer_from_the_second_window_of_a_long_context_and_a_batch(qa_server, qa_model):
    from distillray.models import load_tokenizer
    from distillray.tasks.qa import load_qa_model, tokenize_windows
    from distillray.tasks.qa_decode import answer_questions
    from serve.schemas import AnswerResponse

    question = "Which animal drank from the river?"
    long_context = FILLER * 22 + "At noon a zebra drank from it. " + FILLER * 4
    start = long_context.index("zebra")
    info = httpx.get(f"{qa_server}/v1/model").json()
    assert (info["task"], info["max_length"], info["doc_stride"], info["labels"]) == ("qa", 384, 128, [])
    windows = tokenize_windows(load_tokenizer(qa_model), [question], [long_context], max_length=384, doc_stride=128)
    assert len(windows) >= 2 and windows.offsets[0, :, 1].max() < start  # only a later window holds it

    r = answer(qa_server, {"question": question, "context": long_context})
    assert r.status_code == 200, r.text
    body = r.json()
    assert AnswerResponse.model_validate(body).model_dump() == body and body["model"].startswith("student@")
    (got,) = body["answers"]
    assert (got["answer"], got["start"], got["end"]) == ("zebra", start, start + 5)
    assert long_context[got["start"]:got["end"]] == "zebra" and got["score"] > 0.5

    batch = [{"question": question, "context": long_context},
             {"question": "Who rode the zebra?", "context": "The farmer rode a zebra to town."},
             {"question": "Where does it run?", "context": FILLER},
             {"question": "Which animal?", "context": "Not a horse but a zebra, said Ada."}]
    r = answer(qa_server, batch)
    assert r.status_code == 200, r.text
    got = r.json()["answers"]
    want = answer_questions(load_qa_model(qa_model), load_tokenizer(qa_model), [b["question"] for b in batch],
                            [b["context"] for b in batch], max_length=384, doc_stride=128)
    assert [(a["answer"], a["start"], a["end"]) for a in got] == [(w["answer"], w["start"], w["end"]) for w in want]
    np.testing.assert_allclose([a["score"] for a in got], [w["score"] for w in want], rtol=1e-4)
    assert [a["answer"] for a in got[:2]] + [got[3]["answer"]] == ["zebra"] * 3  # in request order


QA_BAD = [  # (name, request kwargs, status, words in the error)
    ("empty question", {"json": {"question": " ", "context": "x"}}, 422, "question is empty"),
    ("empty context", {"json": {"question": "q", "context": ""}}, 422, "context is empty"),
    ("context too long", {"json": {"question": "q", "context": "x" * 5001}}, 413, "serve.max_context_chars=5000"),
    ("question too long", {"json": {"question": "q" * 201, "context": "x"}}, 413, "serve.max_chars=200"),
    ("wrong type", {"json": {"question": 7, "context": "x"}}, 422, "valid string"),
    ("missing context", {"json": [{"question": "q"}]}, 422, "context: Field required"),
    ("list of strings", {"json": ["q"]}, 422, "not an object"),
    ("empty list", {"json": []}, 422, "the list is empty"),
    ("too many", {"json": [{"question": "q", "context": "x"}] * 9}, 413, "max_batch_texts=8"),
    ("classify body", {"json": {"text": "a fine film"}}, 422, 'text: Extra inputs are not permitted); send {"question"'),
    ("invalid JSON", {"content": b'{"question": ', "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
]


@pytest.mark.parametrize("name,kwargs,status,words", QA_BAD, ids=[b[0] for b in QA_BAD])
def test_bad_questions_get_a_4xx_with_json_and_the_server_still_answers(qa_server, name, kwargs, status, words):
    r = httpx.post(f"{qa_server}/v1/answer", timeout=30, **kwargs)
    assert r.status_code == status, (name, r.status_code, r.text)
    assert words in r.json()["error"], r.json()
    ok = answer(qa_server, {"question": "Which animal?", "context": "a zebra"})
    assert ok.status_code == 200 and ok.json()["answers"][0]["answer"] == "zebra", ok.text


def test_each_model_answers_on_its_own_endpoint_only(server, qa_server):
    r = classify(qa_server, {"text": "a fine film"})
    assert r.status_code == 422 and "answers questions: POST /v1/answer" in r.json()["error"], r.text
    r = answer(server, {"question": "Who?", "context": "Ada did."})
    assert r.status_code == 422 and "classifies texts: POST /v1/classify" in r.json()["error"], r.text
    assert "/v1/answer" in httpx.get(f"{qa_server}/openapi.json").json()["paths"]
    assert_still_serving(server)


@pytest.fixture  # deleted after its one test
def onnx_qa_server(server, qa_model, tmp_path):
    """serve.backend=onnx on a copy of the QA model exported to ONNX (fused, as jobs/export_onnx.py)."""
    from ray import serve

    from distillray.config import load_config
    from distillray.models.onnx import export_onnx
    from serve.app import bind

    model = tmp_path / "student"
    shutil.copytree(qa_model, model)
    export_onnx(model)
    serve.run(bind(load_config(None, [f"serve.model={model}", "serve.backend=onnx", *QA_LIMITS])), name="qa-onnx",
              route_prefix="/qa-onnx")
    yield f"{server}/qa-onnx", model
    serve.delete("qa-onnx")


def test_onnx_backend_answers_questions_like_torch_and_rejects_bad_input(onnx_qa_server, qa_server):
    url, model = onnx_qa_server
    info = httpx.get(f"{url}/v1/model").json()
    assert (info["task"], info["backend"]) == ("qa", "onnx") and info["model"].endswith("+onnx") and info["params"] > 0
    long_context = FILLER * 30 + "The farmer rode a zebra to town. " + FILLER * 3
    batch = [{"question": "Which animal did the farmer ride?", "context": long_context},
             {"question": "Where does it run?", "context": FILLER},
             {"question": "Which animal?", "context": "Not a horse but a zebra, said Ada."}]
    got, want = answer(url, batch), answer(qa_server, batch)
    assert got.status_code == want.status_code == 200, (got.text, want.text)
    got, want = got.json()["answers"], want.json()["answers"]
    assert [(a["answer"], a["start"], a["end"]) for a in got] == [(w["answer"], w["start"], w["end"]) for w in want]
    assert got[0]["answer"] == got[2]["answer"] == "zebra"
    np.testing.assert_allclose([a["score"] for a in got], [w["score"] for w in want], rtol=1e-3)
    r = answer(url, {"question": " ", "context": "x"})
    assert r.status_code == 422 and "question is empty" in r.json()["error"], r.text


@pytest.fixture  # deleted after its one test: the tests after it have the cores to themselves
def onnx_server(server, tiny_teacher_onnx):
    """serve.backend=onnx beside the torch app, in the same Serve instance, on a copy of the tiny
    teacher exported to ONNX (conftest's, shared with test_precompute)."""
    from ray import serve

    from distillray.config import load_config
    from serve.app import bind

    model = tiny_teacher_onnx
    serve.run(bind(load_config(None, [f"serve.model={model}", "serve.backend=onnx", *LIMITS])), name="onnx",
              route_prefix="/onnx")
    yield f"{server}/onnx", model
    serve.delete("onnx")


def test_onnx_backend_answers_like_torch_and_rejects_bad_input(onnx_server):
    """The same API on ONNX Runtime: a batch and a single text get torch's labels and probabilities
    (within 1e-4), /v1/model names the backend, and bad input gets its 4xx with JSON."""
    from distillray.inference import load_for_inference

    url, model = onnx_server
    ref = load_for_inference(model).predict_proba(TEXTS)
    labels = ["negative", "positive"]
    r = classify(url, {"texts": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"].startswith("teacher@") and body["model"].endswith("+onnx")
    got = [[p["probs"][k] for k in labels] for p in body["predictions"]]
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert [p["label"] for p in body["predictions"]] == [labels[i] for i in ref.argmax(-1)]
    single = classify(url, {"text": TEXTS[2]}).json()["predictions"][0]
    np.testing.assert_allclose([single["probs"][k] for k in labels], ref[2], atol=1e-4)
    info = httpx.get(f"{url}/v1/model").json()
    assert info["backend"] == "onnx" and info["params"] > 0
    for kwargs, status, words in ((BAD[5][1], 422, "empty"), (BAD[7][1], 413, "max_batch_texts=8")):
        r = httpx.post(f"{url}/v1/classify", timeout=30, **kwargs)
        assert r.status_code == status and words in r.json()["error"], r.text
    assert_still_serving(url)


def test_onnx_backend_without_an_export_is_refused_before_serve_starts(tiny_teacher):
    from distillray.config import load_config
    from distillray.errors import ConfigError, ModelError
    from serve.app import bind

    with pytest.raises(ModelError, match=r"serve.backend=onnx: .*no ONNX export.*jobs/export_onnx.py --model"):
        bind(load_config(None, [f"serve.model={tiny_teacher}", "serve.backend=onnx"]))
    with pytest.raises(ConfigError, match="workers.use_gpu=false"):
        bind(load_config(None, [f"serve.model={tiny_teacher}", "serve.backend=onnx", "workers.use_gpu=true"]))


@contextlib.contextmanager
def answering(cmd: list[str], port: int, log: list[str] | None = None):
    """Run a server command in its own session (its own local Ray) until it answers a classify on
    `port`; yield the base URL; stop it (SIGTERM, then SIGKILL), printing its output on failure and
    appending it to `log` if given."""
    # Ray holds a high-throughput ingress open for 30 s at shutdown so a cloud load balancer can
    # deregister it; nothing sits in front of it here
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "PYTHONPATH": str(REPO), "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url, failed = f"http://127.0.0.1:{port}", True
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            try:
                if classify(url, {"text": TEXTS[0]}).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            raise AssertionError(f"{' '.join(cmd[:3])} never answered; rc={proc.poll()}")
        yield url
        failed = False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        if log is not None:
            log.append(out.decode(errors="replace"))
        if failed:
            print(out.decode(errors="replace")[-3000:])


def test_serve_config_file_is_valid_and_starts_the_app(tiny_teacher, tmp_path):
    """`serve run` on (a copy of) serve/config.yaml with the model pointed at the tiny model."""
    from ray.serve.schema import ServeDeploySchema

    cfg = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    ServeDeploySchema.model_validate(cfg)  # Serve's own schema
    port = free_port()
    cfg["http_options"]["port"] = port
    cfg["applications"][0]["args"]["model"] = str(tiny_teacher)
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with answering([str(Path(sys.executable).parent / "serve"), "run", str(path)], port) as url:
        assert classify(url, {"text": TEXTS[0]}).json()["predictions"][0]["label"] in ("negative", "positive")


def test_high_throughput_mode_answers_through_haproxy(tiny_teacher):
    """`python serve/app.py ... serve.high_throughput=true`: HAProxy (not Serve's Python proxy) holds
    the port, and the API behaves the same: predictions, a 4xx with JSON, a 404 with JSON,
    concurrent requests. Once the app has stopped (SIGTERM to its whole process group, which ends
    Ray's processes too), no HAProxy of it is left holding ports."""
    import psutil

    from distillray.inference import load_for_inference

    port = free_port()
    cmd = [sys.executable, "serve/app.py", "--model", str(tiny_teacher), f"serve.port={port}",
           "serve.high_throughput=true", *LIMITS]
    log: list[str] = []
    with answering(cmd, port, log) as url:
        holders = {c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
                   and c.status == psutil.CONN_LISTEN}
        assert holders and {psutil.Process(pid).name() for pid in holders} == {"haproxy"}
        configs = {cmd[cmd.index("-f") + 1] for cmd in (psutil.Process(pid).cmdline() for pid in holders)}
        got = classify(url, {"texts": TEXTS}).json()["predictions"]
        ref = load_for_inference(tiny_teacher).predict_proba(TEXTS)
        np.testing.assert_allclose([[p["probs"]["negative"], p["probs"]["positive"]] for p in got], ref, atol=1e-5)
        r = classify(url, {"texts": []})
        assert r.status_code == 422 and "empty" in r.json()["error"]
        r = httpx.get(f"{url}/v2/nope", timeout=30)
        assert r.status_code == 404 and "no such path" in r.json()["error"]

        async def burst() -> list[int]:
            async with httpx.AsyncClient(timeout=60) as c:
                rs = await asyncio.gather(*(c.post(f"{url}/v1/classify", json={"text": TEXTS[i % 4]})
                                            for i in range(64)))
            return [x.status_code for x in rs]

        assert asyncio.run(burst()) == [200] * 64
    left = [p.pid for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "haproxy" and configs & set(p.info["cmdline"] or [])]
    assert not left, f"HAProxy still running after the app stopped: pids {left}; the app's log:\n{log[0][-3000:]}"
