"""An API client that checks every answer against the OpenAPI document, and a live worker record.

Fixtures shared with tests/accounts (users, keys, the limiter reset) and with tests/web (the tiny test
lens) are imported from there.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import jsonschema
import pytest
from django.urls import resolve

from lensweb.api.api import api as ninja_api
from tests.accounts.conftest import (  # noqa: F401  (fixtures)
    admin_user,
    alice,
    alice_key,
    bob,
    bob_key,
    clear_ratelimits,
    revoked_key,
    staff,
    staff_key,
)
from tests.web.conftest import no_lens_held, run_jobs, tiny_engine, tiny_registry  # noqa: F401  (fixtures)

DOC = ninja_api.get_openapi_schema()
VALIDATOR = jsonschema.Draft202012Validator
# Routes about the API rather than of it: the document itself and its reference page.
META_ROUTES = {"openapi-json", "docs", "api-root"}


def openapi_template(path: str) -> tuple[str, str]:
    """(url name, the document's path template) of a request path."""
    match = resolve(urlsplit(path).path)
    return match.url_name, "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", match.route)


def documented_response(method: str, path: str, status: int) -> dict | None:
    """The document's response for this call (None for the meta routes, which it does not describe)."""
    name, template = openapi_template(path)
    if name in META_ROUTES:
        return None
    if name == "unknown":
        assert status == 404
        return {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    item = DOC["paths"][template]
    operation = item.get(method.lower())
    if operation is None:
        assert status == 405, f"{method} {template} answered {status} for a method it lacks"
        return {
            "headers": {"Allow": {}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    spec = operation["responses"].get(str(status))
    assert spec is not None, f"{method} {template} answered {status}, which the document does not list"
    return spec


def check_against_openapi(method: str, path: str, response) -> None:
    spec = documented_response(method, path, response.status_code)
    if spec is None:
        return
    for header in spec.get("headers", {}):
        if header in ("Retry-After", "Location", "Allow", "WWW-Authenticate"):
            assert response.has_header(header), f"{response.status_code} without its {header} header"
    if response.has_header("Retry-After"):
        assert int(response["Retry-After"]) >= 1
    (media, content), *_ = spec["content"].items()
    assert response["Content-Type"].startswith(media), (response["Content-Type"], media)
    if media != "application/json":
        return  # a CSV download: text
    body = json.loads(response.content)
    VALIDATOR(
        {**content["schema"], "components": DOC["components"]}, format_checker=VALIDATOR.FORMAT_CHECKER
    ).validate(body)


class Api:
    """`api.post("/api/v1/analyses", {...}, key=...)`: JSON in, checked response out (`.json` parsed)."""

    def __init__(self, client):
        self.client = client

    def call(
        self, method, path, body=None, *, key=None, raw: bytes | str | None = None, headers=None, **extra
    ):
        headers = dict(headers or {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        kwargs = {"content_type": "application/json"} if data is not None else {}
        if data is not None:
            kwargs["data"] = data
        response = getattr(self.client, method.lower())(path, headers=headers, **kwargs, **extra)
        check_against_openapi(method, path, response)
        is_json = response["Content-Type"].startswith("application/json")
        response.json_body = json.loads(response.content) if is_json and response.content else None
        return response

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)


@pytest.fixture
def api(client) -> Api:
    return Api(client)


@pytest.fixture
def live_worker(db):
    """A worker that heart-beat just now: the API accepts jobs only while one is live."""
    from lensweb.analyses.services import register_worker

    return register_worker(channel_name="", device="cpu")


def error_of(response) -> dict:
    return response.json_body["error"]
