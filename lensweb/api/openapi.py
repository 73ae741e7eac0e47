"""The OpenAPI 3.1 description of /api/v1/, as data. tests/api/test_openapi.py checks the routes and real
responses against it, so it cannot drift from the code unnoticed."""

from __future__ import annotations

import copy

from inference.limits import DEFAULT_LIMITS as L

JSON = "application/json"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


STATUSES = ["queued", "running", "done", "failed", "cancelled"]
TIME = _nullable({"type": "string", "format": "date-time"})

SCHEMAS: dict = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {
                    "code": {
                        "type": "string",
                        "enum": [
                            "invalid_json",
                            "invalid_body",
                            "invalid_input",
                            "invalid_option",
                            "unknown_lens",
                            "invalid_request",
                            "unauthenticated",
                            "forbidden",
                            "not_found",
                            "method_not_allowed",
                            "payload_too_large",
                            "rate_limited",
                            "quota_exceeded",
                            "queue_full",
                            "no_worker",
                            "lens_unavailable",
                            "lenses_unavailable",
                            "internal_error",
                        ],
                    },
                    "message": {"type": "string", "description": "what was wrong and what to do"},
                    "field": {
                        "type": "string",
                        "description": "the request field at fault, e.g. `text` or `options.best_of_k`",
                    },
                },
            }
        },
    },
    "Message": {
        "type": "object",
        "required": ["role", "content"],
        "additionalProperties": False,
        "properties": {
            "role": {"type": "string", "enum": ["system", "user", "assistant"]},
            "content": {"type": "string"},
        },
    },
    "Input": {
        "description": "Exactly one of `text` and `messages`.",
        "oneOf": [
            {
                "type": "object",
                "required": ["text"],
                "properties": {"text": {"type": "string", "minLength": 1, "maxLength": L.max_text_chars}},
            },
            {
                "type": "object",
                "required": ["messages"],
                "properties": {
                    "messages": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": L.max_messages,
                        "items": _ref("Message"),
                    }
                },
            },
        ],
    },
    "AnalysisOptions": {
        "type": "object",
        "additionalProperties": False,
        "description": "Bounds shown are the defaults; an operator may lower the text and token bounds.",
        "properties": {
            "best_of_k": {"type": "integer", "minimum": 1, "maximum": L.max_best_of_k, "default": 1},
            "temperature": {
                "type": "number",
                "minimum": L.min_temperature,
                "maximum": L.max_temperature,
                "default": 1.0,
            },
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "default": 42},
            "salience": {"type": "boolean", "default": True},
            "kl": {"type": "boolean", "default": False},
            "logit_lens": {"type": "boolean", "default": False},
            "keep_candidates": {"type": "boolean", "default": False},
            "last_n_messages": {
                **_nullable({"type": "integer", "minimum": 1, "maximum": L.max_last_n_messages}),
                "description": "chats only: analyse from the start of the N-th last message",
            },
        },
    },
    "AnalysisRequest": {
        "allOf": [_ref("Input")],
        "type": "object",
        "properties": {
            "text": True,
            "messages": True,
            "lens": {
                "type": "string",
                "description": "a lens id from GET /lenses; default: the default lens",
            },
            "options": _ref("AnalysisOptions"),
            "default_system_prompt": {
                "type": "boolean",
                "default": True,
                "description": "chats only: false drops the template's default system prompt (where the template "
                "lets an empty system turn replace it; see GET /lenses)",
            },
        },
        "additionalProperties": False,
    },
    "AnalysisSubmitted": {
        "type": "object",
        "required": ["id", "status", "queue_position", "cached", "url"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "status": {"type": "string", "enum": STATUSES},
            "queue_position": _nullable({"type": "integer", "minimum": 1}),
            "cached": {
                "type": "boolean",
                "description": "true (with status done and 200) when served from a cache",
            },
            "url": {"type": "string", "format": "uri"},
        },
    },
    "Candidate": {
        "type": "object",
        "properties": {
            "explanation": {"type": "string"},
            "explanation_token_ids": {"type": "array", "items": {"type": "integer"}},
            "mse": {"type": "number"},
            "mse_nrm": {"type": "number", "description": "NLA only"},
            "cosine_similarity": {"type": "number", "description": "NLA only"},
            "fve_nrm": _nullable({"type": "number", "description": "NLA only"}),
            "chosen": {"type": "boolean"},
        },
    },
    "AnalysisRow": {
        "type": "object",
        "description": (
            "One analysed position, as the engine computes it. A Natural Language Autoencoder's rows "
            "(its lens' kind is `nla`) add `mse_nrm`, `cosine_similarity` and `fve_nrm`; their `mse` is "
            "the raw mse of reconstruction and activation, and `explanation_tokens` are the explanation's "
            "words (the units of `token_salience`)."
        ),
        "required": ["position", "token", "explanation", "mse"],
        "properties": {
            "position": {"type": "integer", "minimum": 0},
            "token": {"type": "string"},
            "token_id": {"type": "integer"},
            "explanation": {"type": "string"},
            "explanation_tokens": {"type": "array", "items": {"type": "string"}},
            "explanation_token_ids": {"type": "array", "items": {"type": "integer"}},
            "token_salience": _nullable({"type": "array", "items": {"type": "number"}}),
            "mse": {"type": "number"},
            "relative_rmse": _nullable({"type": "number"}),
            "kl": _nullable({"type": "number"}),
            "logit_lens_top": _nullable({"type": "array", "items": {"type": "string"}}),
            "candidates": _nullable({"type": "array", "items": _ref("Candidate")}),
            "mse_nrm": {
                "type": "number",
                "description": "NLA: mse of reconstruction and activation, both rescaled to norm sqrt(d) "
                "(= 2(1 - cos)); the best of k is the lowest",
            },
            "cosine_similarity": {
                "type": "number",
                "description": "NLA: cosine of reconstruction and activation",
            },
            "fve_nrm": _nullable(
                {
                    "type": "number",
                    "description": "NLA: 1 - mse_nrm / V, the fraction of variance explained; null when the "
                    "lens has no variance constant V",
                }
            ),
            "av_text": {"type": "string", "description": "NLA: the verbaliser's raw output"},
            "av_stop": {
                "type": "string",
                "enum": ["eos", "stop_string", "max_new_tokens"],
                "description": "NLA: why the verbaliser stopped",
            },
            "explanation_parsed": {
                "type": "boolean",
                "description": "NLA: whether the output held <explanation>…</explanation> (else the whole "
                "output is the explanation)",
            },
        },
    },
    "Progress": {
        "type": "object",
        "required": ["done", "total"],
        "additionalProperties": False,
        "properties": {"done": {"type": "integer", "minimum": 0}, "total": {"type": "integer", "minimum": 0}},
    },
    "Analysis": {
        "type": "object",
        "required": ["id", "status", "lens", "queue_position", "progress", "metadata", "error", "url"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "status": {"type": "string", "enum": STATUSES},
            "lens": {"type": "string"},
            "queue_position": _nullable({"type": "integer", "minimum": 1}),
            "progress": _ref("Progress"),
            "cancel_requested": {"type": "boolean"},
            "input": {"type": "object"},
            "options": {"type": "object"},
            "rows": {
                "type": "array",
                "items": _ref("AnalysisRow"),
                "description": "ordered by position; absent in the answer to DELETE",
            },
            "metadata": {"type": "object", "description": "the lens' metadata, once a worker has loaded it"},
            "error": _nullable({"type": "string"}),
            "created_at": TIME,
            "started_at": TIME,
            "finished_at": TIME,
            "url": {"type": "string", "format": "uri"},
        },
    },
    "Lens": {
        "type": "object",
        "required": ["id", "name", "description", "default", "untrained", "kind"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "default": {"type": "boolean"},
            "untrained": {"type": "boolean", "description": "an untrained, Patchscope-style lens (the demo)"},
            "kind": {
                "type": "string",
                "enum": ["lens", "nla"],
                "description": (
                    "`lens`: a Consistency Lens (rows carry mse, relative_rmse, kl); `nla`: a Natural Language "
                    "Autoencoder, a verbaliser and a reconstructor (rows add mse_nrm, cosine_similarity, "
                    "fve_nrm)"
                ),
            },
        },
    },
    "LensList": {
        "type": "object",
        "required": ["lenses"],
        "additionalProperties": False,
        "properties": {"lenses": {"type": "array", "items": _ref("Lens")}},
    },
    "GenerationOptions": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "n": {"type": "integer", "minimum": 1, "maximum": L.max_samples, "default": 1},
            "max_new_tokens": {"type": "integer", "minimum": 1, "maximum": L.max_new_tokens, "default": 64},
            "temperature": {
                "type": "number",
                "minimum": 0,
                "maximum": L.max_temperature,
                "default": 1.0,
                "description": "0: greedy",
            },
            "top_p": {"type": "number", "minimum": 0.01, "maximum": 1.0, "default": 1.0},
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "default": 42},
            "chat_reply": {
                "type": "boolean",
                "default": False,
                "description": "one assistant reply that stops at end-of-turn",
            },
        },
    },
    "GenerationRequest": {
        "allOf": [_ref("Input")],
        "type": "object",
        "properties": {
            "text": True,
            "messages": True,
            "lens": {"type": "string"},
            "options": _ref("GenerationOptions"),
            "default_system_prompt": {
                "type": "boolean",
                "default": True,
                "description": "chats only: false drops the template's default system prompt (where the template "
                "lets an empty system turn replace it; see GET /lenses)",
            },
            "then_analyse": {
                "type": "boolean",
                "default": False,
                "description": "when the generation is done, queue the analysis of the conversation with the "
                "reply (or the text continued); n must be 1. The generation then names it (analysis_id)",
            },
            "analysis_options": {
                **_ref("AnalysisOptions"),
                "description": "with then_analyse: the analysis' options (default: the defaults)",
            },
        },
        "additionalProperties": False,
    },
    "Sample": {
        "type": "object",
        "required": ["text", "token_ids", "finished"],
        "properties": {
            "text": {"type": "string"},
            "token_ids": {"type": "array", "items": {"type": "integer"}},
            "finished": {"type": "boolean", "description": "stopped at end-of-turn"},
        },
    },
    "GenerationResult": {
        "type": "object",
        "required": ["samples"],
        "description": "while running: the samples so far and partial=true; when it ends: the whole result",
        "properties": {
            "partial": {"type": "boolean", "description": "true while the generation runs"},
            "prompt": {"type": "string"},
            "prompt_token_ids": {"type": "array", "items": {"type": "integer"}},
            "samples": {"type": "array", "items": _ref("Sample")},
            "cancelled": {"type": "boolean"},
            "options": {"type": "object"},
        },
    },
    "Generation": {
        "type": "object",
        "required": ["id", "status", "lens", "queue_position", "result", "error", "url"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "status": {"type": "string", "enum": STATUSES},
            "lens": {"type": "string"},
            "queue_position": _nullable({"type": "integer", "minimum": 1}),
            "progress": {
                "type": "object",
                "description": "decode steps (tokens) so far, of at most max_new_tokens",
                "properties": {"done": {"type": "integer"}, "total": {"type": "integer"}},
            },
            "cancel_requested": {"type": "boolean"},
            "input": {"type": "object"},
            "options": {"type": "object"},
            "result": _nullable(_ref("GenerationResult")),
            "error": _nullable({"type": "string"}),
            "then_analyse": {"type": "boolean"},
            "analysis_options": _nullable({"type": "object"}),
            "analysis_id": {
                **_nullable({"type": "integer"}),
                "description": "with then_analyse: the analysis that follows, once the generation is done",
            },
            "analysis_url": _nullable({"type": "string", "format": "uri"}),
            "analysis_error": {
                **_nullable({"type": "string"}),
                "description": "with then_analyse: why the analysis could not be queued (a daily cap, say)",
            },
            "timings": {"type": "object"},
            "created_at": TIME,
            "started_at": TIME,
            "finished_at": TIME,
            "url": {"type": "string", "format": "uri"},
        },
    },
}

RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}}


def _error(description: str, headers: dict | None = None) -> dict:
    response = {"description": description, "content": {JSON: {"schema": _ref("Error")}}}
    if headers:
        response["headers"] = headers
    return response


RESPONSES = {
    "BadRequest": _error(
        "malformed JSON, an unknown field, or a field out of its bounds (`field` says which)"
    ),
    "Unauthenticated": _error(
        "no key, or a key that is malformed, unknown or revoked",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "Forbidden": _error("staff may read another user's job, but only its owner may cancel it"),
    "NotFound": _error("no such job among yours (another user's job is not found either)"),
    "MethodNotAllowed": _error(
        "the method is not allowed on this route", {"Allow": {"schema": {"type": "string"}}}
    ),
    "PayloadTooLarge": _error("the body is over the byte limit (checked before parsing)"),
    "TooManyRequests": _error(
        "rate limit (`rate_limited`), daily quota (`quota_exceeded`) or full queue (`queue_full`)",
        RETRY_AFTER,
    ),
    "Unavailable": _error(
        "no live worker can take the job now (`no_worker`), or the lens' files cannot be read (`lens_unavailable`)",
        RETRY_AFTER,
    ),
    "InternalError": _error("an unexpected error; it is logged"),
}

_COMMON = {
    "401": {"$ref": "#/components/responses/Unauthenticated"},
    "405": {"$ref": "#/components/responses/MethodNotAllowed"},
    "429": {"$ref": "#/components/responses/TooManyRequests"},
    "500": {"$ref": "#/components/responses/InternalError"},
}


def _responses(extra: dict) -> dict:
    return {**extra, **_COMMON}


def _ok(description: str, schema: str, headers: dict | None = None) -> dict:
    response = {"description": description, "content": {JSON: {"schema": _ref(schema)}}}
    if headers:
        response["headers"] = headers
    return response


def _r(name: str) -> dict:
    return {"$ref": f"#/components/responses/{name}"}


LOCATION = {"Location": {"description": "the job's URL", "schema": {"type": "string", "format": "uri"}}}


def _id_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}


