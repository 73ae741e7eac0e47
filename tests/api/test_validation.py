"""400 for every malformed field (with the field named), 413 for oversized bodies, before any parsing."""

from __future__ import annotations

import json

import pytest

from lensweb.analyses.models import Analysis, Generation

from .conftest import error_of

pytestmark = pytest.mark.django_db

CHAT = [{"role": "user", "content": "hello there"}]

ANALYSIS_CASES = [
    # (body, error code, field)
    ([1, 2], "invalid_body", None),
    ("just a string", "invalid_body", None),
    ({"text": "x", "colour": "red"}, "invalid_body", "colour"),
    ({}, "invalid_input", "text"),
    ({"text": "x", "messages": CHAT}, "invalid_input", "text"),
    ({"text": 5}, "invalid_input", "text"),
    ({"text": ""}, "invalid_input", "text"),
    ({"text": "   \n"}, "invalid_input", "text"),
    ({"text": "word " * 30}, "invalid_input", "text"),  # over LENSWEB_MAX_TEXT_CHARS (100 here)
    ({"text": "a b c d e f g h i j k l"}, "invalid_input", "text"),  # over LENSWEB_MAX_TOKENS (10 here)
    ({"messages": "hello"}, "invalid_input", "messages"),
    ({"messages": []}, "invalid_input", "messages"),
    ({"messages": [{"role": "robot", "content": "beep"}]}, "invalid_input", "messages"),
    ({"messages": [{"role": "user"}]}, "invalid_input", "messages"),
    ({"messages": [{"role": "user", "content": "x", "name": "n"}]}, "invalid_input", "messages"),
    ({"messages": ["hello"]}, "invalid_input", "messages"),
    ({"text": "x", "lens": 3}, "unknown_lens", "lens"),
    ({"text": "x", "lens": ""}, "unknown_lens", "lens"),
    ({"text": "x", "lens": "no-such-lens"}, "unknown_lens", "lens"),
    ({"text": "x", "options": [1]}, "invalid_option", "options"),
    ({"text": "x", "options": "fast"}, "invalid_option", "options"),
    ({"text": "x", "options": {"colour": 1}}, "invalid_option", "options.colour"),
    ({"text": "x", "options": {"best_of_k": 0}}, "invalid_option", "options.best_of_k"),
    ({"text": "x", "options": {"best_of_k": 65}}, "invalid_option", "options.best_of_k"),
    ({"text": "x", "options": {"best_of_k": "2"}}, "invalid_option", "options.best_of_k"),
    ({"text": "x", "options": {"best_of_k": 2.5}}, "invalid_option", "options.best_of_k"),
    ({"text": "x", "options": {"temperature": -0.5}}, "invalid_option", "options.temperature"),
    ({"text": "x", "options": {"temperature": 2.5}}, "invalid_option", "options.temperature"),
    ({"text": "x", "options": {"temperature": "hot"}}, "invalid_option", "options.temperature"),
    ({"text": "x", "options": {"seed": -1}}, "invalid_option", "options.seed"),
    ({"text": "x", "options": {"seed": 2**31}}, "invalid_option", "options.seed"),
    ({"text": "x", "options": {"salience": "yes"}}, "invalid_option", "options.salience"),
    ({"text": "x", "options": {"kl": 1}}, "invalid_option", "options.kl"),
    ({"text": "x", "options": {"logit_lens": None}}, "invalid_option", "options.logit_lens"),
    ({"text": "x", "options": {"keep_candidates": "no"}}, "invalid_option", "options.keep_candidates"),
    ({"text": "x", "options": {"last_n_messages": 1}}, "invalid_option", "options.last_n_messages"),
    ({"messages": CHAT, "options": {"last_n_messages": 0}}, "invalid_option", "options.last_n_messages"),
    ({"messages": CHAT, "options": {"last_n_messages": 65}}, "invalid_option", "options.last_n_messages"),
    ({"text": "x", "options": {"positions": 3}}, "invalid_option", "options.positions"),
    ({"text": "x", "options": {"positions": []}}, "invalid_option", "options.positions"),
    ({"text": "x", "options": {"positions": [1.5]}}, "invalid_option", "options.positions"),
    ({"text": "x", "options": {"positions": [0, 2000]}}, "invalid_option", "options.positions"),
    ({"text": "x", "options": {"positions": list(range(257))}}, "invalid_option", "options.positions"),
    ({"text": "x y", "options": {"positions": [7]}}, "invalid_option", "options.positions"),  # outside
    ({"text": "x y", "options": {"positions": [-9]}}, "invalid_option", "options.positions"),
    (
        {"messages": CHAT, "options": {"positions": [0], "last_n_messages": 1}},
        "invalid_option",
        "options.positions",
    ),
]

