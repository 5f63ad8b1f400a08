import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillray.config import DataConfig
from distillray.data.text import load_split, load_task, subset
from distillray.errors import DataError


def cfg(**kw) -> DataConfig:
    return DataConfig(**kw)


def write(tmp_path, name, content, mode="w"):
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return str(p)


def test_tsv_with_header_named_columns(tmp_path):
    p = write(tmp_path, "a.tsv", "label\tsentence\n0\tbad movie\n1\tgood movie\n")
    ds, labels = load_split(p, cfg(text_column="sentence"))
    assert ds.texts == ["bad movie", "good movie"]
    assert ds.labels.tolist() == [0, 1] and labels.raw == ["0", "1"]
    assert ds.ids.tolist() == [0, 1]


def test_csv_without_header_by_index(tmp_path):
    p = write(tmp_path, "a.csv", 'great,World\n"a, quoted text",Sports\nthird,World\n')
    ds, labels = load_split(p, cfg(header=False, text_column=0, label_column=1))
    assert ds.texts[1] == "a, quoted text"
    assert labels.names == ["Sports", "World"]  # strings: stable sorted order
    assert ds.labels.tolist() == [1, 0, 1]


def test_jsonl_and_parquet(tmp_path):
    rows = [{"text": "x y", "label": "pos"}, {"text": "z", "label": "neg"}]
    p = write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds, labels = load_split(p, cfg())
    assert ds.texts == ["x y", "z"] and labels.names == ["neg", "pos"] and ds.labels.tolist() == [1, 0]
    pp = tmp_path / "a.parquet"
    pq.write_table(pa.table({"t": ["a", "b", "c"], "y": [2, 0, 1]}), pp)
    ds, labels = load_split(str(pp), cfg(text_column="t", label_column=1))
    assert labels.raw == ["0", "1", "2"] and ds.labels.tolist() == [2, 0, 1]


def test_declared_labels_and_names(tmp_path):
    p = write(tmp_path, "a.tsv", "label\ttext\n1\tgood\n0\tbad\n")
    ds, labels = load_split(p, cfg(labels=[0, 1], label_names=["negative", "positive"]))
    assert labels.names == ["negative", "positive"] and ds.labels.tolist() == [1, 0]


def test_ints_sort_numerically(tmp_path):
    p = write(tmp_path, "a.tsv", "label\ttext\n10\ta\n2\tb\n1\tc\n")
    _, labels = load_split(p, cfg())
    assert labels.raw == ["1", "2", "10"]


# --- awkward but valid files ---

def test_bom_crlf_blank_lines_no_trailing_newline(tmp_path):
    p = write(tmp_path, "a.tsv", b"\xef\xbb\xbflabel\ttext\r\n0\tbad\r\n\r\n1\tgood")
    ds, _ = load_split(p, cfg())
    assert ds.texts == ["bad", "good"] and ds.labels.tolist() == [0, 1]


def test_quoted_tab_in_tsv(tmp_path):
    p = write(tmp_path, "a.tsv", 'label\ttext\n0\t"bad\tmovie"\n1\tgood\n')
    ds, _ = load_split(p, cfg())
    assert ds.texts[0] == "bad\tmovie"


def test_one_megabyte_text(tmp_path):
    big = "word " * 200_000
    p = write(tmp_path, "a.tsv", f"label\ttext\n0\t{big}\n1\tok\n")
    ds, _ = load_split(p, cfg())
    assert len(ds.texts[0]) == len(big)


def test_empty_text_skipped_and_counted_or_error(tmp_path):
    p = write(tmp_path, "a.tsv", "label\ttext\n0\tbad\n1\t   \n1\tgood\n")
    ds, _ = load_split(p, cfg())
    assert ds.texts == ["bad", "good"] and ds.skipped_empty == 1 and ds.ids.tolist() == [0, 2]
    with pytest.raises(DataError, match=r"a.tsv: line 3: the text is empty"):
        load_split(p, cfg(empty_text="error"))


