"""Content-Security-Policy on every response (Django 5.2 has none built in; the policy is one static string
plus the socket's origin, too little to justify a dependency).

Nothing inline anywhere: scripts and styles are same-origin files, handlers are delegated from them, and
htmx is told not to inject its indicator <style> nor to eval (the `htmx-config` meta tag in base.html).
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.utils.deprecation import MiddlewareMixin

HEADER = "Content-Security-Policy"
REPORT_ONLY_HEADER = "Content-Security-Policy-Report-Only"

# Directive → sources. `connect-src` gains the page's own ws:// or wss:// origin per request: CSP 3 lets
# 'self' match it, but older browsers (Safari before 15.4) do not.
POLICY: dict[str, tuple[str, ...]] = {
    "default-src": ("'self'",),
    "script-src": ("'self'",),
    "style-src": ("'self'",),
    "img-src": ("'self'",),
    "font-src": ("'self'",),
    "connect-src": ("'self'",),
    "object-src": ("'none'",),
    "base-uri": ("'self'",),
    "form-action": ("'self'",),
    "frame-ancestors": ("'none'",),
}


def socket_origin(request) -> str | None:
    """ws://host or wss://host of this request, or None when the Host header is not an allowed one."""
    try:
        host = request.get_host()
    except DisallowedHost:  # answered 400 already; 'self' alone is enough for an error page
        return None
    return f"{'wss' if request.is_secure() else 'ws'}://{host}"


def policy_for(request, extra: dict[str, str] | None = None) -> str:
    """The policy for this request; `extra`: sources one view adds to a directive (say why where it does)."""
    directives = {name: list(sources) for name, sources in POLICY.items()}
    for name, source in (extra or {}).items():
        directives[name].append(source)
    origin = socket_origin(request)
    if origin:
        directives["connect-src"].append(origin)
    report_uri = getattr(settings, "LENSWEB_CSP_REPORT_URI", "")
    if report_uri:
        directives["report-uri"] = [report_uri]
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


def apply(response, request, extra: dict[str, str] | None = None):
    """The policy (with a view's `extra` sources) on the response, enforced or report-only as configured; the
    middleware then leaves it as it is."""
    header = REPORT_ONLY_HEADER if getattr(settings, "LENSWEB_CSP_REPORT_ONLY", False) else HEADER
    response[header] = policy_for(request, extra)
    return response


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Adds the policy to every response (JSON and downloads too: nothing of ours may run as a page).
    A view that set its own policy keeps it. MiddlewareMixin: it runs in the ASGI stack without a thread hop."""

    def process_response(self, request, response):
        if HEADER in response or REPORT_ONLY_HEADER in response:
            return response
        return apply(response, request)
