"""The django-ninja API object: Bearer keys, the JSON parser with its bounds, our error envelope for every
refusal (ninja's own 422s and 405s included), and the OpenAPI document with a curl example per operation."""

from __future__ import annotations

import json
import logging
import shlex

from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser

from lensweb.analyses.forms import JSONTooDeep, load_json

from .auth import BearerKey, body_limit, payload_too_large
from .errors import ApiError, validation_refusal

log = logging.getLogger(__name__)

NDJSON = ("application/x-ndjson", "application/jsonl", "application/json-lines")

DESCRIPTION = """Queue Consistency Lens and Natural Language Autoencoder analyses and continuations, list and
export them, and stream their rows. Authenticate with an API key from your settings page:
`Authorization: Bearer lw_…` (press **Authorize** to try the calls here). Every error is
`{"error": {"code", "message", "field"?}}`; 429 and 503 carry `Retry-After`. Authenticated answers carry
`X-RateLimit-Limit` / `X-RateLimit-Remaining` (requests per minute) and, under a daily quota,
`X-Quota-Positions-Remaining`.

A Python client lives in the repository at `clients/python` (`pip install ./clients/python`)."""


class BoundedJsonParser(Parser):
    """The body within its byte bound (413) and nesting bound, as JSON; JSON Lines for the batch route."""

    def parse_body(self, request):
        raw = request.body
        limit = body_limit(request)
        if len(raw) > limit:
            raise payload_too_large(limit)
        content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        try:
            if content_type in NDJSON:
                return {"items": [load_json(line) for line in raw.splitlines() if line.strip()]}
            return load_json(raw)
        except JSONTooDeep as exc:
            raise ApiError(400, "invalid_body", f"the body is refused: {exc}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


class LensApi(NinjaAPI):
    def get_openapi_schema(self, *args, **kwargs):
        schema = super().get_openapi_schema(*args, **kwargs)
        add_response_headers(schema)
        add_curl_examples(schema)
        return schema


api = LensApi(
    title="lensweb API",
    version="1.0.0",
    description=DESCRIPTION,
    urls_namespace="api",
    auth=BearerKey(),
    parser=BoundedJsonParser(),
    docs_url=None,  # our own page (views.docs): vendored files under a page-specific CSP
    openapi_url="/openapi.json",
    openapi_extra={"servers": [{"url": "/"}]},
)


# --- errors: one envelope ---------------------------------------------------------------------------------


@api.exception_handler(ApiError)
def _api_error(request, exc: ApiError):
    return exc.response()


@api.exception_handler(ValidationError)
def _validation_error(request, exc: ValidationError):
    return validation_refusal(exc.errors).response()


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    if isinstance(exc.__cause__, ApiError):  # raised by our parser, wrapped by ninja
        return exc.__cause__.response()
    return ApiError(exc.status_code, "invalid_request", str(exc)).response()


@api.exception_handler(AuthenticationError)
def _unauthenticated(request, exc):
    return ApiError(401, "unauthenticated", "send your API key as `Authorization: Bearer <key>`").response()


@api.exception_handler(Http404)
def _not_found(request, exc):
    return ApiError(404, "not_found", "not found").response()


@api.exception_handler(Exception)
def _internal_error(request, exc):
    log.exception("API %s %r failed", request.method, request.path)  # %r: a path cannot forge a line
    return ApiError(500, "internal_error", "something went wrong on our side; it is logged").response()


# --- the document -----------------------------------------------------------------------------------------

# A body for each operation's curl example (by operationId).
EXAMPLE_BODIES = {
    "submitAnalysis": {"text": "The cat sat on the mat.", "options": {"best_of_k": 4}},
    "submitAnalyses": {"items": [{"text": "The cat sat on the mat."}, {"text": "Paris is in France."}]},
    "submitGeneration": {"text": "Once upon a time", "options": {"n": 2, "max_new_tokens": 32}},
}


RETRY_AFTER = {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}
LOCATION = {"description": "the job's URL", "schema": {"type": "string", "format": "uri"}}
HEADERS_BY_STATUS = {
    "401": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    "405": {"Allow": {"description": "the methods this route answers", "schema": {"type": "string"}}},
    "429": {"Retry-After": RETRY_AFTER},
    "503": {"Retry-After": RETRY_AFTER},
}
# Operations whose success names the new job in Location.
LOCATION_OPERATIONS = {"submitAnalysis", "submitGeneration"}


def add_response_headers(schema: dict) -> None:
    """The headers our refusals always carry (ninja documents bodies only), and submits' Location."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            # ninja keys statuses by int; JSON (and the OpenAPI schema) by string
            operation["responses"] = {str(k): v for k, v in operation.get("responses", {}).items()}
            for status, response in operation["responses"].items():
                headers = dict(HEADERS_BY_STATUS.get(status, {}))
                if operation.get("operationId") in LOCATION_OPERATIONS and status in ("200", "202"):
                    headers["Location"] = LOCATION
                if headers:
                    response.setdefault("headers", {}).update(headers)
                response.setdefault("description", "")


def curl_example(method: str, path: str, operation: dict) -> str:
    url = "$LENSWEB" + path.replace("{", "<").replace("}", ">")
    parts = ["curl"]
    if method != "get":
        parts += ["-X", method.upper()]
    if operation.get("security") != []:
        parts += ["-H", '"Authorization: Bearer $LENSWEB_KEY"']
    body = EXAMPLE_BODIES.get(operation.get("operationId", ""))
    if body is not None:
        parts += ["-H", "'Content-Type: application/json'", "-d", shlex.quote(json.dumps(body))]
    if path.endswith("/events"):
        parts.insert(1, "-N")  # no buffering: events print as they come
    parts.append(f'"{url}"')
    return " ".join(parts)


def add_curl_examples(schema: dict) -> None:
    """Each operation's description ends with a curl call (LENSWEB = the server, LENSWEB_KEY = your key);
    `x-codeSamples` carries the same for tools that show samples apart."""
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            sample = curl_example(method, path, operation)
            text = operation.get("description", "").strip()
            operation["description"] = f"{text}\n\n```sh\n{sample}\n```".strip()
            operation["x-codeSamples"] = [{"lang": "Shell", "label": "curl", "source": sample}]


from . import events, views  # noqa: E402  (the operations register on import)

api.add_router("", views.router)
api.add_router("", events.router)
