"""ONNX export of the other two tasks, on tiny random BERTs with the real tokenizer (no Ray): a
sentence-pair classifier (token_type_ids is an input) and an extractive QA model (start and end
logits out), each checked against torch on real dev rows: GLUE MRPC pairs, SQuAD windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared_data
from distillray.config import load_config
from distillray.errors import ModelError
from distillray.inference import load_for_inference
from distillray.inference_onnx import load_onnx_for_inference
from distillray.models import load_tokenizer
from distillray.models.onnx import (
    PAIR_INPUTS,
    PARITY_TOL,
    SPAN_OUTPUTS,
    export_kind,
    export_qa_variants,
    export_variants,
    max_logit_diff,
    onnx_path,
    onnx_logits,
    onnx_session,
    onnx_window_logits,
    qa_max_logit_diff,
    qa_windows,
    span_agreement,
)
from distillray.tasks.classification import tokenize
from distillray.tasks.qa import read_squad
from tiny import make_tiny_bert, make_tiny_qa_bert


def mrpc_pairs(n: int) -> list[tuple[str, str]]:
    from distillray.data.text import load_split

    ds, _ = load_split(str(shared_data("mrpc/dev.tsv")), load_config("mrpc").data, max_rows=n)
    return ds.inputs()


@pytest.fixture(scope="module")
def squad_dev():
    """Real dev questions: the first 6, and 2 whose contexts need more than one 384-token window."""
    examples = read_squad(shared_data("squad/dev.json"))
    longest = sorted({ex.context: ex for ex in examples}.values(), key=lambda ex: -len(ex.context))[:2]
    return examples[:6] + longest


def test_pair_classifier_exports_with_segments_and_matches_torch(tmp_path):
    from transformers import BertForSequenceClassification

    from distillray.tasks.classification import record_task

    d = make_tiny_bert(tmp_path / "pair", layers=1, label_names=["not_equivalent", "equivalent"])
    m = BertForSequenceClassification.from_pretrained(d)
    with torch.no_grad():  # a random tiny BERT's logits are ~0: scale its head so the inputs show
        m.bert.pooler.dense.weight *= 20
        m.classifier.weight *= 200
    m.save_pretrained(d, safe_serialization=True)
    record_task(d, "pair")
    assert export_kind(d) == "pair"
    pairs = mrpc_pairs(40)
    figures = export_variants(d, pairs, pairs[::2], max_length=128)
    session = onnx_session(onnx_path(d))
    assert [i.name for i in session.get_inputs()] == list(PAIR_INPUTS)
    assert all(isinstance(dim, str) for i in session.get_inputs() for dim in i.shape)  # dynamic axes
    assert figures["fp32"]["fused_ops"] == {"Attention": 1, "BiasGelu": 1, "SkipLayerNormalization": 2}
    assert figures["fp32"]["max_abs_logit_diff_vs_torch"] <= PARITY_TOL
    assert max_logit_diff(d, pairs[:7], max_length=128, batch_size=3) <= PARITY_TOL
    for variant in ("int8-dynamic", "int8-static"):
        assert figures[variant]["argmax_agreement_vs_fp32"] >= 0.9, figures[variant]
    # the segments reach the graph: swapping the two texts changes the logits
    tok = load_tokenizer(d)

    def logits(items: list) -> np.ndarray:
        seqs, types = tokenize(tok, items, 128)
        return onnx_logits(session, seqs, 8, tok.pad_token_id, types)

    assert np.abs(logits(pairs[:7]) - logits([(b, a) for a, b in pairs[:7]])).max() > 1e-3
    # the ONNX predictor (evaluation, serve.backend=onnx) reads pairs as the torch one does
    onnx_clf, torch_clf = load_onnx_for_inference(d, threads=1), load_for_inference(d)
    assert onnx_clf.task == torch_clf.task == "pair"
    np.testing.assert_allclose(onnx_clf.predict_proba(pairs[:9], 4), torch_clf.predict_proba(pairs[:9], 4),
                               atol=1e-4, rtol=0)

@pytest.fixture(scope="module")
def qa_export(tmp_path_factory, squad_dev):
    """A tiny QA BERT exported to ONNX: fp32 and both int8 variants, with their figures."""
    d = make_tiny_qa_bert(tmp_path_factory.mktemp("qa-onnx") / "qa", layers=2)
    questions, contexts = [ex.question for ex in squad_dev], [ex.context for ex in squad_dev]
    return d, export_qa_variants(d, questions, contexts, calibration=(questions[:4], contexts[:4]))


def test_qa_model_exports_start_and_end_logits_matching_torch_on_squad_windows(qa_export, squad_dev):
    d, figures = qa_export
    assert export_kind(d) == "qa"
    questions, contexts = [ex.question for ex in squad_dev], [ex.context for ex in squad_dev]
    session = onnx_session(onnx_path(d))
    assert [i.name for i in session.get_inputs()] == list(PAIR_INPUTS)
    assert [o.name for o in session.get_outputs()] == list(SPAN_OUTPUTS)
    assert all(isinstance(dim, str) for i in session.get_inputs() for dim in i.shape)
    windows = qa_windows(d, questions, contexts)
    assert figures["fp32"]["windows"] == len(windows) > len(questions)  # the long contexts: several windows
    assert figures["fp32"]["fused_ops"] == {"Attention": 2, "BiasGelu": 2, "SkipLayerNormalization": 4}
    assert figures["fp32"]["max_abs_logit_diff_vs_torch"] <= PARITY_TOL
    # other batch sizes: batch 1, and batches of windows of mixed lengths
    assert qa_max_logit_diff(d, questions, contexts, batch_size=1) <= PARITY_TOL
    starts, ends = onnx_window_logits(session, windows, batch_size=3)
    assert starts.shape == ends.shape == windows.input_ids.shape
    for variant in ("int8-dynamic", "int8-static"):
        assert onnx_path(d, variant).stat().st_size < onnx_path(d).stat().st_size
        assert 0.0 <= figures[variant]["answer_agreement_vs_fp32"] <= 1.0
    assert figures["int8-static"]["calibration_rows"] == 4


def test_evaluate_job_scores_a_qa_export_in_onnx_runtime(qa_export, tmp_path, capsys):
    """jobs/evaluate.py --onnx on a QA model: SQuAD EM/F1 from the ONNX start/end logits (fp32:
    torch's answers), the int8 exports beside; a missing export or a classifier is refused."""
    import json
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "jobs"))
    import evaluate

    d, _ = qa_export
    base = ["--config", "squad", f"data.dev={shared_data('squad/dev.json')}", "data.dev_max_rows=12", "--no-speed"]
    capsys.readouterr()
    assert evaluate.main(["--model", str(d), "--onnx", "--int8", *base]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"fp32", "int8", "onnx", "onnx_int8", "onnx_int8_static"}
    assert (out["onnx"]["exact_match"], out["onnx"]["f1"]) == (out["fp32"]["exact_match"], out["fp32"]["f1"])
    assert out["onnx"]["backend"] == "onnx-fp32" and out["onnx_int8_static"]["backend"] == "onnx-int8-static"
    assert all(e["rows"] == 12 and 0 <= e["exact_match"] <= e["f1"] <= 1 for e in out.values())
    assert out["onnx_int8"]["size_bytes"] < out["onnx"]["size_bytes"] and out["onnx"]["quantized"] is False

    bare = make_tiny_qa_bert(tmp_path / "bare", layers=1)  # no ONNX export
    assert evaluate.main(["--model", str(bare), "--onnx", *base]) == 2
    assert "no ONNX export (fp32) there; fix: export it first" in capsys.readouterr().err
    clf = make_tiny_bert(tmp_path / "clf", layers=1)
    assert evaluate.main(["--model", str(clf), *base]) == 2
    assert "has no question-answering head but data.task=qa" in capsys.readouterr().err


def test_span_agreement_and_qa_export_refuses_a_classifier(tmp_path):
    a = [{"start": 0, "end": 3}, {"start": 5, "end": 9}]
    assert span_agreement(a, [{"start": 0, "end": 3}, {"start": 5, "end": 8}]) == pytest.approx(0.5)
    d = make_tiny_bert(tmp_path / "clf", layers=1)
    assert export_kind(d) == "single"
    with pytest.raises(ModelError, match="not a question-answering model"):
        export_qa_variants(d, ["q"], ["c"])


def test_export_job_refuses_a_model_of_another_task_in_one_line(tmp_path, capsys):
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "jobs"))
    import export_onnx

    d = make_tiny_bert(tmp_path / "single", layers=1)
    capsys.readouterr()
    assert export_onnx.main(["--model", str(d), "--config", "mrpc", "--no-int8"]) == 2
    err = capsys.readouterr().err
    assert "is a single-text model but data.task=pair" in err and "fix: pass the config" in err
    assert err.startswith("error: ") and err.count("\n") == 1
