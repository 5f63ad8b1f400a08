"""ONNX export, parity with torch, int8 in ONNX Runtime and the ONNX predictor, on a tiny random
BERT with the real tokenizer (no Ray). The export runs once per module (the exporter is slow)."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
import pytest

from conftest import REPO
from distillray.errors import ModelError
from distillray.evaluation import evaluate_dirs
from distillray.inference import encode, load_for_inference
from distillray.inference_onnx import load_onnx_for_inference
from distillray.models import load_tokenizer
from distillray.models.onnx import (
    PARITY_TOL,
    argmax_agreement,
    export_variants,
    fused_ops,
    max_logit_diff,
    onnx_logits,
    onnx_path,
    onnx_session,
)
from tiny import make_tiny_bert

sys.path.insert(0, str(REPO / "jobs"))
import evaluate  # noqa: E402
import export_onnx  # noqa: E402

TEXTS = [f"a {'really ' * (i % 9)}good film number {i}" if i % 2 else f"a dull, slow film {i}" for i in range(60)]
LABELS = np.array([i % 2 for i in range(60)])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny BERT dir with all three ONNX variants, and the figures export_variants returned."""
    model_dir = make_tiny_bert(tmp_path_factory.mktemp("onnx") / "student", layers=2,
                               label_names=["negative", "positive"])
    return model_dir, export_variants(model_dir, TEXTS, TEXTS[::2], max_length=64)


def test_export_has_dynamic_batch_and_sequence_axes(exported):
    model_dir, _ = exported
    session = onnx_session(onnx_path(model_dir))
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert all(isinstance(d, str) for i in session.get_inputs() for d in i.shape)  # symbolic, not fixed
    tok = load_tokenizer(model_dir)
    for texts in (TEXTS[:1], [TEXTS[0], TEXTS[7], TEXTS[15]]):  # batch 1 and batch 3 of mixed lengths
        seqs = encode(tok, texts, 64)
        logits = onnx_logits(session, seqs, batch_size=len(texts), pad_id=tok.pad_token_id)
        assert logits.shape == (len(texts), 2)
        from_bytes = onnx_session(onnx_path(model_dir).read_bytes(), threads=1)  # what precompute actors get
        np.testing.assert_allclose(onnx_logits(from_bytes, seqs, len(texts), tok.pad_token_id), logits, atol=1e-6)
    assert len({len(s) for s in encode(tok, [TEXTS[0], TEXTS[7], TEXTS[15]], 64)}) == 3


def test_export_runs_fused_transformer_kernels(exported):
    """Attention, the residual adds with their LayerNorm, and GELU with its bias are ONNX Runtime's
    fused kernels (2 layers); the int8 models are quantised from that graph."""
    model_dir, figures = exported
    assert figures["fp32"]["fused_ops"] == {"Attention": 2, "BiasGelu": 2, "SkipLayerNormalization": 4}
    assert fused_ops(onnx_path(model_dir, "int8-static"))["Attention"] == 2


def test_fp32_parity_with_torch(exported):
    model_dir, figures = exported
    assert figures["fp32"]["max_abs_logit_diff_vs_torch"] <= PARITY_TOL
    assert max_logit_diff(model_dir, TEXTS[:9], max_length=64, batch_size=4) <= PARITY_TOL


def test_int8_variants_agree_with_fp32(exported):
    model_dir, figures = exported
    for variant in ("int8-dynamic", "int8-static"):
        assert onnx_path(model_dir, variant).stat().st_size < onnx_path(model_dir).stat().st_size
        assert figures[variant]["argmax_agreement_vs_fp32"] >= 0.9, figures[variant]
    assert figures["int8-static"]["calibration_rows"] == 30
    # the figure is the share of rows predicting the same class
    same = argmax_agreement(np.array([[0, 1], [1, 0], [2, 0]]), np.array([[0, 1], [0, 1], [3, 1]]))
    assert same == pytest.approx(2 / 3)


def test_predictor_matches_torch(exported):
    model_dir, _ = exported
    torch_clf = load_for_inference(model_dir, max_length=64)
    onnx_clf = load_onnx_for_inference(model_dir, max_length=64, threads=1)
    assert onnx_clf.labels == torch_clf.labels == ["negative", "positive"]
    assert onnx_clf.session.get_session_options().intra_op_num_threads == 1
    texts = TEXTS[:5]
    for batch_size in (1, 2, 64):
        np.testing.assert_allclose(onnx_clf.predict_proba(texts, batch_size),
                                   torch_clf.predict_proba(texts, batch_size), atol=1e-4, rtol=0)
    assert (onnx_clf.predict(texts) == torch_clf.predict(texts)).all()


