"""The socket's Origin check: /ws/analyses/ opens only for a page of this site's own origin (scheme, host
and port of the handshake, as Django would see them for a request) or of one of CSRF_TRUSTED_ORIGINS:
the origins a form POST is accepted from.

channels' AllowedHostsOriginValidator compares the host alone, so a page of another app on the same host
(http://127.0.0.1:9999) could open the socket with the user's session cookie and read their results.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 80, "https": 443}
# (scheme, host, port); an IPv6 host keeps its brackets, as in ALLOWED_HOSTS.
Origin = tuple[str, str, int]


def parse_origin(value: str) -> Origin | None:
    """`https://lens.example.org` → ("https", "lens.example.org", 443); None for anything but an
    http(s) origin (`null`, a path, credentials, a bad port)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return scheme, host, port or DEFAULT_PORTS[scheme]


def _headers(scope) -> dict[str, str]:
    """Header name → value; repeated headers joined with commas, as Django joins them into META."""
    headers: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        key = name.decode("latin1").lower()
        text = value.decode("latin1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return headers


def _is_secure(scope, headers) -> bool:
    """As HttpRequest.is_secure(): the TLS proxy's header when SECURE_PROXY_SSL_HEADER names one (daphne
    behind it sees plain ws://), else the connection's own scheme."""
    if settings.SECURE_PROXY_SSL_HEADER:
        meta_key, secure_value = settings.SECURE_PROXY_SSL_HEADER
        value = headers.get(meta_key.removeprefix("HTTP_").replace("_", "-").lower())
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") == "wss"


def own_origin(scope) -> Origin | None:
    """This handshake's own origin, from its Host header (X-Forwarded-Host with USE_X_FORWARDED_HOST, as
    HttpRequest.get_host()); None when there is none or it is not in ALLOWED_HOSTS."""
    headers = _headers(scope)
    host = headers.get("host", "")
    if settings.USE_X_FORWARDED_HOST and "x-forwarded-host" in headers:
        host = headers["x-forwarded-host"]
    domain, port = split_domain_port(host)
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    if not domain or not validate_host(domain, allowed_hosts):
        return None
    scheme = "https" if _is_secure(scope, headers) else "http"
    try:
        return scheme, domain, int(port) if port else DEFAULT_PORTS[scheme]
    except ValueError:
        return None


def trusted(origin: Origin) -> bool:
    """One of CSRF_TRUSTED_ORIGINS, whose `https://*.example.org` covers that domain and its subdomains."""
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        wildcard = "://*." in entry
        allowed = parse_origin(entry.replace("://*.", "://", 1) if wildcard else entry)
        if allowed is None:
            continue
        if wildcard:
            scheme, host, port = allowed
            if origin[0] == scheme and origin[2] == port and is_same_domain(origin[1], f".{host}"):
                return True
        elif origin == allowed:
            return True
    return False


def origin_allowed(scope) -> bool:
    origins = [value for name, value in scope.get("headers", []) if name.lower() == b"origin"]
    if len(origins) != 1:
        return False
    origin = parse_origin(origins[0].decode("latin1"))
    if origin is None:
        return False
    return origin == own_origin(scope) or trusted(origin)


class SameOriginValidator:
    """ASGI middleware for the websocket route: a foreign Origin is closed before accept (daphne answers
    the handshake 403). Settings are read per connection."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator is for WebSocket connections")
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        log.info("socket refused: origin not allowed for %s", scope.get("path", "?"))
        return await WebsocketDenier()(scope, receive, send)
