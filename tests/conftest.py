"""Shared fixtures. Unit tests need nothing running; integration tests get a real local Ray
(started with the same options the jobs use, shut down at the end) and tiny random BERTs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny.py

REPO = Path(__file__).resolve().parents[1]
SST2 = (REPO / ".." / "shared" / "data" / "sst2").resolve()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def sst2(split: str) -> Path:
    """Path of a real SST-2 split; skips the test (with the reason) where ../shared is absent."""
    path = SST2 / f"{split}.tsv"
    if not path.exists():
        pytest.skip(f"real data not found at {path} (../shared/data/sst2 beside the repo)")
    return path


def shared_data(rel: str) -> Path:
    """Path of a file under ../shared/data (e.g. "mrpc/train.tsv"); skips the test where absent."""
    path = SST2.parent / rel
    if not path.exists():
        pytest.skip(f"real data not found at {path} (../shared/data beside the repo)")
    return path


SST2_ARGS = ["data.text_column=1", "data.label_column=0", "data.labels=[0,1]",
             "data.label_names=[negative,positive]"]


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    from tiny import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "teacher", label_names=["negative", "positive"])


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray for the whole session, started like the jobs start it."""
    import ray

    from distillray.config import load_config
    from distillray.ray_utils import init_ray

    init_ray(load_config(None, ["run.num_cpus=4"]))
    yield ray
    ray.shutdown()
