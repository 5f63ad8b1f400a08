"""One typed config tree for every distillray job.

A config is a preset (a YAML file shipped in `distillray/presets/`, or any YAML path) plus
dotted `key=value` overrides from the command line::

    python jobs/distill.py --config sst2 distill.temperature=4 train.epochs=2

Loading validates everything that can be checked without touching a cluster: unknown keys,
types, ranges and the rules that tie fields together. Each failure is a `ConfigError` whose
one-line message names the field, the bad value and the fix. Defaults live in
`distillray.config.sections` and nowhere else. Workers receive `cfg.to_dict()` and rebuild the
typed tree with `Config.from_dict`. Keys that moved (`MOVED_KEYS`) still load, with a warning
naming their new place, for one release.
"""

from distillray.config.sections import (
    DEFAULT_TEACHER,
    SMOKE,
    AugmentConfig,
    CheckpointConfig,
    DataConfig,
    DistillConfig,
    FinetuneConfig,
    OptimConfig,
    PrecomputeConfig,
    RunConfig,
    ScheduleConfig,
    ServeConfig,
    SpaceSpec,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
    TuneConfig,
    WorkersConfig,
)
from distillray.config.tree import (
    MOVED_KEYS,
    PRESET_DIR,
    Config,
    apply_overrides,
    check,
    dump_yaml,
    list_presets,
    load_config,
    parse_value,
    resolve_paths,
    set_key,
)
from distillray.errors import ConfigError

__all__ = [
    "DEFAULT_TEACHER", "MOVED_KEYS", "PRESET_DIR", "SMOKE", "AugmentConfig", "CheckpointConfig", "Config", "ConfigError",
    "DataConfig", "DistillConfig", "FinetuneConfig", "OptimConfig", "PrecomputeConfig", "RunConfig",
    "ScheduleConfig", "ServeConfig", "SpaceSpec", "StudentConfig", "TeacherConfig", "TrainConfig",
    "TuneConfig", "WorkersConfig", "apply_overrides", "check", "dump_yaml", "list_presets",
    "load_config", "parse_value", "resolve_paths", "set_key",
]
