"""Evaluation of exported model dirs: accuracy, size, and speeds timed side by side (real tiny BERTs,
real tokenizer, real forward passes; no Ray)."""

from __future__ import annotations

import json
import statistics
import sys

import numpy as np
import pytest

from conftest import REPO
from distillray.errors import ModelError
from distillray.evaluation import rotated, evaluate_dirs, paired_comparison
from tiny import make_tiny_bert

sys.path.insert(0, str(REPO / "jobs"))
import evaluate  # noqa: E402

TEXTS = [f"a {'really ' * (i % 7)}good film number {i}" if i % 2 else f"a dull film {i}" for i in range(80)]
LABELS = np.array([i % 2 for i in range(80)])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return (make_tiny_bert(root / "big", layers=4, label_names=["negative", "positive"]),
            make_tiny_bert(root / "small", layers=1, label_names=["negative", "positive"]))


def test_rotation_gives_every_model_every_position():
    names = ["teacher", "student", "student_int8"]
    orders = [rotated(names, k) for k in range(3)]
    assert orders == [names, ["student", "student_int8", "teacher"], ["student_int8", "teacher", "student"]]
    for pos in range(3):
        assert {o[pos] for o in orders} == set(names)


def test_side_by_side_evaluation(pair):
    big, small = pair
    out = evaluate_dirs({"teacher": big, "student": small, "student_int8": small}, TEXTS, LABELS,
                        ["negative", "positive"], quantized=("student_int8",), max_length=64)
    assert list(out) == ["teacher", "student", "student_int8"]
    for name, r in out.items():
        assert r["accuracy"] == pytest.approx(float(np.mean(_predict(r["model_dir"], r["quantized"]) == LABELS)))
        assert r["rows"] == 80 and r["latency_ms"] > 0 and r["latency_p95_ms"] >= r["latency_ms"]
        assert len(r["throughput_rounds"]) == 5
        assert r["throughput"] == pytest.approx(statistics.median(r["throughput_rounds"]), rel=0.01)
    assert out["teacher"]["layers"] == 4 and out["student"]["layers"] == 1
    assert out["student"]["params"] < out["teacher"]["params"]
    assert out["student_int8"]["quantized"] and not out["student"]["quantized"]


def _predict(model_dir, quantize):
    from distillray.inference import load_for_inference

    return load_for_inference(model_dir, max_length=64, quantize=quantize).predict(TEXTS)


@pytest.mark.parametrize("only_a, only_b, p", [(3, 0, 0.25), (5, 1, 2 * (1 + 6) / 64), (2, 2, 1.0), (0, 0, 1.0),
                                                (1, 5, 2 * (1 + 6) / 64)])
def test_paired_comparison_counts_and_exact_mcnemar_p(only_a, only_b, p):
    # 4 examples both get right, 2 both get wrong, then the discordant ones
    labels = np.array([1] * 6 + [1] * (only_a + only_b))
    a = np.array([1, 1, 1, 1, 0, 0] + [1] * only_a + [0] * only_b)
    b = np.array([1, 1, 1, 1, 0, 0] + [0] * only_a + [1] * only_b)
    assert paired_comparison(a, b, labels) == {"only_this_right": only_a, "only_baseline_right": only_b,
                                                "mcnemar_p": pytest.approx(p)}


def test_label_mismatch_is_refused(pair, tmp_path):
    other = make_tiny_bert(tmp_path / "other", label_names=["bad", "good"])
    with pytest.raises(ModelError, match="differ from the dataset's"):
        evaluate_dirs({"teacher": pair[0], "other": other}, TEXTS, LABELS, ["negative", "positive"], speed=False)


def test_evaluate_job_with_baseline(pair, tmp_path, capsys):
    big, small = pair
    dev = tmp_path / "dev.tsv"
    dev.write_text("label\ttext\n" + "".join(f"{y}\t{t}\n" for t, y in zip(TEXTS, LABELS)))
    assert evaluate.main(["--model", str(small), "--baseline", str(big), "--int8", f"data.dev={dev}",
                          "data.labels=[0,1]", "data.label_names=[negative,positive]"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"fp32", "int8", "baseline"}
    b = out["baseline"]
    for name in ("fp32", "int8"):
        assert out[name]["speedup"] == pytest.approx(out[name]["throughput"] / b["throughput"])
        assert out[name]["retention"] == pytest.approx(out[name]["accuracy"] / b["accuracy"])
        vs = out[name]["vs_baseline"]  # the paired counts are the accuracy gap, example by example
        assert vs["only_this_right"] - vs["only_baseline_right"] == round((out[name]["accuracy"] - b["accuracy"]) * 80)
        assert 0 < vs["mcnemar_p"] <= 1
    assert "vs_baseline" not in b


def test_evaluate_job_bad_baseline(pair, tmp_path, capsys):
    dev = tmp_path / "dev.tsv"
    dev.write_text("label\tsentence\n0\tx\n1\ty\n")
    code = evaluate.main(["--model", str(pair[1]), "--baseline", str(tmp_path / "nope"), f"data.dev={dev}"])
    assert code == 2
    assert "nope" in capsys.readouterr().err
