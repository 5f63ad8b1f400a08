"""`data.label_names` names integer labels all the way to the exported models' `id2label`, which
is what `transformers.pipeline()` and Serve return. Without it, integer labels stay '0'/'1'.

The stages run as jobs/distill.py runs them, without Ray: preflight, the teacher's init dir, the
export the train loop does after fine-tuning (`export_model`), the student's init dir, its export.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillray import pipeline
from distillray.preflight import preflight
from distillray.config import load_config
from distillray.inference import load_for_inference
from distillray.models import export_model, load_classifier


def _export_teacher_and_student(tmp_path, teacher: str, overrides: list[str]) -> tuple[str, str]:
    cfg = load_config(None, ["data.train=smoke", "data.dev=smoke", "data.text_column=sentence",
                             "data.label_column=label", f"teacher.model={teacher}",
                             "workers.num_workers=1", f"run.output_dir={tmp_path / 'run'}", *overrides])
    task = preflight(cfg)
    init_dir, finetuned = pipeline.teacher_init_dir(task)
    assert not finetuned  # the tiny teacher is not fine-tuned for these labels: a fine-tune follows
    # what the train loop writes after fine-tuning: the trained weights, into the init dir's config
    teacher_dir = export_model(init_dir, load_classifier(init_dir).state_dict(), task.dest("teacher"))
    student_init = pipeline.student_init_dir(task, teacher_dir, None)
    student_dir = export_model(student_init, load_classifier(student_init).state_dict(), task.dest("student"))
    return teacher_dir, student_dir


@pytest.mark.parametrize("overrides,names", [
    (["data.labels=[0,1]", "data.label_names=[negative,positive]"], ["negative", "positive"]),
    ([], ["0", "1"]),  # integer labels, no names: the ids' strings
])
def test_label_names_reach_the_exported_id2label(tmp_path, overrides, names):
    from tiny import make_tiny_bert

    base = make_tiny_bert(tmp_path / "base", label_names=["a", "b"])  # some other task's labels
    teacher_dir, student_dir = _export_teacher_and_student(tmp_path, str(base), overrides)
    for d in (teacher_dir, student_dir):
        config = json.loads(Path(d, "config.json").read_text())
        assert [config["id2label"][str(i)] for i in range(2)] == names, d
        assert config["label2id"] == {n: i for i, n in enumerate(names)}, d
    assert load_for_inference(student_dir).labels == names  # what Serve answers with

    from transformers import pipeline as hf_pipeline

    out = hf_pipeline("text-classification", model=student_dir, device="cpu")(["a fine film ."])
    assert out[0]["label"] in names
