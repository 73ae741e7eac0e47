"""What no view should have to check itself: an object id too large for any database's integer (PostgreSQL's
bigint overflows at 19 digits, and the query raised a 500), and a NUL character in a URL (PostgreSQL's text
refuses it, again a 500). Ids: the `id` path converter, 1 to 18 digits, else the route does not match (404).
NUL: refused with a 400 before any view runs."""

from __future__ import annotations

from django.http import HttpResponseBadRequest, JsonResponse
from django.urls import register_converter


class IdConverter:
    regex = "[0-9]{1,18}"  # below 2**63: any database's integer

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value) -> str:
        return str(int(value))


register_converter(IdConverter, "id")

NUL_MESSAGE = "the address holds a NUL character (%00), which no page or parameter takes"


class RejectNulMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        query = request.META.get("QUERY_STRING", "")
        if "\x00" in request.path or "%00" in query or "\x00" in query:
            if request.path.startswith("/api/"):  # the API's envelope
                return JsonResponse(
                    {"error": {"code": "invalid_request", "message": NUL_MESSAGE}}, status=400
                )
            return HttpResponseBadRequest(NUL_MESSAGE, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
