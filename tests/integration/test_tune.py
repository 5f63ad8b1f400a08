"""Ray Tune search on real Ray Tune + Ray Train + DeepSpeed, on a tiny random BERT and the smoke
sample: a grid finishes and picks the best trial, a failing trial does not stop the search, an
interrupted search resumes, and no trial can reach the teacher. jobs/distill.py with
tune.enabled=true (the student trained with the best config, jobs/tune.py resuming that search) is
tested end to end in test_object_storage.py, with everything in a bucket."""

from __future__ import annotations

import csv
import json
import shutil
import sys

import pytest

from conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]
sys.path.insert(0, str(REPO / "jobs"))
import distill  # noqa: E402

# Tiny and short: 8 optimizer steps per trial, dev accuracy at step 4 and at the end (two Tune
# iterations, so ASHA has a rung to stop trials at).
SMOKE = ["data.train=smoke", "data.dev=smoke", "data.text_column=sentence", "data.max_length=32",
         "workers.num_workers=1", "workers.cpus_per_worker=1", "train.batch_size=16", "train.lr=2e-3",
         "train.max_steps=8", "train.eval_every=4", "train.log_every=4", "checkpoint.every=0",
         "precompute.shard_rows=128", "run.num_cpus=4", "tune.max_concurrent=2"]
GRID_T = 'tune.space={"distill.temperature": {"type": "grid", "values": [1e-40, 1, 8]}}'


@pytest.fixture(scope="module")
def prepared(ray_local, tiny_teacher, tmp_path_factory):
    """Teacher (a copy of the tiny one) -> precomputed shards -> student init dir; then the
    teacher is deleted, so any trial that tried to load it would fail."""
    from distillray import pipeline
    from distillray.config import load_config
    from distillray.preflight import preflight
    from distillray.tuning.search import prepare_init_dirs

    root = tmp_path_factory.mktemp("tune")
    teacher = root / "teacher-copy"
    shutil.copytree(tiny_teacher, teacher)
    args = [*SMOKE, f"teacher.model={teacher}", "teacher.finetune=false", f"run.output_dir={root / 'run'}",
            f"precompute.cache_dir={root / 'cache'}"]
    task = preflight(load_config(None, args))
    teacher_dir = pipeline.prepare_teacher(task).dir
    shards = pipeline.precompute(task, teacher_dir)
    checked = pipeline.check_shards(task, shards.shard_dir, teacher_dir)
    init_dirs = prepare_init_dirs(task, teacher_dir)
    for d in {teacher, task.out / "teacher"}:
        shutil.rmtree(d)
    return {"root": root, "args": args, "task": task, "shards": checked,
            "init_dirs": init_dirs, "teacher": teacher}


def run(prepared, name: str, *overrides: str):
    from distillray.config import load_config
    from distillray.preflight import Task
    from distillray.tuning.search import search

    p = prepared
    cfg = load_config(None, [*p["args"], f"run.output_dir={p['root'] / name}", *overrides])
    task = Task(cfg=cfg, train=None, dev=p["task"].dev, labels=p["task"].labels)
    return search(task, p["shards"], p["init_dirs"])


def _read(path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def grid(prepared):
    """A 3-trial grid over temperature, one value absurd (T = 1e-40 overflows logits / T: NaN
    loss from the first step)."""
    summary = run(prepared, "grid", "tune.search=grid", GRID_T, "tune.scheduler=asha")
    return {"summary": summary}


def test_grid_over_temperature_finishes_and_picks_the_best(grid, prepared):
    s = grid["summary"]
    out = prepared["root"] / "grid" / "tune"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(s.trials) == 3
    assert sorted(float(r["distill.temperature"]) for r in rows) == [1e-40, 1.0, 8.0]
    ok = [r for r in rows if float(r["distill.temperature"]) >= 1]
    assert {r["status"] for r in ok} <= {"completed", "stopped_early"} and any(r["status"] == "completed" for r in ok)
    for r in ok:
        assert 0.0 <= float(r["dev_accuracy"]) <= 1.0 and int(r["steps"]) in (4, 8) and r["error"] == ""
    best = json.loads((out / "best.json").read_text())
    top = max(float(r["dev_accuracy"]) for r in ok)
    assert best["dev_accuracy"] == pytest.approx(top) == s.best_accuracy
    assert best["params"] == s.best_params and best["trial"] == s.best["trial"]
    assert best["config"]["distill"]["temperature"] == best["params"]["distill.temperature"]
    assert best["config"]["distill"]["alpha_ce"] == 0.5  # temperature only: the weights stay as set
    assert best["checkpoint"].startswith(str(out)) and (out / "accuracy_vs_params.png").stat().st_size > 1000
    assert all("temperature=" in t["trial"] for t in s.trials)  # names say their params
    assert s.as_dict()["trials"] == 3 and s.teacher_forwards_avoided == sum(int(r["steps"]) * 16 for r in rows)


def test_a_failing_trial_does_not_stop_the_search(grid):
    s = grid["summary"]
    bad = [t for t in s.trials if t["params"]["distill.temperature"] < 1]
    assert [t["status"] for t in bad] == ["failed"]
    assert "training diverged" in bad[0]["error"] and "\n" not in bad[0]["error"]
    assert s.as_dict()["failed"] == 1 and s.best_params["distill.temperature"] >= 1


def test_no_trial_touches_the_teacher(grid, prepared):
    assert not prepared["teacher"].exists()  # deleted before the search; yet the trials trained
    assert sum(t["status"] != "failed" for t in grid["summary"].trials) == 2
    import inspect

    from distillray.tuning import search as ts

    assert "teacher" not in inspect.signature(ts.search).parameters
    assert "teacher" not in inspect.signature(ts.run_trial).parameters
    assert not any("teacher" in f for f in ts.TrialInputs.__dataclass_fields__)


def test_rerun_of_a_finished_search_restores_it(grid, prepared):
    again = run(prepared, "grid", "tune.search=grid", GRID_T, "tune.scheduler=asha")
    s = grid["summary"]
    assert again.restored and again.experiment_dir == s.experiment_dir
    assert [t["trial"] for t in again.trials] == [t["trial"] for t in s.trials]
    assert again.best_params == s.best_params


def test_bad_tune_config_fails_before_ray(tmp_path, capsys):
    args = [*SMOKE, "tune.enabled=true", "tune.search=grid", f"run.output_dir={tmp_path / 'x'}"]
    assert distill.main(args) == 2
    assert "tune.search=grid but tune.space.distill.temperature is loguniform" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
