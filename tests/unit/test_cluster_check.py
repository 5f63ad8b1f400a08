"""preflight.check_gpus: GPU workers on a cluster with fewer GPUs now (a scale-from-zero GPU group)."""

from __future__ import annotations

import logging

import pytest

from distillray.errors import ConfigError
from distillray.preflight import check_gpus


def test_scale_from_zero_gpu_group_is_accepted_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="distillray.preflight"):
        check_gpus(need=2, now=0, can_add=4)  # KubeRay GPU group, minReplicas 0, maxReplicas 4
    assert "autoscaler adds GPU nodes (it can provide 4)" in caplog.text


@pytest.mark.parametrize("can_add, says", [(None, "has 0 GPU(s) now; fix"), (1, "can provide at most 1; fix")])
def test_too_few_gpus_now_and_later_is_refused(can_add, says):
    with pytest.raises(ConfigError, match="workers.num_workers=2 GPU workers") as e:
        check_gpus(need=2, now=0, can_add=can_add)
    assert says in str(e.value) and "max_workers" in str(e.value)
