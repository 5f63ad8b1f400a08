"""The request parser behind POST /v1/classify: every bad input maps to its 4xx and a message
that says what to fix (the same function runs inside the Serve replica)."""

from __future__ import annotations

import json

import pytest

from serve.api import MAX_BODY_BYTES, ApiError, parse_classify

J = "application/json"


def parse(body, ctype=J, max_texts=4, max_chars=50):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_classify(raw, ctype, max_texts, max_chars)


def test_valid_single_and_list():
    assert parse({"text": "good"}) == ["good"]
    assert parse({"texts": ["a", "b"]}) == ["a", "b"]
    assert parse({"text": "ok"}, ctype="application/json; charset=utf-8") == ["ok"]


@pytest.mark.parametrize("body,ctype,status,needle", [
    ({"text": "x"}, "text/plain", 415, "Content-Type must be application/json"),
    ({"text": "x"}, None, 415, "Content-Type"),
    (b"{not json", J, 400, "not valid JSON"),
    (b'{"text": "caf\xe9"}', J, 400, "not valid UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, J, 400, "nested too deeply"),
    ([1, 2], J, 422, "must be a JSON object"),
    ({}, J, 422, "exactly one"),
    ({"text": "a", "texts": ["b"]}, J, 422, "invalid request"),
    ({"text": 5}, J, 422, "invalid request"),
    ({"texts": "not a list"}, J, 422, "invalid request"),
    ({"texts": ["ok", 3]}, J, 422, "invalid request"),
    ({"text": "x", "extra": 1}, J, 422, "invalid request"),
    ({"text": ""}, J, 422, "text is empty"),
    ({"text": "   "}, J, 422, "text is empty"),
    ({"texts": []}, J, 422, '"texts" is empty'),
    ({"texts": ["a", ""]}, J, 422, "texts[1] is empty"),
    ({"texts": ["a"] * 5}, J, 413, "serve.max_batch_texts=4"),
    ({"text": "x" * 51}, J, 413, "serve.max_chars=50"),
    (b'{"text": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}', J, 413, "byte limit"),
])
def test_bad_input(body, ctype, status, needle):
    with pytest.raises(ApiError) as e:
        parse(body, ctype)
    assert e.value.status == status
    assert needle in e.value.error
