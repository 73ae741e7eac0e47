"""Production: secrets from the environment, HTTPS only, secure cookies, HSTS, and no demo password left
in place. `manage.py check --deploy` passes with no warning (tests/security/test_deploy_check.py).

Deployment shape assumed: daphne behind a TLS-terminating reverse proxy that
  - is the only way in (daphne's port is not reachable from outside), and
  - sets X-Forwarded-Proto itself (`https` on TLS), overwriting whatever a client sent.
Then SECURE_PROXY_SSL_HEADER below lets Django trust that header. If daphne is reachable directly, a client
could claim https with that header: do not deploy that way, or set SECURE_PROXY_SSL_HEADER="" (then nothing
counts as HTTPS unless daphne itself terminates TLS).
Behind that proxy every request's REMOTE_ADDR is the proxy's, so per-IP rate limits need the client's
address from the proxy's header (LENSWEB_CLIENT_IP_HEADER); these settings refuse to start without it,
unless LENSWEB_BEHIND_PROXY=false says daphne faces the clients itself.
"""

import os

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import BASE_DIR, DEVELOPMENT_SECRET_KEY, LENSWEB_CLIENT_IP_HEADER, LENSWEB_TRUSTED_PROXY_HOPS, env

SECRET_KEY = env("SECRET_KEY")  # no default: refuse to start without one
# An empty key started and then answered 500 to everything; the published development key signs sessions
# anyone can forge (and `check --deploy` finds nothing wrong with it). Refuse both at start.
if not SECRET_KEY.strip() or SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY must be a long random secret of your own, not empty and not the published development "
        "key: e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )
DEBUG = False
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")  # no default: the public host name(s), e.g. lens.example.org
STATIC_ROOT = env("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))

# --- the proxy, and the client's address (per-IP rate limits: lensweb.accounts.ratelimits.client_ip) --------
LENSWEB_BEHIND_PROXY = env.bool("LENSWEB_BEHIND_PROXY", default=True)
if "RATELIMIT_IP_META_KEY" in os.environ:
    raise ImproperlyConfigured(
        "RATELIMIT_IP_META_KEY is no longer read: set LENSWEB_CLIENT_IP_HEADER (e.g. HTTP_X_FORWARDED_FOR) instead"
    )
if LENSWEB_BEHIND_PROXY and not LENSWEB_CLIENT_IP_HEADER:
    raise ImproperlyConfigured(
        "Set LENSWEB_CLIENT_IP_HEADER: behind the reverse proxy every request comes from the proxy's address, "
        "so per-IP rate limits (login, sign-up, API) need the header your proxy sets with the client's "
        "address (HTTP_X_FORWARDED_FOR, or HTTP_X_REAL_IP), or set LENSWEB_BEHIND_PROXY=false if clients "
        "connect to daphne directly."
    )
if not LENSWEB_BEHIND_PROXY and LENSWEB_CLIENT_IP_HEADER:
    # Facing clients directly, any header is the client's own word: trusting it would let one pick its bucket.
    raise ImproperlyConfigured(
        "LENSWEB_CLIENT_IP_HEADER is set but LENSWEB_BEHIND_PROXY=false: without a proxy the client writes that "
        "header itself; unset LENSWEB_CLIENT_IP_HEADER, or set LENSWEB_BEHIND_PROXY=true"
    )
if LENSWEB_TRUSTED_PROXY_HOPS < 1:
    raise ImproperlyConfigured("LENSWEB_TRUSTED_PROXY_HOPS must be 1 or more (the proxies that append to it)")

# --- HTTPS ------------------------------------------------------------------------------------------------
# Without a proxy, X-Forwarded-Proto is the client's own word: not trusted unless set explicitly.
_proxy_header = env(
    "SECURE_PROXY_SSL_HEADER", default="HTTP_X_FORWARDED_PROTO" if LENSWEB_BEHIND_PROXY else ""
)
SECURE_PROXY_SSL_HEADER = (_proxy_header, "https") if _proxy_header else None
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Probes and the scraper often talk plain HTTP to the container itself; they carry no session.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# HSTS (sent on HTTPS responses only). A year, subdomains included, preload-eligible: lensweb expects a
# host of its own. Lower SECURE_HSTS_SECONDS while trying a new deployment; turn subdomains off only if a
# sibling host must stay on plain HTTP (check --deploy then warns, rightly).
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)

# --- cookies ---------------------------------------------------------------------------------------------
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
# No script reads the CSRF cookie: htmx sends the token from <body hx-headers>, forms from {% csrf_token %}.
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"

# --- headers (CSP: lensweb.security, on in every configuration) -------------------------------------------
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

LENSWEB_REFUSE_DEMO_PASSWORD = True
# /metrics: a staff session or LENSWEB_METRICS_TOKEN; never "any request from loopback" (the proxy is local).
LENSWEB_METRICS_ALLOW_LOOPBACK = False