PATHS = {
    "/api/v1/analyses": {
        "post": {
            "operationId": "submitAnalysis",
            "summary": "Queue an analysis of a text or a chat",
            "description": "The same validation, bounds, per-user caps and fair queue as the browser form.",
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("AnalysisRequest")}}},
            "responses": _responses(
                {
                    "200": _ok("served from the cache: already done", "AnalysisSubmitted", LOCATION),
                    "202": _ok("queued", "AnalysisSubmitted", LOCATION),
                    "400": _r("BadRequest"),
                    "413": _r("PayloadTooLarge"),
                    "503": _r("Unavailable"),
                }
            ),
        }
    },
    "/api/v1/analyses/{analysis_id}": {
        "parameters": [_id_param("analysis_id")],
        "get": {
            "operationId": "getAnalysis",
            "summary": "An analysis: status, queue position, progress, the rows so far, metadata",
            "parameters": [
                {
                    "name": "after",
                    "in": "query",
                    "required": False,
                    "description": "only rows with a position greater than this (for polling)",
                    "schema": {"type": "integer"},
                }
            ],
            "responses": _responses(
                {"200": _ok("the analysis", "Analysis"), "400": _r("BadRequest"), "404": _r("NotFound")}
            ),
        },
        "delete": {
            "operationId": "cancelAnalysis",
            "summary": "Cancel: a queued analysis never starts; a running one stops within a batch",
            "responses": _responses(
                {
                    "200": _ok("the analysis, without rows", "Analysis"),
                    "403": _r("Forbidden"),
                    "404": _r("NotFound"),
                }
            ),
        },
    },
    "/api/v1/lenses": {
        "get": {
            "operationId": "listLenses",
            "summary": "The lenses this server serves",
            "responses": _responses(
                {"200": _ok("the lenses", "LensList"), "503": _error("the lens registry cannot be read")}
            ),
        }
    },
    "/api/v1/generations": {
        "post": {
            "operationId": "submitGeneration",
            "summary": "Queue a continuation of a text or a chat (samples from the lens' base model)",
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("GenerationRequest")}}},
            "responses": _responses(
                {
                    "202": _ok("queued", "Generation", LOCATION),
                    "400": _r("BadRequest"),
                    "413": _r("PayloadTooLarge"),
                    "503": _r("Unavailable"),
                }
            ),
        }
    },
    "/api/v1/generations/{generation_id}": {
        "parameters": [_id_param("generation_id")],
        "get": {
            "operationId": "getGeneration",
            "summary": "A generation: status, queue position, result",
            "responses": _responses({"200": _ok("the generation", "Generation"), "404": _r("NotFound")}),
        },
        "delete": {
            "operationId": "cancelGeneration",
            "summary": "Cancel a generation",
            "responses": _responses(
                {"200": _ok("the generation", "Generation"), "403": _r("Forbidden"), "404": _r("NotFound")}
            ),
        },
    },
    "/api/v1/openapi.json": {
        "get": {
            "operationId": "getOpenAPI",
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {
                    "description": "the OpenAPI document",
                    "content": {JSON: {"schema": {"type": "object"}}},
                },
                "405": _r("MethodNotAllowed"),
            },
        }
    },
}

DOCUMENT = {
    "openapi": "3.1.0",
    "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
    "info": {
        "title": "lensweb API",
        "version": "1.0.0",
        "description": (
            "Queue Consistency Lens and Natural Language Autoencoder analyses and continuations, and read "
            "their results. Authenticate with "
            "an API key from your settings page: `Authorization: Bearer lw_…`. Every error is "
            '`{"error": {"code", "message"}}`; 429 and 503 carry `Retry-After`.'
        ),
    },
    "servers": [{"url": "/"}],
    "security": [{"apiKey": []}],
    "paths": PATHS,
    "components": {
        "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "lw_<prefix>_<secret>"}
        },
        "schemas": SCHEMAS,
        "responses": RESPONSES,
    },
}


def document() -> dict:
    return copy.deepcopy(DOCUMENT)