GENERATION_CASES = [
    ({}, "invalid_input", "text"),
    ({"text": 1}, "invalid_input", "text"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "invalid_input", "messages"),
    ({"text": "x", "lens": "nope"}, "unknown_lens", "lens"),
    ({"text": "x", "extra": True}, "invalid_body", "extra"),
    ({"text": "x", "options": {"best_of_k": 2}}, "invalid_option", "options.best_of_k"),
    ({"text": "x", "options": {"n": 0}}, "invalid_option", "options.n"),
    ({"text": "x", "options": {"n": 17}}, "invalid_option", "options.n"),
    ({"text": "x", "options": {"max_new_tokens": 0}}, "invalid_option", "options.max_new_tokens"),
    ({"text": "x", "options": {"max_new_tokens": 513}}, "invalid_option", "options.max_new_tokens"),
    ({"text": "x", "options": {"temperature": -0.1}}, "invalid_option", "options.temperature"),
    ({"text": "x", "options": {"top_p": 0}}, "invalid_option", "options.top_p"),
    ({"text": "x", "options": {"top_p": 1.5}}, "invalid_option", "options.top_p"),
    ({"text": "x", "options": {"seed": "s"}}, "invalid_option", "options.seed"),
    ({"text": "x", "options": {"n": 2, "temperature": 0}}, "invalid_option", "options.n"),
    ({"text": "x", "options": {"chat_reply": "x"}}, "invalid_option", "options.chat_reply"),
]


@pytest.fixture
def tight_bounds(settings):
    settings.LENSWEB_MAX_TEXT_CHARS = 100
    settings.LENSWEB_MAX_TOKENS = 10


@pytest.mark.parametrize(("body", "code", "field"), ANALYSIS_CASES)
def test_analysis_400_names_the_field(api, alice_key, live_worker, tight_bounds, body, code, field):
    response = api.post("/api/v1/analyses", body, key=alice_key)
    assert response.status_code == 400, response.json_body
    error = error_of(response)
    assert error["code"] == code and error.get("field") == field, error
    assert error["message"]
    assert not Analysis.objects.exists()


@pytest.mark.parametrize(("body", "code", "field"), GENERATION_CASES)
def test_generation_400_names_the_field(api, alice_key, live_worker, tight_bounds, body, code, field):
    response = api.post("/api/v1/generations", body, key=alice_key)
    assert response.status_code == 400, response.json_body
    error = error_of(response)
    assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error
    assert not Generation.objects.exists()


@pytest.mark.parametrize("raw", ["{", "{'text': 'x'}", "", "\x00", b"\xff\xfe"])
def test_bad_json_is_400(api, alice_key, live_worker, raw):
    response = api.post("/api/v1/analyses", raw=raw, key=alice_key)
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_json"


def test_oversized_body_is_413_before_parsing(api, alice_key, live_worker, settings):
    settings.LENSWEB_API_MAX_BODY_BYTES = 1000
    ok = api.post("/api/v1/analyses", {"text": "a" * 900}, key=alice_key)
    assert ok.status_code == 202
    big = api.post("/api/v1/analyses", {"text": "a" * 1000}, key=alice_key)
    assert big.status_code == 413 and error_of(big)["code"] == "payload_too_large"
    # Not JSON at all, but too large: the size is what is reported, nothing was parsed.
    junk = api.post("/api/v1/analyses", raw="{" * 5000, key=alice_key)
    assert junk.status_code == 413
    generation = api.post("/api/v1/generations", {"text": "a" * 2000}, key=alice_key)
    assert generation.status_code == 413
    assert Analysis.objects.count() == 1


def test_declared_length_over_the_limit_is_413_unread(api, alice_key, live_worker, settings):
    settings.LENSWEB_API_MAX_BODY_BYTES = 1000
    response = api.post(
        "/api/v1/analyses", raw=json.dumps({"text": "x"}), key=alice_key, CONTENT_LENGTH="5000000"
    )
    assert response.status_code == 413
