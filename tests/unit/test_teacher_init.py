"""`pipeline.teacher_init_dir` saves the base teacher with a seeded head once per output dir and
reuses it only for the same base, task, labels and seed: a later run of another task (or base)
in the same run.output_dir rebuilds it, with a log line, instead of starting from the wrong head."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from distillray import pipeline
from distillray.config import load_config
from distillray.preflight import preflight
from qa_data import write_squad
from tiny import make_tiny_bert


def _task(out: Path, base: Path, *more: str):
    return preflight(load_config(None, ["data.train=smoke", "data.dev=smoke", "data.text_column=sentence",
                                        "data.label_column=label", "data.max_rows=32", "data.dev_max_rows=8",
                                        f"teacher.model={base}", f"run.output_dir={out}", *more]))


def _qa_task(out: Path, base: Path, squad: Path):
    train, dev = write_squad(squad)
    return preflight(load_config("squad", [f"data.train={train}", f"data.dev={dev}", "data.max_length=64",
                                           "data.doc_stride=16", f"teacher.model={base}", f"run.output_dir={out}"]))


def test_teacher_init_is_reused_for_the_same_run_and_rebuilt_for_another_task_or_base(tmp_path, caplog):
    base = make_tiny_bert(tmp_path / "base", label_names=["a", "b", "c"])  # not fine-tuned for smoke's labels
    out = tmp_path / "run"
    init, finetuned = pipeline.teacher_init_dir(_task(out, base))
    weights = Path(init, "model.safetensors")
    made = weights.stat().st_mtime_ns
    meta = json.loads(Path(init, "distillray.json").read_text())
    assert not finetuned and meta == {"base": str(base), "task": "single", "labels": ["0", "1"], "seed": 42}

    with caplog.at_level(logging.INFO, logger="distillray.pipeline"):
        assert pipeline.teacher_init_dir(_task(out, base)) == (init, False)
    assert weights.stat().st_mtime_ns == made and "rebuilding" not in caplog.text  # reused as is

    # extractive QA in the same output dir: a span head, not the 2-label classifier
    with caplog.at_level(logging.INFO, logger="distillray.pipeline"):
        assert pipeline.teacher_init_dir(_qa_task(out, base, tmp_path / "squad")) == (init, False)
    config = json.loads(Path(init, "config.json").read_text())
    assert config["architectures"] == ["BertForQuestionAnswering"] and config["distillray_task"] == "qa"
    assert "was made for" in caplog.text and "'task': 'single'" in caplog.text and "rebuilding" in caplog.text

    # back to classification, from another base: rebuilt from that base
    other = make_tiny_bert(tmp_path / "other", layers=2, label_names=["x", "y", "z"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="distillray.pipeline"):
        pipeline.teacher_init_dir(_task(out, other))
    config = json.loads(Path(init, "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and config["num_hidden_layers"] == 2
    assert json.loads(Path(init, "distillray.json").read_text())["base"] == str(other) and "rebuilding" in caplog.text

    # another label set (same base and task) is another head too
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="distillray.pipeline"):
        pipeline.teacher_init_dir(_task(out, other, "data.labels=[0,1]", "data.label_names=[neg,pos]"))
    assert json.loads(Path(init, "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    assert "rebuilding" in caplog.text


def test_a_teacher_init_without_a_record_is_rebuilt(tmp_path):
    """A dir an older version wrote (distillray.json with the base only) is not trusted."""
    base = make_tiny_bert(tmp_path / "base", label_names=["a", "b", "c"])
    out = tmp_path / "run"
    init, _ = pipeline.teacher_init_dir(_task(out, base))
    Path(init, "distillray.json").write_text(json.dumps({"base": str(base)}))
    pipeline.teacher_init_dir(_task(out, base))
    assert json.loads(Path(init, "distillray.json").read_text())["task"] == "single"
