"""The demo user's published login, said where a new user looks (the login page, `make run`) while it is still
in use on a development server. Production refuses to start with it (accounts.checks), and never says it."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model

from .checks import PUBLISHED_DEMO_PASSWORD

_checked: dict[str, bool] = {}  # stored hash → whether it is the published password's (a hash costs ~0.1 s)


def published_demo_login() -> tuple[str, str] | None:
    """(username, password) of the demo user while it can still log in with the published password, on a
    development server only; None otherwise."""
    if settings.LENSWEB_REFUSE_DEMO_PASSWORD:
        return None
    user = get_user_model().objects.filter(username=settings.LENSWEB_DEMO_USERNAME, is_active=True).first()
    if user is None or not user.password:
        return None
    if user.password not in _checked:
        _checked[user.password] = user.check_password(PUBLISHED_DEMO_PASSWORD)
    return (user.username, PUBLISHED_DEMO_PASSWORD) if _checked[user.password] else None
