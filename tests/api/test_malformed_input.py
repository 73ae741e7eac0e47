"""Generated malformed submissions to the API and the browser form: deep JSON, lone surrogates, NUL, numbers
out of every range, values of every wrong type. Each gets a documented 4xx naming the field where there
is one, never a 5xx; nothing is queued; each (authenticated) request still leaves its request log entry;
the user's pages still answer afterwards."""

from __future__ import annotations

import json
import random

import pytest
from django.urls import reverse

from lensweb.analyses.models import Analysis, Generation
from lensweb.monitoring.models import RequestLogEntry

from .conftest import error_of

pytestmark = pytest.mark.django_db

CHAT = '[{"role": "user", "content": "hello"}]'
SURROGATES = ["\\ud800", "\\udfff", "x\\ud83d", "\\udc00y", "a\\ud800\\ud800b"]  # JSON escapes, unpaired
DEPTHS = [11, 12, 40, 900, 999, 1001, 5000, 30_000]  # 30 000 objects deep still fits the body limit


def nested(depth: int, inner: str = "1", kind: str = "list") -> str:
    if kind == "list":
        return "[" * depth + inner + "]" * depth
    return '{"a": ' * depth + inner + "}" * depth


def deep_bodies() -> list[tuple[str, str]]:
    """(raw body, what it is): nesting too deep, placed in every field, as lists and as objects."""
    bodies = []
    for depth in DEPTHS:
        for kind in ("list", "dict"):
            deep = nested(depth, kind=kind)
            bodies += [
                (f'{{"messages": {deep}}}', f"messages {kind} {depth}"),
                (f'{{"text": {deep}}}', f"text {kind} {depth}"),
                (f'{{"text": "x", "options": {{"seed": {deep}}}}}', f"option {kind} {depth}"),
                (f'{{"text": "x", "options": {deep}}}', f"options {kind} {depth}"),
                (f'{{"messages": [{{"role": "user", "content": {deep}}}]}}', f"content {kind} {depth}"),
                (f'{{"messages": [{{"role": {deep}, "content": "x"}}]}}', f"role {kind} {depth}"),
                (f'{{"text": "x", "lens": {deep}}}', f"lens {kind} {depth}"),
                (f'{{"text": "x", "colour": {deep}}}', f"unknown field {kind} {depth}"),
            ]
    return bodies


def character_bodies() -> list[tuple[str | bytes, str, str | None]]:
    """(raw body, what it is, the field named): text no database or encoder can hold."""
    bodies = []
    for bad in [*SURROGATES, "\\u0000", "ok\\u0000"]:
        bodies += [
            (f'{{"text": "The capital {bad} of France"}}', f"text {bad}", "text"),
            (f'{{"messages": [{{"role": "user", "content": "hi {bad}"}}]}}', f"content {bad}", "messages"),
            (f'{{"messages": [{{"role": "{bad}", "content": "hi"}}]}}', f"role {bad}", "messages"),
            (f'{{"text": "x", "lens": "{bad}"}}', f"lens {bad}", "lens"),
            (f'{{"text": "x", "options": {{"{bad}": 1}}}}', f"option name {bad}", "options"),
            (f'{{"text": "x", "options": {{"seed": "{bad}"}}}}', f"option value {bad}", "options.seed"),
            (f'{{"text": "x", "{bad}": 1}}', f"field name {bad}", None),
        ]
    # The same surrogate as raw bytes (CESU-8): json.loads decodes bytes with "surrogatepass".
    bodies.append((b'{"text": "raw \xed\xa0\x80 bytes"}', "raw surrogate bytes", "text"))
    return bodies


def number_bodies() -> list[tuple[str, str]]:
    values = [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "-1e400",
        "9" * 4000,
        "-" + "9" * 4000,
        "1" + "0" * 5000,
    ]
    values += ["true", "null", '"7"', "[]", "{}", "0.5", "-1", str(2**63), str(-(2**63))]
    bodies = []
    for name in ("best_of_k", "temperature", "seed", "last_n_messages", "salience", "n", "max_new_tokens"):
        bodies += [(f'{{"text": "x", "options": {{"{name}": {v}}}}}', f"{name}={v[:12]}") for v in values]
    return bodies


def random_bodies(n: int, seed: int = 9) -> list[tuple[str, str]]:
    """Random values of every JSON type in each field, some of them nested or with odd characters."""
    rng = random.Random(seed)
    atoms = ["0", "-1", "1e308", "true", "false", "null", '""', '"\\u0000"', '"\\ud800"', '"\\n\\r"', "NaN"]

    def value(depth=0) -> str:
        roll = rng.random()
        if depth > 3 or roll < 0.5:
            return rng.choice(atoms)
        if roll < 0.75:
            return "[" + ", ".join(value(depth + 1) for _ in range(rng.randint(0, 3))) + "]"
        keys = rng.sample(["role", "content", "text", "seed", "x", "\\ud800"], rng.randint(0, 3))
        return "{" + ", ".join(f'"{k}": {value(depth + 1)}' for k in keys) + "}"

    bodies = []
    for i in range(n):
        field = rng.choice(["text", "messages", "lens", "options", "extra"])
        bodies.append((f'{{"{field}": {value()}}}', f"random {i} {field}"))
    return bodies


