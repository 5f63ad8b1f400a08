"""precompute.backend=onnx: the combinations ONNX Runtime cannot serve are refused when the config
loads (before Ray starts), each in one line naming the field and the fix."""

from __future__ import annotations

import pytest

from distillray.config import ConfigError, load_config

ONNX = ["precompute.backend=onnx"]


def test_default_is_torch_and_onnx_loads_on_cpu():
    assert load_config(None, []).precompute.backend == "torch"
    cfg = load_config(None, ONNX + ["precompute.logits_dtype=float16", "augment.copies=2", "data.task=pair",
                                  "data.text_pair_column=sentence2"])
    assert cfg.precompute.backend == "onnx"
    # GPU training with the teacher's precompute explicitly on CPU is fine
    assert load_config(None, ONNX + ["workers.use_gpu=true", "precompute.use_gpu=false"]).precompute.backend == "onnx"
    assert load_config("squad", ONNX).precompute.backend == "onnx"  # a QA teacher's start/end logits


@pytest.mark.parametrize("overrides, words", [
    (["precompute.use_gpu=true"], "precompute.use_gpu=true"),
    (["workers.use_gpu=true"], "workers.use_gpu=true (precompute.use_gpu=null follows it)"),
    (["precompute.store_hidden=true"], "precompute.store_hidden=true"),
    (["distill.alpha_hidden=1"], "distill.alpha_hidden=1.0"),
    (["distill.alpha_attn=0.5"], "distill.alpha_attn=0.5"),
])
def test_refused_in_one_line_with_the_fix(overrides, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, ONNX + overrides)
    msg = str(e.value)
    assert "\n" not in msg and "precompute.backend=onnx" in msg and words in msg and "fix:" in msg


def test_unknown_backend_is_refused():
    with pytest.raises(ConfigError, match="precompute.backend"):
        load_config(None, ["precompute.backend=tensorrt"])
