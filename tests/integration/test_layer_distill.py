"""Intermediate-layer distillation end to end on a real local Ray: precompute stores the mapped
teacher layers (hidden states and attention, fp16) in the shards, and a from-scratch student half
the teacher's width (hidden 32 against 64, a learned projection between them) runs the
task-agnostic stage and then the task stage through Ray Train + DeepSpeed. Shards that lack the
layers a run needs are refused before Ray is used."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import REPO, SST2_ARGS, sst2
from distillray.data.shards import load_manifest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
sys.path.insert(0, str(REPO / "jobs"))
import precompute_logits  # noqa: E402
import train_student  # noqa: E402

ROWS = 64


def test_scratch_student_of_another_width_learns_the_teacher_layers(ray_local, tmp_path, capsys):
    from tiny import make_tiny_bert

    teacher = make_tiny_bert(tmp_path / "teacher", hidden=64, heads=4, layers=4, label_names=["negative", "positive"])
    dev = sst2("dev")
    layer_args = ["distill.alpha_hidden=1", "distill.alpha_attn=1", "student.init=scratch", "student.num_layers=2",
                  "student.hidden_size=32"]
    common = [f"data.train={dev}", *SST2_ARGS, f"data.max_rows={ROWS}", f"teacher.model={teacher}",
              f"precompute.cache_dir={tmp_path / 'cache'}", *layer_args]
    assert precompute_logits.main([*common, f"run.output_dir={tmp_path / 'pre'}"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    manifest = load_manifest(out["shard_dir"])
    # scratch, 2 layers of a 4-layer teacher: the uniform map, student 0 <- teacher 1, 1 <- 3
    assert manifest["layer_states"]["layers"] == [1, 3]
    assert manifest["layer_states"]["hidden"] and manifest["layer_states"]["attention"]
    assert out["bytes_per_row"] > 2 * 64 * 2  # at least 2 layers x 64 wide x fp16 per token

    argv = ["--shards", out["shard_dir"], *SST2_ARGS, f"data.dev={dev}", "data.dev_max_rows=32", *layer_args,
            "workers.num_workers=1", "train.batch_size=16", "train.epochs=1", "train.lr=1e-3", "train.log_every=1",
            "student.general_distill_steps=3", f"run.output_dir={tmp_path / 'student'}"]
    assert train_student.main(argv) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["steps"] == ROWS // 16 and 0 <= res["dev_accuracy"] <= 1

    def history(stage: str) -> list[dict]:
        path = tmp_path / "student" / "metrics" / f"{stage}.jsonl"
        return [h for h in map(json.loads, path.read_text().splitlines()) if "train_loss" in h]

    general, task = history("general"), history("distill")
    assert [h["step"] for h in general] == [1, 2, 3]
    assert all("train_loss_ce" not in h and "train_loss_kd" not in h for h in general)  # no labels, no logits
    assert all(np.isfinite(h["train_loss_hidden"]) and h["train_loss_attn"] > 0 for h in general)
    assert all(h["train_loss_hidden"] > 0 and "train_loss_kd" in h and "train_loss_ce" in h for h in task)

    # both stages export a plain student of the small shape: the projection is not in it
    for where in ("work/student-general", "student"):
        d = tmp_path / "student" / where
        assert json.loads((d / "config.json").read_text())["hidden_size"] == 32
        keys = load_file(d / "model.safetensors").keys()
        assert keys and not any(k.startswith(("proj.", "model.")) for k in keys)

    # shards without the layers a run maps are refused before training starts
    assert train_student.main([*argv[:-1], "distill.layer_map=[0,3]", f"run.output_dir={tmp_path / 'refused'}"]) == 2
    assert "need the teacher's layers [0, 3]" in capsys.readouterr().err