@pytest.fixture
def unlimited(settings):
    settings.LENSWEB_API_RATE = ""
    settings.LENSWEB_SUBMIT_RATE = ""  # no limit
    settings.LENSWEB_MAX_TEXT_CHARS = 200


def post_raw(api, path, raw: str | bytes, key):
    response = api.post(path, raw=raw if isinstance(raw, bytes) else raw.encode(), key=key)
    assert response.status_code < 500, (path, raw[:80], response.json_body)
    return response


@pytest.mark.parametrize("path", ["/api/v1/analyses", "/api/v1/generations"])
def test_hundreds_of_malformed_bodies_get_4xx_never_5xx(api, alice, alice_key, live_worker, unlimited, path):
    sent = 0
    for raw, what in deep_bodies():
        response = post_raw(api, path, raw, alice_key)
        sent += 1
        assert response.status_code == 400, what
        assert error_of(response)["code"] == "invalid_body" and "deep" in error_of(response)["message"], what
    for raw, what, field in character_bodies():
        response = post_raw(api, path, raw, alice_key)
        sent += 1
        assert response.status_code == 400, what
        if field in ("text", "messages"):
            assert error_of(response)["field"] == field, (what, error_of(response))
    for raw, what in [*number_bodies(), *random_bodies(300)]:
        response = post_raw(api, path, raw, alice_key)
        sent += 1
        assert response.status_code in (202, 400), what
    assert sent > 500
    # Nothing odd was stored: every accepted job holds text the database took.
    for job in [*Analysis.objects.all(), *Generation.objects.all()]:
        json.dumps(job.input).encode("utf-8")
    # Every one of them left its request log entry (before, a surrogate in a field made saving it fail).
    assert RequestLogEntry.objects.filter(endpoint=path).count() == sent
    assert api.get("/api/v1/lenses", key=alice_key).status_code == 200


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"text": "Paris \\ud800 is"}', "text"),
        ('{"messages": [{"role": "user", "content": "\\udfff"}]}', "messages"),
        ('{"text": "nul \\u0000 here"}', "text"),
    ],
)
def test_unstorable_text_is_a_400_naming_the_field(api, alice_key, live_worker, text, field):
    response = api.post("/api/v1/analyses", raw=text, key=alice_key)
    assert response.status_code == 400, response.json_body
    error = error_of(response)
    assert error["code"] == "invalid_input" and error["field"] == field
    assert "surrogate" in error["message"] or "NUL" in error["message"]
    assert not Analysis.objects.exists()


def test_deep_json_is_refused_with_a_clear_message(api, alice_key, live_worker):
    response = api.post("/api/v1/analyses", raw='{"messages": ' + nested(50_000) + "}", key=alice_key)
    assert response.status_code == 400
    assert error_of(response) == {
        "code": "invalid_body",
        "message": "the body is refused: it nests lists or objects more than 10 deep",
    }


FORM = {"input_format": "chat", "best_of_k": 1, "temperature": 1.0, "seed": 42, "lens": "tiny"}


@pytest.mark.parametrize(
    "text",
    [
        nested(900),
        nested(5000),
        "[" + nested(30, '{"role": "user", "content": "x"}') + "]",
        '[{"role": "user", "content": ' + nested(500) + "}]",
        '[{"role": ' + nested(12, kind="dict") + ', "content": "x"}]',
        '[{"role": "user", "content": "hi \\ud800"}]',
        '[{"role": "user", "content": "nul \\u0000"}]',
        '[{"role": "\\udfff", "content": "hi"}]',
    ],
    ids=lambda text: text[:24],
)
def test_the_forms_chat_field_refuses_deep_json_and_surrogates(client, alice, settings, text):
    settings.LENSWEB_SUBMIT_RATE = "100000/m"
    assert len(text) <= settings.LENSWEB_MAX_TEXT_CHARS  # the chat parser, not the length check, refuses it
    client.force_login(alice)
    page = client.post(reverse("analyses:submit"), {**FORM, "text": text}, HTTP_HX_REQUEST="true")
    assert page.status_code == 200 and 'class="field-error" id="error-text"' in page.content.decode()
    plain = client.post(reverse("analyses:submit"), {**FORM, "text": text})
    assert plain.status_code == 400
    assert not Analysis.objects.exists()
    assert client.get(reverse("analyses:index")).status_code == 200
