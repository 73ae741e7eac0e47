"""Rate limits over django-ratelimit: count a request, and say how long until the window resets.

Rates are read from settings at request time (so a test or an operator override takes effect at once).
Browser views answer 429 with a page; the API answers 429 in JSON (lensweb.api.errors). Both send
Retry-After. Per-IP limits key on client_ip() (RATELIMIT_IP_META_KEY points at it), which takes the
address from the proxy's header when LENSWEB_CLIENT_IP_HEADER names one.
"""

from __future__ import annotations

import functools
import ipaddress
import unicodedata

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.shortcuts import render
from django_ratelimit import ALL
from django_ratelimit.core import get_usage

# Requests whose address cannot be told (an empty REMOTE_ADDR on a Unix socket) share one bucket.
UNKNOWN_CLIENT = "0.0.0.0"
# Longer usernames than any account can have are cut: the counter's key stays bounded.
MAX_USERNAME_KEY = 150


def _parse_address(text: str) -> str | None:
    """An IP address out of a proxy header entry (`1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]:443`)."""
    text = text.strip()
    candidates = [text]
    if text.startswith("["):
        candidates.append(text[1:].partition("]")[0])
    elif text.count(":") == 1:
        candidates.append(text.partition(":")[0])
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


def client_ip(request) -> str:
    """The client's address. Direct: REMOTE_ADDR. Behind a proxy (LENSWEB_CLIENT_IP_HEADER set): the
    entry LENSWEB_TRUSTED_PROXY_HOPS from the right of that header. Proxies append what they saw, so
    entries to the left of that are whatever the client sent, and a client cannot pick its own bucket."""
    remote = request.META.get("REMOTE_ADDR") or UNKNOWN_CLIENT
    header = settings.LENSWEB_CLIENT_IP_HEADER
    if not header:
        return remote
    hops = [hop for hop in request.META.get(header, "").split(",") if hop.strip()]
    if not hops:  # not through the proxy (a probe on the container itself): the peer is the client
        return remote
    trusted = max(1, settings.LENSWEB_TRUSTED_PROXY_HOPS)
    return _parse_address(hops[max(0, len(hops) - trusted)]) or remote


def login_username(request) -> str:
    """The POSTed username as one account's counter key: NFKC, trimmed, case-folded (`Alice ` and
    `alice` are one counter, so variants of a name do not buy more guesses)."""
    raw = request.POST.get("username", "")[: MAX_USERNAME_KEY * 4]
    return unicodedata.normalize("NFKC", raw).strip().casefold()[:MAX_USERNAME_KEY]


def retry_after(request, group: str, key, rate: str | None, method=ALL, increment: bool = True) -> int | None:
    """Count this request against (group, key); the seconds to wait if it is over `rate`, else None."""
    return count_request(request, group, key, rate, method, increment)[0]


def count_request(
    request, group: str, key, rate: str | None, method=ALL, increment: bool = True
) -> tuple[int | None, int | None, int | None]:
    """(seconds to wait or None, requests left in the window, the window's limit); the last two are None
    without a rate. The API sends the last two as X-RateLimit-Remaining / X-RateLimit-Limit."""
    if not rate:
        return None, None, None
    usage = get_usage(request, group=group, key=key, rate=rate, method=method, increment=increment)
    if usage is None:
        return None, None, None
    remaining = max(0, usage["limit"] - usage["count"])
    if not usage["should_limit"]:
        return None, remaining, usage["limit"]
    # time_left is -1 when the cache failed (ratelimit fails closed): ask for a short wait.
    return max(1, int(usage["time_left"])), remaining, usage["limit"]


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


def login_throttled(view):
    """A login view (ours and the admin's share the counters: two doors, one password check) limited on
    POST to LENSWEB_LOGIN_RATE per client IP and LENSWEB_LOGIN_USERNAME_RATE per username, so one
    account is not guessed at from many addresses either. Showing the form is not limited."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method == "POST":
            seconds = retry_after(request, "accounts.login", "ip", settings.LENSWEB_LOGIN_RATE, "POST")
            if seconds is not None:
                return too_many_requests_page(request, seconds, "login attempts")
            username = login_username(request)
            if username:
                seconds = retry_after(
                    request,
                    "accounts.login.username",
                    lambda group, _request: username,
                    settings.LENSWEB_LOGIN_USERNAME_RATE,
                    "POST",
                )
                if seconds is not None:
                    return too_many_requests_page(request, seconds, "login attempts for this account")
        return view(request, *args, **kwargs)

    return login_not_required(wrapper)
