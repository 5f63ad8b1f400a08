"""workers.resources: custom Ray resources per train worker (one worker per node on a cluster),
validated at config time and passed to Ray Train's ScalingConfig."""

from __future__ import annotations

import pytest

from distillray.config import load_config
from distillray.errors import ConfigError


def test_custom_resources_are_accepted_and_reach_the_config():
    cfg = load_config(None, ["workers.resources={train_slot: 1, accelerator_type:A10G: 0.5}"])
    assert cfg.workers.resources == {"train_slot": 1.0, "accelerator_type:A10G": 0.5}
    assert load_config(None, []).workers.resources == {}


@pytest.mark.parametrize("value, needle", [
    ("{train_slot: 0}", "amounts > 0"),
    ("{CPU: 1}", "CPU and GPU have their own keys"),
    ("{GPU: 1}", "CPU and GPU have their own keys"),
    ("{train_slot: many}", "workers.resources"),
])
def test_bad_resources_are_refused_with_the_field_named(value, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"workers.resources={value}"])
    assert "workers.resources" in str(e.value) and needle in str(e.value)


def test_placement_does_not_change_which_run_resumes():
    """The Ray Train run name hashes what is trained, not where: moving workers to other nodes
    (workers.resources) resumes the same run; changing the worker count does not."""
    from distillray.distributed.ray_train import run_id

    def rid(overrides: list[str]) -> str:
        return run_id({"config": load_config(None, overrides).to_dict(), "schedule": {"epochs": 1}, "stage": "distill"})

    assert rid([]) == rid(["workers.resources={train_slot: 1}"])
    assert rid([]) != rid(["workers.num_workers=2"])
