"""`@api_view`: Bearer-key authentication (no session, no CSRF), per-user rate limit, allowed methods,
JSON errors. Every API view starts here, so no route can forget one of them."""

from __future__ import annotations

import functools
import logging

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.vary import vary_on_headers

from lensweb.accounts.keys import authenticate_key
from lensweb.accounts.ratelimits import retry_after

from .errors import ApiError, rate_limited

log = logging.getLogger(__name__)

BEARER = "bearer "


def _bearer(request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[: len(BEARER)].lower() != BEARER:
        return None
    return header[len(BEARER) :].strip() or None


def authenticate(request):
    """The ApiKey of the request, or ApiError 401 (429 for a client IP that keeps failing)."""
    failures = settings.LENSWEB_API_AUTH_FAILURE_RATE
    # A client that keeps sending bad keys is turned away before any lookup.
    seconds = retry_after(request, "api.auth_failures", "ip", failures, increment=False)
    if seconds is not None:
        raise rate_limited(seconds, f"too many failed authentications; try again in {seconds} s")
    raw = _bearer(request)
    key = authenticate_key(raw) if raw else None
    if key is None:
        retry_after(request, "api.auth_failures", "ip", failures)
        message = (
            "this API key is not valid (it may have been revoked); create one on your settings page"
            if raw
            else "send your API key as `Authorization: Bearer <key>`; create one on your settings page"
        )
        raise ApiError(
            401, "unauthenticated", message, headers={"WWW-Authenticate": 'Bearer realm="lensweb"'}
        )
    return key


def api_view(methods: tuple[str, ...], *, authenticated: bool = True):
    def decorator(view):
        @csrf_exempt
        @login_not_required
        @vary_on_headers("Authorization")
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            try:
                if authenticated:
                    key = authenticate(request)
                    # The session's user (if any) is ignored: the key alone says who calls.
                    request.user, request.api_key = key.user, key
                    seconds = retry_after(request, "api", "user", settings.LENSWEB_API_RATE)
                    if seconds is not None:
                        raise rate_limited(seconds)
                if request.method not in methods:
                    raise ApiError(
                        405,
                        "method_not_allowed",
                        f"{request.method} is not allowed here; use {' or '.join(methods)}",
                        headers={"Allow": ", ".join(methods)},
                    )
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return exc.response()
            except Exception:
                log.exception(
                    "API %s %r failed", request.method, request.path
                )  # %r: a path cannot forge a line
                return ApiError(
                    500, "internal_error", "something went wrong on our side; it is logged"
                ).response()

        return wrapper

    return decorator
