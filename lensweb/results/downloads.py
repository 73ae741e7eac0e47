"""One download response for the browser's and the API's exports, so both send the same bytes and headers."""

from __future__ import annotations

from django.http import HttpResponse


def as_download(content: bytes, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
