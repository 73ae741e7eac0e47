"""/api/v1/: ninja's routes, each wrapped once (login middleware off: the key authenticates; 405s in our
envelope; rate and quota headers), the reference page, and a JSON 404 for everything else."""

from __future__ import annotations

import functools
from inspect import iscoroutinefunction

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.shortcuts import redirect
from django.urls import path, re_path
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_exempt

from lensweb.analyses.quotas import positions_today

from . import docs
from .api import api
from .errors import ApiError

app_name = "api"


def _method_not_allowed(response):
    allowed = ", ".join(sorted(m.strip() for m in response["Allow"].split(",")))  # ninja's order varies
    return ApiError(
        405,
        "method_not_allowed",
        f"this method is not allowed here; use {' or '.join(allowed.split(', '))}",
        headers={"Allow": allowed},
    ).response()


def _rate_headers(request, response, quota: bool) -> None:
    remaining, limit = getattr(request, "api_rate", (None, None))
    if limit is not None:
        response["X-RateLimit-Limit"] = str(limit)
        response["X-RateLimit-Remaining"] = str(remaining)
    cap = settings.LENSWEB_MAX_POSITIONS_PER_DAY
    if quota and cap and getattr(request, "api_key", None) is not None:
        response["X-Quota-Positions-Limit"] = str(cap)
        response["X-Quota-Positions-Remaining"] = str(max(0, cap - positions_today(request.user)))


def _finish(request, response, quota: bool = True):
    if (
        response.status_code == 405
        and "Allow" in response
        and not response.get("Content-Type", "").startswith("application/json")
    ):
        response = _method_not_allowed(response)
    _rate_headers(request, response, quota)
    patch_vary_headers(response, ("Authorization",))
    return response


def api_endpoint(view):
    if iscoroutinefunction(view):

        @functools.wraps(view)
        async def wrapper(request, *args, **kwargs):
            # streams: the quota header would need the database from the event loop; rate headers only
            return _finish(request, await view(request, *args, **kwargs), quota=False)

    else:

        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            return _finish(request, view(request, *args, **kwargs))

    return csrf_exempt(login_not_required(wrapper))


def _wrapped(patterns):
    for pattern in patterns:
        # The API's root (ninja reverses its name for the document's paths) leads to the reference.
        pattern.callback = root if pattern.name == "api-root" else api_endpoint(pattern.callback)
        yield pattern


@login_not_required
def root(request):
    return redirect("api:docs")


@login_not_required
@csrf_exempt
def unknown_route(request, rest=""):
    return ApiError(404, "not_found", f"there is no API route {request.path}; see /api/v1/docs").response()


urlpatterns = [
    *_wrapped(api.urls[0]),
    path("docs", docs.reference, name="docs"),
    # Last: anything else under /api/v1/ is a JSON 404, not the site's HTML page.
    re_path(r"^(?P<rest>.*)$", unknown_route, name="unknown"),
]
