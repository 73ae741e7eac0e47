"""CORS for the JSON API (/api/v1/) and nothing else: other web apps may call it from their pages.

Rules (LENSWEB_CORS_ALLOWED_ORIGINS, exact origins; none when unset):
- Only /api/v1/ paths. Pages that ride the session cookie (the site, accounts, admin, monitoring) never
  get a CORS header, whatever the Origin.
- An allowed Origin gets `Access-Control-Allow-Origin: <that origin>` (never "*") and the headers API
  clients read (Location, Retry-After) exposed. Never `Access-Control-Allow-Credentials`: the API
  authenticates by bearer key only (lensweb.api.auth ignores any session), and without that header a
  browser shows no credentialed response to the calling page, so a cross-origin page can never use a
  user's cookies.
- Preflights (OPTIONS + Origin + Access-Control-Request-Method) are answered here, before CSRF, login and
  key checks (a browser sends them without credentials): 204 for an allowed origin, 403 without any CORS
  header otherwise.
- Every API response varies on Origin, so that no shared cache hands one origin's answer to another.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.utils.cache import patch_vary_headers

from .errors import ApiError

API_PREFIX = "/api/v1/"
ALLOW_METHODS = "GET, POST, DELETE"
ALLOW_HEADERS = "Authorization, Content-Type"
EXPOSE_HEADERS = "Location, Retry-After, WWW-Authenticate"
# Seconds a browser may reuse a preflight's answer (Chromium caps it at 7200, Firefox at 86400).
MAX_AGE = 3600
DEFAULT_PORTS = {"http": 80, "https": 443}


def check_origin(entry: str) -> str:
    """The entry as browsers write an Origin (lower case, default port left out), or ImproperlyConfigured."""

    def refuse(why: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(
            f"LENSWEB_CORS_ALLOWED_ORIGINS: {entry!r} {why}; list exact origins, scheme://host[:port], "
            "comma-separated, e.g. https://app.example.org,http://localhost:3000"
        )

    if "*" in entry:
        raise refuse("is a wildcard, which is not allowed: name each origin")
    if entry.strip().lower() == "null":  # sandboxed frames and file:// pages: anyone can be "null"
        raise refuse("is the opaque origin, which any sandboxed page can claim")
    try:
        parts = urlsplit(entry)
        port = parts.port
    except ValueError:
        raise refuse("is not a URL") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise refuse("needs the scheme http:// or https://")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise refuse("needs a host name (and nothing before it)")
    if parts.path or parts.query or parts.fragment or entry.endswith(("?", "#")):
        raise refuse("has a path, query or fragment (an origin has none, not even a trailing '/')")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal: urlsplit drops the brackets
        host = f"[{host}]"
    if port is not None and port != DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}:{port}"
    return f"{parts.scheme}://{host}"


@functools.lru_cache(maxsize=8)
def check_allowed_origins(entries: tuple[str, ...]) -> frozenset[str]:
    """The allow-list, each entry checked (check_origin); blank entries (e.g. a trailing comma) are skipped."""
    return frozenset(check_origin(entry.strip()) for entry in entries if entry.strip())


def allowed_origins() -> frozenset[str]:
    return check_allowed_origins(tuple(getattr(settings, "LENSWEB_CORS_ALLOWED_ORIGINS", ())))


def is_preflight(request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def preflight_response(request, allowed: frozenset[str]) -> HttpResponse:
    origin = request.headers["Origin"]
    if origin not in allowed:
        response = ApiError(
            403, "origin_not_allowed", "this origin may not call the API from a browser"
        ).response()
    else:
        response = HttpResponse(status=204)
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Allow-Methods"] = ALLOW_METHODS
        response["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response["Access-Control-Max-Age"] = str(MAX_AGE)
    patch_vary_headers(response, ("Origin",))
    return response


def add_cors_headers(request, response, allowed: frozenset[str]):
    patch_vary_headers(response, ("Origin",))
    origin = request.headers.get("Origin")
    if origin in allowed:
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return response


class ApiCorsMiddleware:
    """Sync and async capable (no database, no I/O): under daphne it runs without a thread hop.
    The allow-list is checked when the middleware is built, i.e. when the server starts."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        allowed_origins()  # refuse to start on a malformed entry
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        if not request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        allowed = allowed_origins()
        if is_preflight(request):
            return preflight_response(request, allowed)
        response = self.get_response(request)
        return add_cors_headers(request, response, allowed) if allowed else response

    async def __acall__(self, request):
        if not request.path_info.startswith(API_PREFIX):
            return await self.get_response(request)
        allowed = allowed_origins()
        if is_preflight(request):
            return preflight_response(request, allowed)
        response = await self.get_response(request)
        return add_cors_headers(request, response, allowed) if allowed else response