def test_evaluate_onnx_backends_side_by_side(exported):
    model_dir, _ = exported
    out = evaluate_dirs({"torch": model_dir, "onnx": model_dir, "onnx_int8": model_dir}, TEXTS, LABELS,
                        ["negative", "positive"], max_length=64, onnx={"onnx": "fp32", "onnx_int8": "int8-dynamic"})
    assert [out[n]["backend"] for n in out] == ["torch", "onnx-fp32", "onnx-int8-dynamic"]
    assert out["onnx"]["accuracy"] == pytest.approx(out["torch"]["accuracy"])
    assert not out["onnx"]["quantized"] and out["onnx_int8"]["quantized"]
    assert out["onnx_int8"]["size_bytes"] < out["onnx"]["size_bytes"]
    assert all(len(r["throughput_rounds"]) == 5 and r["latency_ms"] > 0 for r in out.values())


def test_missing_export_is_one_line_error(tmp_path):
    model_dir = make_tiny_bert(tmp_path / "plain", layers=1)
    with pytest.raises(ModelError, match=r"no ONNX export \(fp32\) there; fix: export it first \(python jobs/export"):
        load_onnx_for_inference(model_dir)
    with pytest.raises(ModelError, match="ONNX variant 'int4' is unknown"):
        onnx_path(model_dir, "int4")


def test_evaluate_job_onnx_without_export(tmp_path, capsys):
    model_dir = make_tiny_bert(tmp_path / "plain", layers=1)
    dev = tmp_path / "dev.tsv"
    dev.write_text("label\ttext\n0\tx\n1\ty\n")
    capsys.readouterr()  # the tiny model's save progress bar
    assert evaluate.main(["--model", str(model_dir), "--onnx", f"data.dev={dev}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "jobs/export_onnx.py --model" in err and err.count("\n") == 1


def test_export_job_bad_dir(tmp_path, capsys):
    dev = tmp_path / "dev.tsv"
    dev.write_text("label\ttext\n0\tx\n1\ty\n")
    (tmp_path / "not-a-model").mkdir()
    code = export_onnx.main(["--model", str(tmp_path / "not-a-model"), f"data.train={dev}", f"data.dev={dev}"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no config.json" in err and err.count("\n") == 1


def test_export_job_prints_figures(tmp_path, capsys):
    model_dir = make_tiny_bert(tmp_path / "m", layers=1, label_names=["negative", "positive"])
    data = tmp_path / "d.tsv"
    data.write_text("label\ttext\n" + "".join(f"{y}\t{t}\n" for t, y in zip(TEXTS, LABELS)))
    assert export_onnx.main(["--model", str(model_dir), "--no-int8", "--no-fuse", f"data.train={data}",
                             f"data.dev={data}", "data.labels=[0,1]", "data.label_names=[negative,positive]",
                             "data.max_length=64"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"fp32"} and out["fp32"]["max_abs_logit_diff_vs_torch"] <= PARITY_TOL
    assert out["fp32"]["fused_ops"] == {}  # --no-fuse: standard ONNX operators only
    assert ort.InferenceSession(out["fp32"]["path"], providers=["CPUExecutionProvider"])


def test_int8_static_keeps_the_ffn_output_matmuls_fp32(exported):
    """The MatMuls fed by GELU (one per layer) get no quantised input; every other MatMul does."""
    import onnx

    from distillray.models.onnx import gelu_matmuls

    model_dir, _ = exported
    assert len(gelu_matmuls(onnx.load(str(onnx_path(model_dir))).graph)) == 2  # the tiny BERT's 2 layers
    graph = onnx.load(str(onnx_path(model_dir, "int8-static"))).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    fed = {n.name: producer.get(n.input[0]) for n in graph.node if n.op_type == "MatMul"}
    fp32 = [name for name, op in fed.items() if op == "BiasGelu"]  # GELU fused with its bias
    assert len(fp32) == 2 and sum(op == "DequantizeLinear" for op in fed.values()) >= 4
