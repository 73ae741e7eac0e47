"""Rate limits over django-ratelimit: count a request, and say how long until the window resets.

Rates are read from settings at request time (so a test or an operator override takes effect at once).
Browser views answer 429 with a page; the API answers 429 in JSON (lensweb.api.errors). Both send
Retry-After.
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.shortcuts import render
from django_ratelimit import ALL
from django_ratelimit.core import get_usage


def retry_after(request, group: str, key, rate: str | None, method=ALL, increment: bool = True) -> int | None:
    """Count this request against (group, key); the seconds to wait if it is over `rate`, else None."""
    if not rate:
        return None
    usage = get_usage(request, group=group, key=key, rate=rate, method=method, increment=increment)
    if usage is None or not usage["should_limit"]:
        return None
    # time_left is -1 when the cache failed (ratelimit fails closed): ask for a short wait.
    return max(1, int(usage["time_left"]))


def too_many_requests_page(request, seconds: int, what: str = "requests"):
    response = render(request, "accounts/ratelimited.html", {"seconds": seconds, "what": what}, status=429)
    response["Retry-After"] = str(seconds)
    return response


def ratelimit_page(group: str, key: str, rate_setting: str, method=ALL, what: str = "requests"):
    """A browser view limited to settings.<rate_setting> per `key` ("ip", "user", ...)."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            seconds = retry_after(request, group, key, getattr(settings, rate_setting), method)
            if seconds is not None:
                return too_many_requests_page(request, seconds, what)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
