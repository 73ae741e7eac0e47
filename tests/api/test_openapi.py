"""The OpenAPI document, derived by django-ninja from the code's schemas: valid 3.1 with valid schemas, every
route under /api/v1/ in it with the methods it answers, our error envelope and headers, a curl example per
operation. (Every response in tests/api is also checked against it, by the `api` fixture.)"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from .conftest import DOC, META_ROUTES

pytestmark = pytest.mark.django_db


def api_routes() -> dict[str, object]:
    """{'/api/v1/analyses/{analysis_id}': view} for every route under /api/v1/ (the JSON 404 aside)."""
    found = {}

    def walk(patterns, prefix):
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif (
                isinstance(pattern, URLPattern)
                and route.startswith("api/v1/")
                and pattern.name not in ("unknown", *META_ROUTES)
            ):
                found["/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)] = pattern.callback

    walk(get_resolver().url_patterns, "")
    return found


def test_every_api_route_is_documented_and_nothing_else():
    routes = api_routes()
    assert routes, "no /api/v1/ routes found"
    assert set(routes) == set(DOC["paths"])


@pytest.mark.parametrize("path", sorted(DOC["paths"]))
def test_documented_methods_are_the_allowed_ones(api, alice_key, path):
    """A method the document lacks answers 405; one it lists does not."""
    url = re.sub(r"\{\w+\}", "999999", path)
    documented = {m.upper() for m in DOC["paths"][path] if m in ("get", "post", "delete", "put", "patch")}
    for method in ("GET", "POST", "DELETE", "PUT", "PATCH"):
        response = api.client.generic(method, url, headers={"Authorization": f"Bearer {alice_key}"})
        if method in documented:
            assert response.status_code != 405, (method, path)
        else:
            assert response.status_code == 405, (method, path, response.status_code)
            error = json.loads(response.content)["error"]
            assert error["code"] == "method_not_allowed" and response["Allow"], (method, path)


def test_the_document_is_openapi_3_1_with_valid_schemas():
    assert DOC["openapi"].startswith("3.1")
    for name, schema in DOC["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema), name
    refs = re.findall(r"#/components/(\w+)/(\w+)", str(DOC))
    for section, name in refs:
        assert name in DOC["components"][section], f"dangling $ref {section}/{name}"
    operation_ids = [
        op["operationId"] for item in DOC["paths"].values() for k, op in item.items() if k != "parameters"
    ]
    assert len(operation_ids) == len(set(operation_ids))


def test_the_document_validates_against_the_openapi_3_1_meta_schema_if_available():
    """The official meta-schema is not vendored; openapi-spec-validator, when installed, checks it fully."""
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(DOC)


def test_the_served_document_is_this_one(api):
    response = api.get("/api/v1/openapi.json")
    assert response.json_body == json.loads(json.dumps(DOC))


def test_every_operation_documents_its_refusals_in_our_envelope_with_their_headers():
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            for status in ("401", "429", "500"):
                assert responses[status]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }, (method, path, status)
            assert "WWW-Authenticate" in responses["401"]["headers"]
            assert "Retry-After" in responses["429"]["headers"]
            if "503" in responses:
                assert "Retry-After" in responses["503"]["headers"]
            assert operation["security"] == [{"BearerKey": []}]
            assert operation["x-codeSamples"][0]["source"].startswith("curl")
            assert "```sh\ncurl" in operation["description"]


def test_the_bounds_in_the_document_are_the_engines():
    from inference.limits import DEFAULT_LIMITS as L

    schemas = DOC["components"]["schemas"]
    options = schemas["AnalysisOptions"]["properties"]
    assert options["best_of_k"]["maximum"] == L.max_best_of_k
    assert options["temperature"]["minimum"] == L.min_temperature
    assert schemas["GenerationOptions"]["properties"]["max_new_tokens"]["maximum"] == L.max_new_tokens
    text = schemas["AnalysisRequest"]["properties"]["text"]
    assert {"type": "string", "maxLength": L.max_text_chars, "minLength": 1} in text["anyOf"]


def test_the_request_schemas_accept_what_the_api_accepts_and_refuse_what_it_refuses():
    def check(name, body):
        schema = {"$ref": f"#/components/schemas/{name}", "components": DOC["components"]}
        return jsonschema.Draft202012Validator(schema).is_valid(body)

    assert check("AnalysisRequest", {"text": "hi", "lens": "tiny", "options": {"best_of_k": 2, "kl": True}})
    assert check("AnalysisRequest", {"messages": [{"role": "user", "content": "hi"}]})
    assert not check("AnalysisRequest", {"text": "hi", "messages": [{"role": "user", "content": "hi"}]})
    assert not check("AnalysisRequest", {})
    assert not check("AnalysisRequest", {"text": "hi", "colour": 1})
    assert not check("AnalysisRequest", {"text": "hi", "options": {"best_of_k": 0}})
    assert check("GenerationRequest", {"text": "hi", "options": {"n": 2, "chat_reply": True}})
    assert not check("GenerationRequest", {"text": "hi", "options": {"best_of_k": 2}})


def test_the_json_export_is_documented_as_the_object_it_is_and_raw_may_be_refused(api):
    from .conftest import DOC

    operations = {
        op["operationId"]: op for path in DOC["paths"].values() for op in path.values() if "operationId" in op
    }
    json_export = operations["exportAnalysisJson"]["responses"]["200"]["content"]["application/json"]
    assert json_export["schema"]["type"] == "object"
    for csv in ("exportAnalysisCsv", "exportGenerationCsv"):
        assert "400" in operations[csv]["responses"], csv
