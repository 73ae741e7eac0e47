"""Every API error is `{"error": {"code", "message"[, "field"]}}` with its HTTP status."""

from __future__ import annotations

from django.http import JsonResponse


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after: int | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(int(retry_after))

    def body(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return {"error": error}

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def bad_request(message: str, field: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, code, message, field=field)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"there is no {what} of yours with this id")


def rate_limited(seconds: int, message: str | None = None, code: str = "rate_limited") -> ApiError:
    return ApiError(429, code, message or f"too many requests; try again in {seconds} s", retry_after=seconds)


# Where a request field's refusal belongs: the engine's codes, by the field's first name.
INPUT_FIELDS = {"text", "messages", "default_system_prompt"}
OPTION_GROUPS = {"options", "analysis_options"}


def validation_refusal(errors: list[dict]) -> ApiError:
    """ninja's validation errors (pydantic's, with a location) as one 400 in our envelope: the first error,
    its field as a dotted path (`options.best_of_k`, `messages`), and the engine's error code for it."""
    error = errors[0]
    source, *path = [str(p) for p in error.get("loc", ())]
    if source == "body" and path:
        path = path[1:]  # the operation's parameter name (`payload`): not part of the request
    kind = error.get("type", "")
    message = error.get("msg", "invalid value")
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind == "string_unicode":  # what the engine would have said: text a database cannot store
        message = "holds a lone surrogate (a half of a UTF-16 pair), which is not text; remove it"
    top = path[0] if path else None
    if source in ("query", "path"):
        return ApiError(400, "invalid_request", f"{'.'.join(path) or source}: {message}", field=top)
    if top is None:
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            return ApiError(400, "invalid_body", "the body must be a JSON object")
        return ApiError(400, "invalid_input", message, field="text")
    if kind == "extra_forbidden" and len(path) == 1:
        return ApiError(400, "invalid_body", f"unknown field: {top}", field=top)
    if top in OPTION_GROUPS:
        field = ".".join(path[:2])
        # the group itself refused (`analysis_options` without then_analyse): the body's shape, not an option
        code = "invalid_body" if len(path) == 1 and kind == "value_error" else "invalid_option"
        return ApiError(400, code, f"{field}: {message}", field=field)
    if top in INPUT_FIELDS:
        return ApiError(400, "invalid_input", f"{'.'.join(path)}: {message}", field=top)
    if top == "lens":
        return ApiError(
            400, "unknown_lens", '"lens" must be a lens id (a string); see GET /api/v1/lenses', field=top
        )
    return ApiError(400, "invalid_body", f"{'.'.join(path)}: {message}", field=top)
