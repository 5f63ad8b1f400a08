import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

from distillray.data import shards
from distillray.errors import ShardError


def table(ids, dtype="float32", hidden=None):
    rng = np.random.default_rng(0)
    n = len(ids)
    return shards.make_table(np.array(ids), [[101, 7 + i, 102] for i in range(n)], np.arange(n) % 2,
                             rng.standard_normal((n, 2)).astype(np.float32),
                             rng.standard_normal((n, hidden)).astype(np.float32) if hidden else None, dtype)


@pytest.mark.parametrize("dtype,hidden", [("float32", None), ("float16", 8)])
def test_schema_round_trip_with_pyarrow_and_pandas(tmp_path, dtype, hidden):
    t = table([3, 1, 2], dtype, hidden)
    entry = shards.write_shard(str(tmp_path), t)
    path = tmp_path / entry["file"]
    assert entry["rows"] == 3 and entry["file"].startswith("shard-")
    back = pads.dataset(str(path)).to_table()
    assert back.schema == shards.shard_schema(2, dtype, hidden)
    assert back.column("id").to_pylist() == [1, 2, 3]  # sorted by id
    df = pd.read_parquet(path)
    assert list(df.columns)[:4] == ["id", "input_ids", "label", "teacher_logits"]
    want = t.sort_by("id").column("teacher_logits").to_pylist()
    np.testing.assert_array_equal(np.stack(df["teacher_logits"].to_list()), np.array(want, dtype=np.float32))


def test_scan_finds_corrupt_partial_and_duplicate_shards(tmp_path):
    a = shards.write_shard(str(tmp_path), table([0, 1]))
    b = shards.write_shard(str(tmp_path), table([2, 3]))
    (tmp_path / ".tmp-abc-shard-x.parquet").write_bytes(b"partial")
    data = bytearray((tmp_path / b["file"]).read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit
    (tmp_path / b["file"]).write_bytes(bytes(data))
    found = shards.scan(str(tmp_path))
    assert [v["file"] for v in found.valid] == [a["file"]]
    assert sorted(found.done_ids.tolist()) == [0, 1]
    assert set(found.removed) == {b["file"], ".tmp-abc-shard-x.parquet"}
    assert not (tmp_path / b["file"]).exists()


def test_truncated_shard_detected(tmp_path):
    a = shards.write_shard(str(tmp_path), table([0, 1, 2]))
    p = tmp_path / a["file"]
    p.write_bytes(p.read_bytes()[:-20])
    assert shards.scan(str(tmp_path)).valid == []


def test_overlapping_shards_are_refused(tmp_path):
    shards.write_shard(str(tmp_path), table([0, 1]))
    shards.write_shard(str(tmp_path), table([1, 2]))
    with pytest.raises(ShardError, match="overlap"):
        shards.scan(str(tmp_path))


def test_manifest_verify_and_compatibility(tmp_path):
    e = shards.write_shard(str(tmp_path), table([0, 1]))
    meta = {"teacher": {"path": "/t", "content_hash": "a" * 64}, "tokenizer_hash": "b" * 64, "max_length": 64,
            "dataset": {"label_names": ["neg", "pos"]}}
    m = shards.write_manifest(str(tmp_path), meta, [e])
    assert shards.load_manifest(str(tmp_path))["rows"] == 2
    shards.check_compatible(m, "d", teacher_hash="a" * 64, tokenizer_hash="b" * 64, max_length=64,
                            label_names=["neg", "pos"])
    with pytest.raises(ShardError, match="max_length 64.*data.max_length=64"):
        shards.check_compatible(m, "d", teacher_hash=None, tokenizer_hash=None, max_length=128, label_names=None)
    with pytest.raises(ShardError, match="teacher 'aaaaaaaaaaaa'"):
        shards.check_compatible(m, "d", teacher_hash="c" * 64, tokenizer_hash=None, max_length=None, label_names=None)
    (tmp_path / e["file"]).write_bytes(b"x")
    with pytest.raises(ShardError, match="checksum"):
        shards.load_manifest(str(tmp_path))
    with pytest.raises(ShardError, match="no manifest.json"):
        shards.load_manifest(str(tmp_path / "empty"))


def test_shard_dir_is_keyed_by_teacher_content_not_its_path():
    """A fine-tuned teacher reused from another run's output dir (a copy, another path) reuses the
    shards; a different teacher or max_length does not."""
    import copy

    from distillray.data.precompute import key_inputs

    meta = {"teacher": {"path": "/runs/a/teacher", "content_hash": "h1", "num_labels": 2, "hidden_size": 8},
            "tokenizer_hash": "t", "max_length": 64, "logits_dtype": "float32", "store_hidden": False,
            "dataset": {"source": "/data/train.tsv", "fingerprint": "f", "rows": 10,
                        "label_names": ["neg", "pos"], "raw_labels": ["0", "1"]}}
    moved = copy.deepcopy(meta)
    moved["teacher"]["path"] = "/runs/b/teacher"
    assert key_inputs(moved) == key_inputs(meta)
    other = copy.deepcopy(meta)
    other["teacher"]["content_hash"] = "h2"
    longer = copy.deepcopy(meta) | {"max_length": 128}
    assert key_inputs(other) != key_inputs(meta) and key_inputs(longer) != key_inputs(meta)


def test_shard_dir_is_keyed_by_the_augment_config_and_unlabelled_files(tmp_path):
    """Another number of copies, seed, method or unlabelled file is another shard dir, never a
    silent reuse of rows labelled for other inputs."""
    from distillray.config import load_config
    from distillray.data import augment
    from distillray.data.precompute import key_inputs

    extra = tmp_path / "extra.tsv"
    extra.write_text("text\na fine film\na dull one\n")
    base = {"teacher": {"path": "/t", "content_hash": "h1"}, "tokenizer_hash": "t", "max_length": 64,
            "dataset": {"source": "/data/train.tsv", "fingerprint": "f"}}

    def key(*overrides):
        cfg = load_config(None, ["augment.copies=2", "augment.methods=[mask,swap]", *overrides])
        return key_inputs(base | {"augment": augment.shard_meta(cfg.augment, augment.load_unlabelled(cfg))})

    ref = key()
    assert key() == ref
    for changed in (key("augment.copies=1"), key("augment.seed=1"), key("augment.methods=[mask]"),
                    key(f"augment.unlabelled=[{extra}]")):
        assert changed != ref
