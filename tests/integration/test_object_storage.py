"""run.output_dir and precompute.cache_dir on object storage (issue 6, storage), end to end.

A real S3-protocol server (moto's, on 127.0.0.1: AWS itself is out of reach here) and the real
code path: pyarrow's S3 filesystem, Ray Train and Ray Data on s3:// URIs, Ray workers and
precompute actors downloading model dirs from the bucket. The endpoint and credentials travel in
the URI (pyarrow's s3://key:secret@bucket/path?endpoint_override=...&scheme=http form), so the
session's Ray workers need no environment of their own.
"""

from __future__ import annotations

import json
import os
import sys

import pyarrow.fs as pafs
import pytest

from conftest import BUCKET, REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
sys.path.insert(0, str(REPO / "jobs"))
sys.path.insert(0, str(REPO / "serve"))
import distill  # noqa: E402
import tune as tune_job  # noqa: E402

from test_distill import SMOKE  # noqa: E402


def test_storage_helpers_on_s3(s3, tmp_path, monkeypatch):
    from distillray import storage

    monkeypatch.setenv("DISTILLRAY_CACHE", str(tmp_path / "cache"))
    base = s3("helpers/model")
    assert storage.join(base, "a", "b.txt").startswith(f"s3://testing:testing@{BUCKET}/helpers/model/a/b.txt?")
    assert storage.split(storage.join(base, "student")) == (base, "student")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text('{"x": 1}')
    (src / "sub" / "w.bin").write_bytes(b"\0" * 1000)
    storage.upload_dir(src, base)
    assert storage.is_remote(base) and storage.is_file(storage.join(base, "sub", "w.bin"))
    first = storage.materialize(base)
    assert (first / "config.json").read_text() == '{"x": 1}' and (first / "sub" / "w.bin").stat().st_size == 1000
    assert storage.materialize(base) == first  # unchanged: the cached copy, no second download
    # rewritten (S3 mtimes have 1 s resolution, so within the same second only a size change shows)
    storage.write_bytes_atomic(storage.join(base, "config.json"), b'{"x": 22}')
    second = storage.materialize(base)
    assert second != first and (second / "config.json").read_text() == '{"x": 22}'
    with pytest.raises(FileNotFoundError):
        storage.materialize(s3("helpers/nothing-here"))


@pytest.fixture(scope="module")
def distilled_on_s3(ray_local, tiny_teacher, s3, tmp_path_factory):
    """jobs/distill.py with the run dir and the shard cache in the bucket: teacher fine-tune,
    precompute, a 2-trial Tune grid, distillation, evaluation, report."""
    home = tmp_path_factory.mktemp("s3-cache")
    old = os.environ.get("DISTILLRAY_CACHE")
    os.environ["DISTILLRAY_CACHE"] = str(home)  # the driver's download cache (workers use their own)
    out, cache = s3("runs/tiny"), s3("cache/logits")
    space = 'tune.space={"distill.alpha_kd": {"type": "grid", "values": [0.2, 0.8]}}'
    args = [*SMOKE, f"teacher.model={tiny_teacher}", "teacher.finetune=true", "finetune.epochs=1", "train.epochs=1",
            "workers.zero_stage=2", f"run.output_dir={out}", f"precompute.cache_dir={cache}",
            "tune.enabled=true", "tune.search=grid", "tune.max_concurrent=2", space]
    try:
        assert distill.main(args) == 0
        yield out, cache, args
    finally:
        if old is None:
            os.environ.pop("DISTILLRAY_CACHE", None)
        else:
            os.environ["DISTILLRAY_CACHE"] = old


def test_distill_job_writes_everything_to_the_bucket(distilled_on_s3):
    from distillray import storage

    out, cache, _ = distilled_on_s3
    report = json.loads(storage.read_bytes(storage.join(out, "report.json")))
    for who in ("teacher", "student"):
        assert report[who]["accuracy"] > 0 and report[who]["params"] > 0, who
        assert report[who]["model_dir"] == storage.join(out, who)
    assert report["training"]["distill"]["steps"] == 512 // 16
    assert report["training"]["distill"]["ray_train_run"].startswith("tiny-student-")  # no URI query in names
    for name in ("report.md", "distill_curves.png", "accuracy_vs_throughput.png", "logits.json",
                 "metrics/distill.jsonl", "metrics/finetune.jsonl",
                 "teacher/config.json", "teacher/model.safetensors", "teacher/tokenizer.json",
                 "student/config.json", "student/model.safetensors", "student/distillray.json"):
        assert storage.is_file(storage.join(out, name)), name
    # Ray Train checkpoints of both runs are in the bucket too (what a restarted run resumes from)
    fs, path = storage.resolve(storage.join(out, "ray"))
    names = [i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))]
    assert any("-teacher-" in n and "/checkpoint_" in n for n in names), names[:20]
    assert any("-student-" in n and "/checkpoint_" in n for n in names), names[:20]
    shard_dir = json.loads(storage.read_bytes(storage.join(out, "logits.json")))["shard_dir"]
    assert shard_dir.startswith(f"s3://testing:testing@{BUCKET}/cache/logits/")
    assert storage.is_file(storage.join(shard_dir, "manifest.json"))
    # the search: its results are published beside the report, its trials ran in the bucket
    best = json.loads(storage.read_bytes(storage.join(out, "tune", "best.json")))
    assert report["tune"]["trials"] == 2 and report["tune"]["best_params"] == best["params"]
    assert report["config"]["distill"] == best["config"]["distill"]  # the student trained with the best
    assert report["config"]["distill"]["alpha_ce"] == pytest.approx(1 - best["params"]["distill.alpha_kd"])
    assert "Hyperparameter search" in storage.read_bytes(storage.join(out, "report.md")).decode()
    assert {"finetune_teacher", "precompute", "tune", "distill", "evaluate"} <= set(report["timings"])
    assert storage.is_file(storage.join(out, "tune", "results.csv"))
    fs, path = storage.resolve(storage.join(out, "tune", "ray"))
    trial_files = [i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))]
    assert sum(n.endswith("/result.json") for n in trial_files) == 2, trial_files[:20]


def test_tune_job_resumes_the_search_from_the_bucket(distilled_on_s3, capsys):
    from distillray import storage

    out, _, args = distilled_on_s3
    shard_dir = json.loads(storage.read_bytes(storage.join(out, "logits.json")))["shard_dir"]
    capsys.readouterr()
    assert tune_job.main(["--shards", shard_dir, *args]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["restored"] and res["trials"] == 2


def test_student_from_the_bucket_loads_with_plain_transformers_and_serves(distilled_on_s3, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from distillray import storage

    out, _, _ = distilled_on_s3
    local = storage.materialize(storage.join(out, "student"))
    model = AutoModelForSequenceClassification.from_pretrained(local)
    tok = AutoTokenizer.from_pretrained(local)
    report = json.loads(storage.read_bytes(storage.join(out, "report.json")))
    assert list(model.config.id2label.values()) == report["dataset"]["labels"]
    assert model(**tok(["a fine film"], return_tensors="pt")).logits.shape == (1, 2)

    import app as serve_app
    from classifier import provenance

    assert serve_app.check_model_dir(storage.join(out, "student")) == storage.join(out, "student")
    prov = provenance(storage.join(out, "student"))  # what GET /v1/model shows, read from the bucket
    assert prov["retention"] == pytest.approx(report["retention"])
    assert prov["distilled_from"] == storage.join(out, "teacher")
