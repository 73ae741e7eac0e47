"""Who may see monitoring: staff for the pages; /metrics also a scraper with the token (or, outside
production, loopback)."""

from __future__ import annotations

import functools
import hmac
import ipaddress

from django.conf import settings
from django.core.exceptions import PermissionDenied

BEARER = "bearer "
PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def staff_required(view):
    """Anonymous users never get here (LoginRequiredMiddleware sends them to log in); others get 403."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if not (request.user.is_authenticated and request.user.is_active and request.user.is_staff):
            raise PermissionDenied("monitoring is for staff")
        return view(request, *args, **kwargs)

    return wrapper


def _bearer(request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[: len(BEARER)].lower() != BEARER:
        return None
    return header[len(BEARER) :].strip() or None


def is_loopback(request) -> bool:
    """A request from this host that no proxy forwarded (a proxy on this host would look local)."""
    if any(request.META.get(header) for header in PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def metrics_allowed(request) -> bool:
    """A staff session; or the bearer token when LENSWEB_METRICS_TOKEN is set (compared in constant
    time); or, with no token set and LENSWEB_METRICS_ALLOW_LOOPBACK (not in production), a loopback
    request that came through no proxy."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active and user.is_staff:
        return True
    token = settings.LENSWEB_METRICS_TOKEN
    if token:
        given = _bearer(request) or ""
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode("utf-8"))
    return settings.LENSWEB_METRICS_ALLOW_LOOPBACK and is_loopback(request)
