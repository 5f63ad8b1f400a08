"""jobs/prune.py end to end on a real local Ray: a tiny teacher's real logit shards (the
precompute job), heads pruned, then recovered by KD from those shards with the one train loop;
then jobs/compare.py on the same shards."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file
from tiny import make_tiny_bert

from conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
sys.path.insert(0, str(REPO / "jobs"))
import compare  # noqa: E402
import precompute_logits  # noqa: E402
import prune  # noqa: E402


def test_prune_then_recover_from_shards(ray_local, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    from distillray.models.prune import layer_sizes

    teacher = make_tiny_bert(tmp_path / "teacher", heads=4, label_names=["negative", "positive"])
    base = ["data.train=smoke", "data.dev=smoke", "data.text_column=sentence", "data.max_length=32",
            f"teacher.model={teacher}", f"run.output_dir={tmp_path / 'run'}", "run.num_cpus=4",
            f"precompute.cache_dir={tmp_path / 'cache'}", "precompute.shard_rows=128",
            "data.max_rows=256", "data.dev_max_rows=64"]
    assert precompute_logits.main(base) == 0
    shard_dir = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["shard_dir"]

    args = ["--shards", shard_dir, *base, "prune.heads=0.5", "prune.importance_batches=4",
            "train.batch_size=16", "train.max_steps=4", "train.lr=1e-3", "workers.num_workers=1",
            "checkpoint.every=0"]
    assert prune.main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sum(out["layer_heads"]) == 8 and min(out["layer_heads"]) >= 1
    assert out["params_before"] - out["params_after"] == 8 * (4 * 8 * 32 + 3 * 8)  # 8 heads of 8 dims
    assert out["steps"] == 4 and 0 <= out["dev_accuracy"] <= 1

    pruned = AutoModelForSequenceClassification.from_pretrained(out["pruned"])
    recovered = AutoModelForSequenceClassification.from_pretrained(out["recovered"])
    assert layer_sizes(recovered) == layer_sizes(pruned) == (out["layer_heads"], [64] * 4)
    before, after = load_file(f"{out['pruned']}/model.safetensors"), load_file(f"{out['recovered']}/model.safetensors")
    assert before.keys() == after.keys()
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[key], after[key])  # KD training moved the pruned weights

    # nothing to prune: refused with the fix, before the model or Ray is touched
    assert prune.main(["--shards", shard_dir, *base, "prune.heads=0"]) == 2
    assert "nothing to prune" in capsys.readouterr().err

    # jobs/compare.py on the same shards: teacher and a tiny student, both pruned (no recovery, torch forms)
    student = make_tiny_bert(tmp_path / "student", layers=2, heads=4, label_names=["0", "1"])  # the shards' labels
    args = ["--shards", shard_dir, "--student", str(student), *base, "prune.heads=0.5", "prune.importance_batches=4",
            "train.batch_size=16", "prune.recover=false", "compare.onnx=false", "compare.latency_budget_ms=1000",
            "compare.size_budget_mb=0.001"]
    wrong = make_tiny_bert(tmp_path / "wrong", layers=2, label_names=["negative", "positive"])
    assert compare.main([*args[:2], "--student", str(wrong), *args[4:]]) == 2  # refused before any pruning
    assert "differ from the shards' ['0', '1']" in capsys.readouterr().err
    assert compare.main(args) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = {f"{m} torch {f}" for m in ("teacher", "student", "pruned teacher", "pruned student") for f in ("fp32", "int8")}
    out_dir = tmp_path / "run" / "compare"
    variants = json.loads((out_dir / "compare.json").read_text())["variants"]
    assert set(variants) == names and all(v["rows"] == 64 for v in variants.values())
    best = max(names, key=lambda n: (variants[n]["accuracy"], variants[n]["throughput"]))
    assert res["best_under_latency"] == best and res["best_under_size"] is None  # 1 kB: nothing fits
    assert res["pareto_front"] and set(res["pareto_front"]) <= names
    assert variants["pruned student torch fp32"]["params"] < variants["student torch fp32"]["params"]
    assert (out_dir / "compare.md").read_text().count("\n| ") == 1 + len(names) and (out_dir / "pareto.png").exists()
