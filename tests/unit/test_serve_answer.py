"""The request parser behind POST /v1/answer and the endpoint check: every bad input maps to its
4xx and a message that says what to fix (the same functions run inside the Serve replica)."""

from __future__ import annotations

import json

import pytest

from serve.api import ApiError, check_endpoint, parse_answer, parse_classify

J = "application/json"
QC = {"question": "Who?", "context": "Ada wrote it."}


def parse(body, ctype=J, max_items=3, max_chars=20, max_context_chars=40):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_answer(raw, ctype, max_items, max_chars, max_context_chars)


def test_one_question_or_a_list():
    assert parse(QC) == [("Who?", "Ada wrote it.")]
    assert parse([QC, {"question": "What?", "context": "x"}]) == [("Who?", "Ada wrote it."), ("What?", "x")]


@pytest.mark.parametrize("body,ctype,status,needle", [
    (QC, "text/plain", 415, "Content-Type must be application/json"),
    (b"{not json", J, 400, "not valid JSON"),
    ("a string", J, 422, "must be a JSON object or a list of objects"),
    ([], J, 422, "the list is empty"),
    ([QC] * 4, J, 413, "4 questions exceed serve.max_batch_texts=3"),
    (["Who?"], J, 422, "body[0] is a str, not an object"),
    ({"question": "Who?"}, J, 422, "context: Field required"),
    ({"question": 1, "context": "x"}, J, 422, "question: Input should be a valid string"),
    ({"question": "q", "context": ["x"]}, J, 422, "context: Input should be a valid string"),
    ({**QC, "extra": 1}, J, 422, "extra: Extra inputs are not permitted"),
    ([QC, {"question": None, "context": "x"}], J, 422, "[1].question: Input should be a valid string"),
    ({"question": "", "context": "x"}, J, 422, "question is empty"),
    ({"question": "q", "context": "  \n"}, J, 422, "context is empty"),
    ([QC, {"question": "q", "context": ""}], J, 422, "[1].context is empty"),
    ({"question": "q" * 21, "context": "x"}, J, 413, "question has 21 characters, over serve.max_chars=20"),
    ({"question": "q", "context": "x" * 41}, J, 413, "context has 41 characters, over serve.max_context_chars=40"),
])
def test_bad_input(body, ctype, status, needle):
    with pytest.raises(ApiError) as e:
        parse(body, ctype)
    assert e.value.status == status
    assert needle in e.value.error, e.value.error
    assert "\n" not in e.value.error


def test_each_model_names_its_endpoint():
    check_endpoint("qa", "answer")
    for task in ("single", "pair"):
        check_endpoint(task, "classify")
        with pytest.raises(ApiError, match=r"POST /v1/classify .*not /v1/answer") as e:
            check_endpoint(task, "answer")
        assert e.value.status == 422
    with pytest.raises(ApiError, match=r"answers questions: POST /v1/answer .*not /v1/classify") as e:
        check_endpoint("qa", "classify")
    assert e.value.status == 422
    # the classify parser still reads what it read before the answer parser joined it
    assert parse_classify(b'{"text": "ok"}', J, 2, 10) == ["ok"]


def test_qa_windows_come_from_a_qa_config_and_bad_ones_fail_before_ray(tmp_path):
    from distillray.config import ConfigError, load_config
    from serve.app import settings_from
    from tiny import make_tiny_bert, make_tiny_qa_bert

    qa = make_tiny_qa_bert(tmp_path / "qa", layers=1)
    s = settings_from(load_config(None, [f"serve.model={qa}"]))  # a classification config: SQuAD's windows
    assert s["qa"] == {"max_length": 384, "doc_stride": 128, "max_answer_length": 30, "n_best": 20}
    s = settings_from(load_config("squad", [f"serve.model={qa}", "data.max_length=256", "data.doc_stride=64",
                                            "data.max_answer_length=15"]))
    assert s["qa"] == {"max_length": 256, "doc_stride": 64, "max_answer_length": 15, "n_best": 20}
    assert settings_from(load_config(None, [f"serve.model={make_tiny_bert(tmp_path / 'clf', layers=1)}"]))["qa"] is None
    with pytest.raises(ConfigError, match="data.doc_stride=320 must be .* below the context room") as e:
        settings_from(load_config(None, [f"serve.model={qa}", "data.doc_stride=320"]))
    assert "\n" not in str(e.value)
    # serve.backend=onnx serves a QA dir's export, so a dir without one is refused before Ray starts
    from distillray.errors import ModelError

    with pytest.raises(ModelError, match=r"serve.backend=onnx: .*no ONNX export.*jobs/export_onnx.py --model") as e:
        settings_from(load_config(None, [f"serve.model={qa}", "serve.backend=onnx"]))
    assert "\n" not in str(e.value)
