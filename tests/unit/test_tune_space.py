"""Tune search spaces from config: dotted keys, validation before any Ray work, alpha_ce tying,
trial resources and names. No Ray cluster needed."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from distillray.config import Config, ConfigError, load_config
from distillray.tuning import results as tune_results
from distillray.tuning import space as tune_space

GRID_T = 'tune.space={"distill.temperature": {"type": "grid", "values": [1, 2, 4, 8]}}'


def cfg_of(*overrides: str) -> Config:
    return load_config(None, ["run.num_cpus=4", *overrides])


def test_default_space_is_temperature_and_alpha_kd():
    cfg = cfg_of()
    space = tune_space.build_param_space(cfg.tune)
    assert list(space) == ["distill.temperature", "distill.alpha_kd"]
    assert space["distill.temperature"].lower == 1.0 and space["distill.temperature"].upper == 10.0
    assert tune_space.num_samples(cfg.tune) == 12
    tune_space.check_tune(cfg)


def test_grid_space_and_samples():
    cfg = cfg_of("tune.search=grid", GRID_T)
    space = tune_space.build_param_space(cfg.tune)
    assert space == {"distill.temperature": {"grid_search": [1, 2, 4, 8]}}
    assert tune_space.num_samples(cfg.tune) == 1  # each grid point once, not 12 identical repeats
    assert tune_space.num_samples(cfg_of("tune.search=grid", GRID_T, "tune.num_samples=2").tune) == 2


def test_dotted_override_sets_one_dimension_and_null_drops_one():
    cfg = cfg_of("tune.space.train.lr={type: loguniform, low: 1e-5, high: 1e-3}", "tune.space.distill.alpha_kd=null")
    assert list(cfg.tune.space) == ["distill.temperature", "train.lr"]
    cfg = cfg_of("tune.space.distill.temperature.type=grid", "tune.space.distill.temperature.values=[1,3]")
    assert cfg.tune.space["distill.temperature"].values == [1, 3]
    assert "distill.alpha_kd" in cfg.tune.space


def test_layer_choices_are_encoded_and_decoded():
    cfg = cfg_of('tune.space={"student.layers": {"type": "choice", "values": [[0, 2], [1, 3], null]}}')
    dom = tune_space.build_param_space(cfg.tune)["student.layers"]
    assert sorted(dom.categories, key=str) == ["[0, 2]", "[1, 3]", "null"]
    assert tune_space.decode_params(cfg.tune, {"student.layers": "[1, 3]"}) == {"student.layers": [1, 3]}
    assert tune_space.layer_choices(cfg) == [[0, 2], [1, 3], None]
    assert tune_space.apply_params(cfg, {"student.layers": [1, 3]}).student.layers == [1, 3]


def test_alpha_ce_follows_alpha_kd_unless_searched():
    cfg = cfg_of()
    c = tune_space.apply_params(cfg, {"distill.alpha_kd": 0.7, "distill.temperature": 3.0})
    assert c.distill.alpha_ce == pytest.approx(0.3) and c.distill.temperature == 3.0
    c = tune_space.apply_params(cfg, {"distill.alpha_kd": 0.7, "distill.alpha_ce": 0.9})
    assert c.distill.alpha_ce == 0.9
    assert tune_space.apply_params(cfg, {"distill.alpha_kd": 1.0}).distill.alpha_ce == 0.0


def test_trial_config_uses_trial_resources_and_no_worker_retries(tmp_path):
    cfg = cfg_of("workers.num_workers=2", "workers.max_failures=3", "tune.cpus_per_trial=1.5")
    c = tune_space.trial_config(cfg, {"distill.temperature": 4.0}, str(tmp_path / "t"))
    assert (c.workers.num_workers, c.workers.cpus_per_worker, c.workers.use_gpu, c.workers.max_failures) == (1, 1.5, False, 0)
    assert c.run.output_dir == str(tmp_path / "t") and c.distill.temperature == 4.0
    assert tune_space.trial_resources(cfg_of("tune.gpus_per_trial=0.25").tune).gpus_per_worker == 0.25
    r = tune_space.trial_resources(cfg_of("tune.gpus_per_trial=2", "tune.cpus_per_trial=4").tune)
    assert (r.num_workers, r.cpus_per_worker, r.gpus_per_worker) == (2, 2.0, 1.0)


def test_concurrency_fits_the_local_instance():
    assert tune_space.concurrency(cfg_of("tune.max_concurrent=2")) == 2
    assert tune_space.concurrency(cfg_of("tune.max_concurrent=8")) == 3  # 4 logical CPUs, one for data
    assert tune_space.concurrency(cfg_of("tune.max_concurrent=8", "tune.cpus_per_trial=2")) == 1
    assert tune_space.concurrency(cfg_of("tune.max_concurrent=8", "run.address=ray://x:10001")) == 8


BAD = [
    (["tune.space={}"], "tune.space is empty"),
    (["tune.search=grid"], "tune.search=grid but tune.space.distill.temperature is loguniform"),
    (["tune.search=optuna", GRID_T], "cannot sample"),
    (["tune.space.distill.alpha_kd={type: uniform, low: 0, high: 1.5}"],
     "can pick distill.alpha_kd=1.5, which is invalid"),
    (['tune.space={"train.lr": {"type": "grid", "values": [1e-4, 2]}}'], "can pick train.lr=2"),
    (['tune.space={"train.epochs": {"type": "uniform", "low": 1, "high": 3}}'], "not a real number"),
    (['tune.space={"train.batch_size": {"type": "choice", "values": [16, 2.5]}}'], "train.batch_size=2.5"),
    (["tune.cpus_per_trial=4"], "tune.cpus_per_trial=4"),
    (["tune.gpus_per_trial=1.5"], "whole number"),
    (["tune.gpus_per_trial=3", "train.batch_size=32"], "does not divide"),
]


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_tune_config_is_one_line_naming_the_field(overrides, message):
    with pytest.raises(ConfigError) as e:
        tune_space.check_tune(cfg_of(*overrides))
    assert message in str(e.value)
    assert "fix:" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("overrides,message", [
    (['tune.space={"teacher.model": {"type": "choice", "values": ["a"]}}'], "not a searchable"),
    (['tune.space={"precompute.batch_size": {"type": "choice", "values": [8]}}'], "not a searchable"),
    (['tune.space={"train.num_workers": {"type": "choice", "values": [1, 2]}}'], "not a searchable"),
    (['tune.space={"workers.num_workers": {"type": "choice", "values": [1, 2]}}'], "not a searchable"),
    (['tune.space={"distill.temprature": {"type": "grid", "values": [1]}}'], "not a searchable"),
    (["tune.space.distill.temperature={type: uniform, low: 3, high: 1}"], "needs low < high"),
])
def test_unsearchable_keys_fail_at_load(overrides, message):
    with pytest.raises(ConfigError, match=message):
        cfg_of(*overrides)


def test_layer_choices_checked_against_the_teacher(tiny_teacher):
    cfg = cfg_of('tune.space={"student.layers": {"type": "choice", "values": [[0, 2], [0, 7]]}}')
    with pytest.raises(ConfigError, match="index 7 is outside"):
        tune_space.check_tune(cfg, str(tiny_teacher))
    tune_space.check_tune(cfg_of('tune.space={"student.layers": {"type": "choice", "values": [[0, 2], [1, 3]]}}'),
                  str(tiny_teacher))


def test_missing_searcher_package_is_a_config_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "hyperopt":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ConfigError, match="pip install hyperopt"):
        tune_space.check_tune(cfg_of("tune.search=hyperopt"))


def test_optuna_searcher_samples_the_space():
    pytest.importorskip("optuna")
    cfg = cfg_of("tune.search=optuna", 'tune.space.student.layers={type: choice, values: [[0, 2], [1, 3]]}')
    tune_space.check_tune(cfg)
    from distillray.tuning.search import _searcher

    searcher = _searcher(cfg, 2)
    searcher.set_search_properties(tune_space.METRIC, tune_space.MODE, tune_space.build_param_space(cfg.tune))
    got = [searcher.suggest(f"t{i}") for i in range(3)]
    for g in got:
        params = tune_space.decode_params(cfg.tune, g)
        assert 1.0 <= params["distill.temperature"] <= 10.0 and params["student.layers"] in ([0, 2], [1, 3])


def test_trial_names_say_their_params():
    trial = SimpleNamespace(trial_id="ab12_00003", config={"distill.temperature": 2.4567, "distill.alpha_kd": 0.31,
                                                           "student.layers": "[0, 2]"})
    assert tune_space.trial_name(trial) == "ab12_00003:temperature=2.46,alpha_kd=0.31,layers=0-2"
    assert tune_space.trial_dirname(trial) == "ab12_00003_temperature=2.46,alpha_kd=0.31,layers=0-2"
    assert tune_space.params_label({"train.lr": 1e-4, "finetune.lr": 1e-3}) == "train.lr=0.0001,finetune.lr=0.001"


def test_pick_best_breaks_ties_by_loss_then_steps():
    t = [{"trial": "a", "dev_accuracy": 0.9, "dev_loss": 0.3, "steps": 10},
         {"trial": "b", "dev_accuracy": 0.9, "dev_loss": 0.2, "steps": 4},
         {"trial": "c", "dev_accuracy": 0.8, "dev_loss": 0.1, "steps": 10}]
    assert tune_results.pick_best(t)["trial"] == "b"
    t[1]["dev_loss"] = 0.3
    assert tune_results.pick_best(t)["trial"] == "a"


def test_results_csv_and_plot(tmp_path):
    cfg = cfg_of()
    trials = [
        {"trial": "t0", "status": "completed", "params": {"distill.temperature": 2.0, "distill.alpha_kd": 0.5},
         "dev_accuracy": 0.8, "dev_loss": 0.4, "best_step": 8, "steps": 8, "evals": 2, "error": None},
        {"trial": "t1", "status": "stopped_early", "params": {"distill.temperature": 6.0, "distill.alpha_kd": 0.1},
         "dev_accuracy": 0.6, "dev_loss": 0.7, "best_step": 4, "steps": 4, "evals": 1, "error": None},
        {"trial": "t2", "status": "failed", "params": {"distill.temperature": 1.0, "distill.alpha_kd": 0.9},
         "dev_accuracy": None, "dev_loss": None, "best_step": None, "steps": 0, "evals": 0,
         "error": "TrainingDivergedError: distill: training diverged"},
    ]
    files = tune_results.write_results(tmp_path, trials, cfg)
    import csv

    rows = list(csv.DictReader(open(files["results"])))
    assert [r["status"] for r in rows] == ["completed", "stopped_early", "failed"]
    assert rows[0]["distill.temperature"] == "2.0" and rows[2]["error"].startswith("TrainingDiverged")
    assert (tmp_path / tune_results.PLOT_NAME).stat().st_size > 1000


def test_root_message_finds_the_worker_error():
    class WorkerGroupError(RuntimeError):
        pass

    inner = ValueError("Traceback...\n  File x\nTrainingDivergedError: distill: training diverged: train loss is nan")
    e = WorkerGroupError("Training failed due to worker errors:\n[Rank 0]\n...")
    e.worker_failures = {0: inner}
    assert tune_results.root_message(e) == "TrainingDivergedError: distill: training diverged: train loss is nan"
    assert json.dumps(tune_results.root_message(RuntimeError("plain")))  # always a string
