"""Teacher-labelled extra text end to end on a real local Ray: the precompute job makes augmented
copies and labels an unlabelled file in the same Ray Data job and shards, the manifest counts rows
per source, a student distils from all of them, and a hard-label run sees only the labelled ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest

from conftest import REPO, SST2_ARGS, sst2
from distillray.config import DistillConfig
from distillray.data.augment import augment_id, labelled_only, source_counts
from distillray.data.shards import load_manifest
from distillray.losses import UNLABELLED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
sys.path.insert(0, str(REPO / "jobs"))
import precompute_logits  # noqa: E402
import train_student  # noqa: E402

ROWS, COPIES, EXTRA = 48, 2, 20


def test_augmented_and_unlabelled_rows_are_labelled_and_trained_on(ray_local, tiny_teacher, tmp_path, capsys):
    dev = sst2("dev")
    texts = [ln.split("\t")[1] for ln in dev.read_text().splitlines()[-EXTRA:]]
    extra = tmp_path / "extra.tsv"
    extra.write_text("text\n" + "\n".join(texts) + "\n")
    args = [f"data.train={dev}", *SST2_ARGS, f"data.max_rows={ROWS}", f"teacher.model={tiny_teacher}",
            f"precompute.cache_dir={tmp_path / 'cache'}", "precompute.shard_rows=64", "precompute.logits_dtype=float16",
            f"augment.copies={COPIES}", "augment.methods=[mask,neighbour,swap,ngram]", f"augment.unlabelled=[{extra}]"]
    assert precompute_logits.main([*args, f"run.output_dir={tmp_path / 'pre'}"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    total = ROWS * (1 + COPIES) + EXTRA
    assert out["rows"] == out["rows_computed"] == total
    manifest = load_manifest(out["shard_dir"])
    assert manifest["sources"] == {"train": ROWS, "augment": ROWS * COPIES, "unlabelled": EXTRA}
    assert manifest["augment"]["copies"] == COPIES and manifest["augment"]["unlabelled"][0]["rows"] == EXTRA
    assert len(manifest["shards"]) >= 3  # 164 rows in shards of <= 64

    table = pads.dataset([str(Path(out["shard_dir"]) / s["file"]) for s in manifest["shards"]]).to_table()
    ids, labels = table.column("id").to_numpy(), table.column("label").to_numpy()
    assert len(set(ids.tolist())) == total and source_counts(ids) == manifest["sources"]
    assert (labels[ids < ROWS] >= 0).all() and (labels[ids >= ROWS] == UNLABELLED).all()
    tokens = dict(zip(ids.tolist(), table.column("input_ids").to_pylist()))
    changed = sum(tokens[augment_id(i, k)] != tokens[i] for i in range(ROWS) for k in range(COPIES))
    assert changed >= ROWS  # most copies differ from their row
    assert np.isfinite(table.column("teacher_logits").to_numpy(zero_copy_only=False).tolist()).all()

    # the same config is a no-op (another augment config is another shard dir: tests/unit/test_shards.py)
    assert precompute_logits.main([*args, f"run.output_dir={tmp_path / 'pre'}"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["reused"] and again["shard_dir"] == out["shard_dir"]

    # distillation trains on every row: one epoch is total // batch steps
    argv = ["--shards", out["shard_dir"], *SST2_ARGS, f"data.dev={dev}", "data.dev_max_rows=32",
            "workers.num_workers=1", "train.batch_size=16", "train.epochs=1", "train.lr=1e-3",
            "train.log_every=2", f"run.output_dir={tmp_path / 'student'}"]
    assert train_student.main(argv) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["steps"] == total // 16
    hist = [json.loads(ln) for ln in (tmp_path / "student" / "metrics" / "distill.jsonl").read_text().splitlines()]
    assert all(np.isfinite(h["train_loss_ce"]) and h["train_loss_kd"] > 0 for h in hist if "train_loss_kd" in h)

    # a hard-label run (no teacher term) reads the labelled rows only
    from distillray.data.batches import shard_dataset
    from distillray.data.shards import shard_paths

    ds = shard_dataset(shard_paths(out["shard_dir"], manifest), 0, "augment-test")
    hard, rows = labelled_only(ds, manifest, DistillConfig(alpha_kd=0.0, alpha_ce=1.0))
    kept = [r["label"] for r in hard.take_all()]
    assert rows == len(kept) == ROWS and min(kept) >= 0
