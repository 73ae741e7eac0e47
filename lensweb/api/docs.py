"""/api/v1/docs: Swagger UI over our OpenAPI document, from the files django-ninja vendors (no CDN), under a
policy that allows exactly what the page needs."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from lensweb.security import apply

# Swagger UI draws its icons as data: SVGs and sets styles through the CSSOM (allowed by 'self'); nothing
# else is added to the site's policy. "Try it out" calls go to this origin only.
DOCS_EXTRA = {"img-src": "data:"}


@login_not_required  # like openapi.json: the reference is public; calls still need a key
@require_GET
def reference(request):
    return apply(render(request, "api/docs.html"), request, DOCS_EXTRA)
