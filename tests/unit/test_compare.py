"""The comparison's pure parts: which variants form the Pareto front, which one each budget
picks, what evaluate_dirs is asked for, and the table and plot it writes (no models)."""

from __future__ import annotations

import json

import pytest

from distillray.compare import best_under, choices, pareto_front, variant_plan, write_comparison


def ev(acc: float, thr: float, lat: float, mb: float) -> dict:
    return {"accuracy": acc, "throughput": thr, "latency_ms": lat, "size_bytes": mb * 1e6, "backend": "torch",
            "rows": 100, "params": 1_000_000}


EVALS = {"teacher torch fp32": ev(0.80, 170, 15.0, 91), "student torch fp32": ev(0.79, 320, 8.5, 70),
         "student ORT int8 dynamic": ev(0.78, 490, 3.3, 18), "student ORT int8 static": ev(0.78, 450, 3.3, 54),
         "pruned teacher torch fp32": ev(0.79, 200, 12.0, 84)}


def test_pareto_front_drops_exactly_the_dominated_variants():
    # static int8: as accurate as dynamic but slower; pruned teacher: no more accurate than the student, slower
    assert pareto_front(EVALS) == ["teacher torch fp32", "student torch fp32", "student ORT int8 dynamic"]
    tie = {"a": ev(0.8, 100, 1, 1), "b": ev(0.8, 100, 1, 2)}  # equal on both axes: neither dominates
    assert pareto_front(tie) == ["a", "b"]


def test_best_under_budgets_is_the_most_accurate_that_fits():
    assert best_under(EVALS, latency_budget_ms=10) == "student torch fp32"
    assert best_under(EVALS, latency_budget_ms=5) == "student ORT int8 dynamic"  # ties on accuracy: the faster
    assert best_under(EVALS, size_budget_mb=60) == "student ORT int8 dynamic"
    assert best_under(EVALS, size_budget_mb=80) == "student torch fp32"
    assert best_under(EVALS) == "teacher torch fp32"
    assert best_under(EVALS, latency_budget_ms=1) is None
    c = choices(EVALS, 10, 60)
    assert (c["best_under_latency"], c["best_under_size"], c["best_under_both"]) == (
        "student torch fp32", "student ORT int8 dynamic", "student ORT int8 dynamic")
    assert set(choices(EVALS, None, 60)) == {"latency_budget_ms", "size_budget_mb", "best_under_size"}


def test_variant_plan_names_each_form_with_its_backend():
    dirs, quantized, onnx = variant_plan({"teacher": "/t", "student": "/s"},
                                         {"teacher": ["torch fp32"], "student": ["torch int8", "ORT int8 static"]})
    assert dirs == {"teacher torch fp32": "/t", "student torch int8": "/s", "student ORT int8 static": "/s"}
    assert quantized == ("student torch int8",) and onnx == {"student ORT int8 static": "int8-static"}
    with pytest.raises(KeyError):
        variant_plan({"t": "/t"}, {"t": ["tflite"]})


def test_write_comparison_table_plot_and_choices(tmp_path):
    evals = {n: e | ({"vs_teacher torch fp32": {"mcnemar_p": 0.2}} if n != "teacher torch fp32" else {})
             for n, e in EVALS.items()}
    out = write_comparison(tmp_path, evals, "teacher torch fp32", 10, None, ["x: no ONNX forms"])
    md = (tmp_path / "compare.md").read_text()
    assert md.count("\n| ") == 1 + len(EVALS)  # header and one row per variant
    assert "| student ORT int8 dynamic * | torch | 78.00% | -2.00 | 0.200 |" in md
    assert "Best under a batch-1 latency of 10 ms: **student torch fp32**" in md and "x: no ONNX forms" in md
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    assert json.loads((tmp_path / "compare.json").read_text())["best_under_latency"] == out["best_under_latency"]
