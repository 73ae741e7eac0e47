"""Bearer-key authentication for every API operation (no session, no CSRF), with the per-user rate limit
and the body-size bound, both checked before the body is parsed."""

from __future__ import annotations

from django.conf import settings
from ninja.security import HttpBearer

from lensweb.accounts.keys import authenticate_key, split_key
from lensweb.accounts.ratelimits import count_request, retry_after

from .errors import ApiError, rate_limited

BEARER = "bearer "
# Routes whose body may be larger than one submission's (url name → setting).
BODY_LIMITS = {"analyses_batch": "LENSWEB_API_MAX_BATCH_BODY_BYTES"}


def _bearer(request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[: len(BEARER)].lower() != BEARER:
        return None
    return header[len(BEARER) :].strip() or None


def authenticate(request):
    """The ApiKey of the request, or ApiError 401 (429 once an address, or a key prefix, keeps failing).

    A valid key is never refused for its address' failures: people share NATs and proxies, and a neighbour
    guessing wrong must not lock them out. Failures are counted per address and per key prefix (a guesser
    spread over many addresses still meets the prefix' limit), and only failing requests are turned away."""
    raw = _bearer(request)
    key = authenticate_key(raw) if raw else None
    if key is not None:
        return key
    failures = settings.LENSWEB_API_AUTH_FAILURE_RATE
    prefix = split_key(raw) if raw else None
    counters = [("api.auth_failures", "ip")]
    if prefix is not None:
        counters.append(("api.auth_failures.prefix", lambda group, request: prefix))
    for group, counter in counters:
        seconds = retry_after(request, group, counter, failures, increment=False)
        if seconds is not None:
            raise rate_limited(seconds, f"too many failed authentications; try again in {seconds} s")
    for group, counter in counters:
        retry_after(request, group, counter, failures)
    message = (
        "this API key is not valid (it may have been revoked); create one on your settings page"
        if raw
        else "send your API key as `Authorization: Bearer <key>`; create one on your settings page"
    )
    raise ApiError(401, "unauthenticated", message, headers={"WWW-Authenticate": 'Bearer realm="lensweb"'})


def body_limit(request) -> int:
    match = getattr(request, "resolver_match", None)
    name = BODY_LIMITS.get(match.url_name if match else "", "LENSWEB_API_MAX_BODY_BYTES")
    return getattr(settings, name)


def payload_too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        f"the request body is larger than {limit:,} bytes; send a shorter text or chat (or fewer items)",
    )


def check_declared_size(request) -> None:
    """413 on the declared length, before the body is read (the parser checks what actually came)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApiError(400, "invalid_json", "the Content-Length header is not a number") from None
    limit = body_limit(request)
    if declared > limit:
        raise payload_too_large(limit)


class BearerKey(HttpBearer):
    """ninja's auth hook: the key names the caller (the session's user, if any, is ignored)."""

    def __call__(self, request):
        key = authenticate(request)
        request.user, request.api_key = key.user, key
        seconds, remaining, limit = count_request(request, "api", "user", settings.LENSWEB_API_RATE)
        request.api_rate = (remaining, limit)  # sent back as X-RateLimit-* (urls.py)
        if seconds is not None:
            raise rate_limited(seconds)
        check_declared_size(request)
        if request.method in ("POST", "PUT", "PATCH") and not request.body:
            raise ApiError(400, "invalid_json", "the body is empty; send a JSON object")
        return key

    def authenticate(self, request, token):  # pragma: no cover - __call__ does it all
        return None
