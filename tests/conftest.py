"""Shared fixtures. Unit tests need nothing running; integration tests get a real local Ray
(started with the same options the jobs use, shut down at the end) and tiny random BERTs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
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
def tiny_teacher_onnx(tiny_teacher, tmp_path_factory) -> Path:
    """A copy of the tiny teacher with its fp32 ONNX export (onnx/model.onnx), exported once per
    session (the exporter is slow) by precompute.backend=onnx's driver step: export when missing,
    then check against torch. The copy keeps the shared tiny teacher's dir as it was."""
    import shutil

    from distillray.data.precompute import onnx_teacher

    model = tmp_path_factory.mktemp("onnx") / "teacher"
    shutil.copytree(tiny_teacher, model)
    onnx_teacher(str(model), [f"a short sentence number {i}" for i in range(8)], 128)
    return model


def pytest_collection_modifyitems(config, items):
    """Unit tests run before integration tests, whatever the command line's order. The session's
    Ray (`ray_local`) starts with the first integration test and stays up to the end, and its
    actors' log lines reach this process's stderr whenever they come: a unit test that counts the
    lines a job writes to stderr must never run while it is up."""
    items.sort(key=lambda item: item.path.parent.name == "integration")  # stable: file order kept


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray for the whole session, started like the jobs start it."""
    import ray

    from distillray.config import load_config
    from distillray.ray_utils import init_ray

    init_ray(load_config(None, ["run.num_cpus=4"]))
    yield ray
    ray.shutdown()


BUCKET = "distillray-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3():
    """A local S3-protocol server (moto's, on 127.0.0.1) with one bucket; yields a function making
    s3:// URIs inside it. Endpoint and credentials travel in the URI (pyarrow's
    s3://key:secret@bucket/path?endpoint_override=...&scheme=http form), so Ray workers on any node
    need no environment of their own."""
    pytest.importorskip("moto", reason="moto[server] provides the local S3 endpoint (pip install -e .[dev])")
    import pyarrow.fs as pafs

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"127.0.0.1:{port}"
        fs = pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                               endpoint_override=endpoint, scheme="http", allow_bucket_creation=True)
        for _ in range(100):
            try:
                fs.create_dir(BUCKET)
                break
            except OSError:
                time.sleep(0.2)  # polling the server's start-up, not papering over a race
        else:
            pytest.fail(f"moto server on {endpoint} did not come up")

        def uri(path: str) -> str:
            return (f"s3://testing:testing@{BUCKET}/{path}?region=us-east-1"
                    f"&endpoint_override={endpoint}&scheme=http")

        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=10)
