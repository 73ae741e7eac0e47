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

    def response(self) -> JsonResponse:
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        response = JsonResponse({"error": body}, status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def bad_request(message: str, field: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, code, message, field=field)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"there is no {what} of yours with this id")


def rate_limited(seconds: int, message: str | None = None, code: str = "rate_limited") -> ApiError:
    return ApiError(429, code, message or f"too many requests; try again in {seconds} s", retry_after=seconds)
