"""The settings page (API keys, password) and, when LENSWEB_ALLOW_SIGNUP is on, sign-up.

Partials are named after the element id they replace: `accounts/partials/api-keys.html` is `#api-keys`.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import UserCreationForm
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import keys
from .demo import published_demo_login
from .forms import ApiKeyForm
from .models import ApiKey
from .ratelimits import ratelimit_page


class LoginView(auth_views.LoginView):
    """Django's, saying the demo login while a development server still has it (accounts.demo)."""

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "demo_login": published_demo_login()}


def _is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _get_key_for_user(request, key_id) -> ApiKey:
    """The user's own key, or 404 (someone else's key is 'not found', not 'forbidden')."""
    try:
        return ApiKey.objects.get(pk=key_id, user=request.user)
    except ApiKey.DoesNotExist:
        raise Http404("no such API key") from None


def _keys_context(request, form=None, new_key: str | None = None, new_key_row=None) -> dict:
    return {
        "api_keys": ApiKey.objects.filter(user=request.user),
        "key_form": form or ApiKeyForm(),
        "new_key": new_key,
        "new_key_row": new_key_row,
        "api_docs_url": reverse("api:docs"),
    }


def _render_keys(request, context, status=200):
    template = "accounts/partials/api-keys.html" if _is_htmx(request) else "accounts/settings.html"
    return render(request, template, context, status=status)


@require_GET
def settings_page(request):
    return render(request, "accounts/settings.html", _keys_context(request))


@require_POST
@ratelimit_page("accounts.create_key", "user", "LENSWEB_KEY_CREATE_RATE", what="new API keys")
def create_api_key(request):
    form = ApiKeyForm(request.POST)
    if form.is_valid():
        try:
            row, raw = keys.create_key(request.user, form.cleaned_data["name"])
        except keys.KeyLimitError as exc:
            form.add_error(None, str(exc))
        else:
            # Rendered, never redirected: the key exists only in this response.
            response = _render_keys(request, _keys_context(request, new_key=raw, new_key_row=row))
            response["Cache-Control"] = "no-store"
            return response
    # 200 for htmx (it swaps 2xx only), 400 for a plain form post.
    return _render_keys(request, _keys_context(request, form=form), status=200 if _is_htmx(request) else 400)


@require_POST
def revoke_api_key(request, key_id):
    keys.revoke_key(_get_key_for_user(request, key_id))
    if not _is_htmx(request):
        return redirect("account-settings")
    return render(request, "accounts/partials/api-keys.html", _keys_context(request))


@login_not_required
@require_http_methods(["GET", "POST"])
@ratelimit_page("accounts.signup", "ip", "LENSWEB_SIGNUP_RATE", method="POST", what="sign-up attempts")
def signup(request):
    if not settings.LENSWEB_ALLOW_SIGNUP:
        raise Http404("sign-up is off on this server; ask an administrator for an account")
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200)