def test_non_utf8_error_or_replace(tmp_path):
    p = write(tmp_path, "a.tsv", b"label\ttext\n0\tok\n1\tbad \xff\xfe byte\n")
    with pytest.raises(DataError, match=r"line 3: bytes that are not UTF-8.*data.encoding_errors=replace"):
        load_split(p, cfg())
    ds, _ = load_split(p, cfg(encoding_errors="replace"))
    assert "\ufffd" in ds.texts[1]


# --- bad data: clear errors with file and line ---

@pytest.mark.parametrize("content,kw,needle", [
    ("", {}, "the file is empty"),
    ("label\ttext\n", {}, "no labelled rows"),
    ("label\tsentence\n0\tx\n", {"text_column": "content"}, "no column 'content' in the header ['label', 'sentence']; fix: set"),
    ("label\ttext\n0\tx\n1\n", {}, "line 3: 1 field(s)"),
    ("label\ttext\n0\tx\n0\ty\n", {}, "at least 2 classes"),
    ("label\ttext\n0\tx\n1\ty\nfoo\tz\n", {}, "line 4: label 'foo' is not an integer"),
    ("label\ttext\n0\tx\n1\ty\n2\tz\n", {"labels": [0, 1]}, "line 4: label '2' is not in the label set"),
    ("label\ttext\n0\tx\n\ty\n", {"labels": [0, 1]}, "line 3: the label is empty"),
    ("0\tx\n1\ty\n", {"header": False}, "data.header=false"),
    ("label\ttext\n0\tx\n1\ty\n", {"text_column": 5}, "data.text_column=5 but the file has 2 columns"),
])
def test_bad_data(tmp_path, content, kw, needle):
    p = write(tmp_path, "bad.tsv", content)
    with pytest.raises(DataError) as e:
        load_split(p, cfg(**kw))
    assert needle in str(e.value) and "bad.tsv" in str(e.value)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_split(str(tmp_path / "nope.tsv"), cfg())
    p = write(tmp_path, "a.xml", "x")
    with pytest.raises(DataError, match="data.format=tsv"):
        load_split(p, cfg())


def test_bad_jsonl_line(tmp_path):
    p = write(tmp_path, "a.jsonl", '{"text": "a", "label": 0}\n{oops\n')
    with pytest.raises(DataError, match=r"a.jsonl: line 2: not valid JSON"):
        load_split(p, cfg())


def test_hf_offline_says_use_a_local_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="download the split to a local"):
        load_split("hf:glue:sst2:validation", cfg(text_column="sentence"))
    with pytest.raises(DataError, match="hf:<name>"):
        load_split("hf:glue", cfg())


def test_task_dev_uses_train_labels_and_slices(tmp_path):
    tr = write(tmp_path, "tr.tsv", "label\ttext\n" + "".join(f"{i % 3}\tt{i}\n" for i in range(30)))
    dv = write(tmp_path, "dv.tsv", "label\ttext\n2\ta\n0\tb\n")
    train, dev, labels = load_task(cfg(train=tr, dev=dv, max_rows=2), tmp_path)
    assert len(train) == 2 and labels.raw == ["0", "1", "2"]  # label set from all of train
    assert dev.labels.tolist() == [2, 0]
    r = subset(load_task(cfg(train=tr, dev=dv), tmp_path)[0], 10, "random", seed=1)
    assert len(r) == 10 and np.all(np.diff(r.ids) > 0)
    assert r.ids.tolist() == subset(load_task(cfg(train=tr, dev=dv), tmp_path)[0], 10, "random", 1).ids.tolist()


def test_smoke_sample(tmp_path):
    train, dev, labels = load_task(cfg(train="smoke", dev="smoke", text_column="sentence"), tmp_path)
    assert len(train) == 512 and len(dev) == 128 and labels.raw == ["0", "1"]
    assert train.fingerprint() == load_task(cfg(train="smoke", dev="smoke", text_column="sentence"), tmp_path)[0].fingerprint()
