"""The exceptions of the client. An API refusal is an ApiError (its HTTP status picks the subclass); a job
that ends badly while waited on is a JobError."""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .jobs import Job


class Headers(Protocol):
    """Response headers: a dict, or the http.client message urllib gives (names case-insensitive)."""

    def get(self, name: str, /) -> str | None: ...


class LenswebError(Exception):
    """Every exception this package raises on purpose."""


class ApiError(LenswebError):
    """The server refused a request: `{"error": {"code", "message", "field"?}}` with an HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        super().__init__(status, code, message)

    def __str__(self) -> str:
        where = f", field {self.field}" if self.field else ""
        wait = f"; retry after {self.retry_after} s" if self.retry_after is not None else ""
        return f"{self.code} (HTTP {self.status}{where}): {self.message}{wait}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"


class InvalidRequest(ApiError):
    """400 (a bad body, input or option) or 413 (the body is too large)."""


class AuthenticationError(ApiError):
    """401: no key, or a key that is not valid (revoked, mistyped)."""


class PermissionDenied(ApiError):
    """403: e.g. staff may read anyone's job but cancel only their own."""


class NotFound(ApiError):
    """404: no such job of yours, or no such route."""


class RateLimited(ApiError):
    """429: rate_limited, quota_exceeded or queue_full; `retry_after` says when to try again."""


class Unavailable(ApiError):
    """503: no_worker, lens_unavailable or lenses_unavailable; `retry_after` says when to try again."""


class ConnectionFailed(LenswebError, ConnectionError):
    """The server could not be reached, or the connection broke before an answer came."""


class JobError(LenswebError):
    """A waited-on job ended without a result; `job` is its last state."""

    def __init__(self, job: Job, message: str) -> None:
        self.job = job
        super().__init__(message)


class JobFailed(JobError):
    """The job's status is `failed`; its `error` says why."""


class JobCancelled(JobError):
    """The job's status is `cancelled`."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    413: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
}

# A batch item's error carries no HTTP status of its own: the code says which it would have had.
_STATUS_OF_CODE = {
    "invalid_json": 400,
    "invalid_body": 400,
    "invalid_input": 400,
    "invalid_option": 400,
    "unknown_lens": 400,
    "invalid_request": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "rate_limited": 429,
    "quota_exceeded": 429,
    "queue_full": 429,
    "internal_error": 500,
    "no_worker": 503,
    "lens_unavailable": 503,
    "lenses_unavailable": 503,
}


def parse_retry_after(value: str | None, now: float | None = None) -> int | None:
    """Retry-After as whole seconds: the API sends a number; HTTP also allows a date."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, math.ceil(when.timestamp() - (time.time() if now is None else now)))


def make_error(
    status: int | None,
    error: Mapping[str, Any],
    retry_after: int | None = None,
) -> ApiError:
    """The ApiError for an error object `{"code", "message", "field"?}`; without a status (a batch item),
    the status its code stands for."""
    code = str(error.get("code") or "unknown_error")
    if status is None:
        status = _STATUS_OF_CODE.get(code, 400)
    field = error.get("field")
    cls = _BY_STATUS.get(status, ApiError)
    return cls(
        status,
        code,
        str(error.get("message") or ""),
        field=str(field) if field else None,
        retry_after=retry_after,
    )


def error_from_response(status: int, body: bytes, headers: Headers) -> ApiError:
    """The ApiError for an HTTP error answer. A body that is not the API's error object (a proxy's HTML
    page, say) still gives an error of the status' class, its code `http_<status>`."""
    retry_after = parse_retry_after(headers.get("Retry-After"))
    try:
        payload = json.loads(body)
        error = payload["error"]
        if not isinstance(error, dict) or "code" not in error:
            raise TypeError
    except (ValueError, TypeError, KeyError):
        snippet = body[:200].decode("utf-8", "replace").strip()
        error = {"code": f"http_{status}", "message": snippet or f"HTTP {status} without a body"}
    return make_error(status, error, retry_after)
