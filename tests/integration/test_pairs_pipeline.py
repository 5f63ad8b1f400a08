"""Sentence pairs end to end on 192 real MRPC rows and a tiny random BERT: jobs/distill.py main
(teacher as is -> precompute -> distil -> evaluate -> export, 1 worker), shards that refuse a
single-text run, the export answering transformers' pair pipeline, and Serve over real HTTP."""

from __future__ import annotations

import json
import socket
import sys

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO, shared_data

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
sys.path.insert(0, str(REPO / "jobs"))
import distill  # noqa: E402
import train_student  # noqa: E402

PAIR = ("The company said profit rose 5 percent.", "Profit at the company climbed 5 percent, it said.")


NAMES = ["not_equivalent", "equivalent"]


def _always_paraphrase(model_dir):
    """A teacher already "fine-tuned" for MRPC's labels (so used as is: no fine-tune run) whose
    head leans to equivalent, MRPC's majority class: its dev F1 is well above 0, so retention on
    F1 is a number."""
    import torch
    from transformers import BertForSequenceClassification

    m = BertForSequenceClassification.from_pretrained(model_dir)
    with torch.no_grad():
        m.classifier.bias.copy_(torch.tensor([0.0, 1.0]))
    m.save_pretrained(model_dir, safe_serialization=True)
    return model_dir


@pytest.fixture(scope="module")
def run(ray_local, tmp_path_factory):
    from tiny import make_tiny_bert

    shared_data("mrpc/train.tsv")
    tmp = tmp_path_factory.mktemp("pairs")
    teacher = _always_paraphrase(make_tiny_bert(tmp / "teacher", layers=2, label_names=NAMES))
    out = tmp / "run"
    base = ["--config", "mrpc", f"data.train={shared_data('mrpc/train.tsv')}", f"data.dev={shared_data('mrpc/dev.tsv')}",
            "data.max_rows=192", "data.dev_max_rows=64", "data.max_length=64", f"teacher.model={teacher}",
            "workers.num_workers=1", "workers.cpus_per_worker=1", "train.epochs=1", "train.batch_size=16", "train.lr=2e-3", "checkpoint.every=0",
            "precompute.shard_rows=64", f"precompute.cache_dir={tmp / 'cache'}", "run.num_cpus=4"]
    assert distill.main([*base, f"run.output_dir={out}"]) == 0
    return out, base


def test_report_speaks_f1_and_shards_carry_segments(run):
    out, _ = run
    report = json.loads((out / "report.json").read_text())
    assert report["metric"] == "f1" and report["dataset"]["train_rows"] == 192
    t, s = report["teacher"], report["student"]
    assert t["f1"] > 0.5 and 0 <= s["f1"] <= 1
    assert report["retention"] == pytest.approx(s["f1"] / t["f1"])
    assert "of the teacher's F1" in (out / "report.md").read_text()
    hist = [json.loads(ln) for ln in (out / "metrics" / "distill.jsonl").read_text().splitlines()]
    assert "dev_f1" in hist[-1]
    manifest = json.loads((out / "logits" / "manifest.json").read_text())
    assert manifest["task"] == "pair"
    table = pq.read_table(out / "logits" / manifest["shards"][0]["file"])
    types = table.column("token_type_ids")
    assert types.type.value_type == pa.int8()
    first_ids, first_types = table.column("input_ids")[0].as_py(), types[0].as_py()
    assert len(first_ids) == len(first_types) and first_types[0] == 0 and first_types[-1] == 1


def test_single_text_run_refuses_pair_shards(run, tmp_path, capsys):
    out, base = run
    single = [a for a in base if not a.startswith("data.")] + [
        a for a in base if a.startswith(("data.train", "data.dev=", "data.max_length"))] + [
        "data.task=single", "data.text_pair_column=null"]
    argv = ["--shards", str((out / "logits").resolve()), *single, f"run.output_dir={tmp_path}"]
    assert train_student.main(argv) == 2
    assert "shards were computed with task 'pair', but this run uses 'single'" in capsys.readouterr().err


def test_export_answers_the_transformers_pair_pipeline(run):
    from transformers import pipeline

    from distillray.inference import load_for_inference

    out, _ = run
    for who in ("teacher", "student"):
        d = out / who
        assert json.loads((d / "config.json").read_text())["distillray_task"] == "pair"
        got = pipeline("text-classification", model=str(d))({"text": PAIR[0], "text_pair": PAIR[1]})
        mine = load_for_inference(d)
        probs = mine.predict_proba([PAIR])[0]
        assert got["label"] == mine.labels[int(probs.argmax())]
        assert got["score"] == pytest.approx(float(probs.max()), abs=1e-4)


def test_serve_answers_pairs_and_refuses_single_texts(run):
    from ray import serve

    from distillray.config import load_config
    from distillray.inference import load_for_inference
    from serve.app import bind

    out, _ = run
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 30})
    try:
        serve.run(bind(load_config(None, [f"serve.model={out / 'student'}"])), name="pairs", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        r = httpx.post(f"{url}/v1/classify", json={"text": PAIR[0], "text_pair": PAIR[1]}, timeout=30)
        assert r.status_code == 200, r.text
        want = load_for_inference(out / "student").predict_proba([PAIR, PAIR[::-1]])
        assert r.json()["predictions"][0]["probs"]["equivalent"] == pytest.approx(float(want[0][1]), abs=1e-4)
        r = httpx.post(f"{url}/v1/classify", json={"texts": list(PAIR), "text_pairs": list(PAIR[::-1])}, timeout=30)
        assert r.status_code == 200 and len(r.json()["predictions"]) == 2
        assert r.json()["predictions"][1]["probs"]["equivalent"] == pytest.approx(float(want[0][1]), abs=1e-4)
        r = httpx.post(f"{url}/v1/classify", json={"text": PAIR[0]}, timeout=30)
        assert r.status_code == 422 and "classifies sentence pairs" in r.json()["error"]
        assert httpx.get(f"{url}/v1/model", timeout=30).json()["task"] == "pair"
    finally:
        serve.shutdown()
