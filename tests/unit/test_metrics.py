"""distillray.metrics: what each record_* call sets, and that recording never raises (no Ray
connection here; integration/test_job_submit.py reads the real export)."""

from __future__ import annotations

import pytest

from distillray import metrics


class FakeMetric:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, dict]] = []

    def inc(self, value, tags):
        self.calls.append(("inc", value, tags))

    def set(self, value, tags):
        self.calls.append(("set", value, tags))

    def observe(self, value, tags):
        self.calls.append(("observe", value, tags))


@pytest.fixture
def fakes(monkeypatch):
    made: dict[str, FakeMetric] = {}
    for name in ("precompute_rows", "precompute_rows_per_s", "train_loss", "train_examples_per_s",
                 "dev_accuracy"):
        made[name] = FakeMetric()
        monkeypatch.setattr(metrics, name, lambda m=made[name]: m)
    return made


def test_record_train_sets_each_loss_term_and_rates(fakes):
    metrics.record_train({"stage": "distill", "step": 4, "train_loss": 0.9, "train_loss_kd": 0.5,
                          "train_loss_ce": 0.4, "lr": 1e-3, "examples_per_s": 120.0}, "distill", "r1")
    terms = {c[2]["term"]: c[1] for c in fakes["train_loss"].calls}
    assert terms == {"loss": 0.9, "loss_kd": 0.5, "loss_ce": 0.4}
    assert fakes["train_examples_per_s"].calls == [("set", 120.0, {"run": "r1", "stage": "distill"})]
    assert fakes["dev_accuracy"].calls == []
    metrics.record_train({"dev_accuracy": 0.75, "final": True}, "finetune", "r1")
    assert fakes["dev_accuracy"].calls == [("set", 0.75, {"run": "r1", "stage": "finetune"})]


def test_record_precompute_counts_rows_and_rate(fakes):
    metrics.record_precompute(256, 2.0, "r1")
    assert fakes["precompute_rows"].calls == [("inc", 256, {"run": "r1"})]
    assert fakes["precompute_rows_per_s"].calls == [("set", 128.0, {"run": "r1"})]


def test_recording_never_raises(monkeypatch):
    def broken():
        raise RuntimeError("metrics agent gone")

    monkeypatch.setattr(metrics, "train_loss", broken)
    metrics.record_train({"train_loss": 1.0}, "distill", "r1")  # logged at debug, not raised


def test_real_metrics_without_ray():
    metrics.record_precompute(10, 0.5, "unit")
    metrics.record_train({"train_loss": 1.0, "examples_per_s": 3.0, "dev_accuracy": 0.5}, "distill", "unit")
    assert metrics.train_loss() is metrics.train_loss()  # one object per process
