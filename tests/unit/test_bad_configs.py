"""Issue 7, bad configs: each one, given to the main job, exits with code 2 in seconds with one
line on stderr naming the field and the fix, before Ray starts, and writes nothing."""

from __future__ import annotations

import sys
import time

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "jobs"))
import distill  # noqa: E402

GOOD_TSV = "label\tsentence\n" + "".join(f"{i % 2}\tsentence number {i}\n" for i in range(40))


def cases(tmp):
    one_class = tmp / "one_class.tsv"
    one_class.write_text("label\tsentence\n" + "".join(f"1\tonly positive {i}\n" for i in range(10)))
    a_file = tmp / "a_file"
    a_file.write_text("not a dir")
    return [  # (name, overrides, words the one line must contain)
        ("unknown key", ["distill.temprature=3"], "did you mean distill.temperature"),
        ("unknown section", ["trainer.lr=1"], "unknown key 'trainer'"),
        ("wrong type", ["train.epochs=two"], "train.epochs"),
        ("temperature zero", ["distill.temperature=0"], "distill.temperature=0"),
        ("temperature negative", ["distill.temperature=-2"], "distill.temperature=-2"),
        ("alpha above 1", ["distill.alpha_kd=1.2"], "distill.alpha_kd=1.2"),
        ("alpha below 0", ["distill.alpha_ce=-0.5"], "distill.alpha_ce=-0.5"),
        ("alphas all zero", ["distill.alpha_kd=0", "distill.alpha_ce=0"], "all 0"),
        ("empty layers", ["student.layers=[]"], "student.layers=[] is empty"),
        ("layer out of range", ["student.layers=[0,2,9]"], "student.layers"),
        ("more student layers than teacher", ["student.layers=[0,1,2,3,4,5,6]"], "student.layers"),
        ("missing data file", ["data.train=/nonexistent/train.tsv"], "/nonexistent/train.tsv"),
        ("missing column", ["data.text_column=content"], "no column 'content'"),
        ("one class only", [f"data.train={one_class}", f"data.dev={one_class}"], "at least 2 classes"),
        ("too many workers", ["workers.num_workers=64", "run.num_cpus=4"], "workers.num_workers=64"),
        ("zero stage 4", ["workers.zero_stage=4"], "workers.zero_stage=4"),
        ("batch size zero", ["train.batch_size=0"], "train.batch_size=0"),
        ("output dir is a file", [f"run.output_dir={a_file}"], "is a file"),
        ("max_length over the teacher's", ["data.max_length=4096"], "data.max_length=4096"),
        ("GPU asked, none here", ["workers.use_gpu=true"], "workers.use_gpu=true"),
        # no such bucket (and no network here): refused by a write probe before anything runs
        ("output dir on unwritable object storage", ["run.output_dir=s3://distillray-no-such-bucket/runs/x"],
         "cannot be written"),
    ]


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "train.tsv"
    p.write_text(GOOD_TSV)
    return p


@pytest.mark.parametrize("idx", range(21))
def test_bad_config_exits_2_with_one_line_and_writes_nothing(idx, data, tmp_path, capsys):
    name, overrides, words = cases(tmp_path)[idx]
    out = tmp_path / "out"
    argv = [f"data.train={data}", f"data.dev={data}", "data.text_column=sentence", f"run.output_dir={out}",
            f"precompute.cache_dir={tmp_path / 'cache'}", *overrides]
    if name == "GPU asked, none here":
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    t0 = time.time()
    rc = distill.main(argv)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2, (name, err)
    assert len(err) == 1, (name, err)
    assert words in err[0], (name, err[0])
    assert "fix" in err[0] or "did you mean" in err[0], (name, err[0])
    written = [p for p in (out, tmp_path / "cache") if p.exists() and p.is_dir()]
    assert not written, (name, written)
    print(f"{name}: exit 2 in {time.time() - t0:.2f}s: {err[0]}")


def test_table_has_at_least_15_cases(tmp_path):
    assert len(cases(tmp_path)) >= 15
