"""The engine's bounds under this deployment's settings: what every entry point (form, API, socket,
worker) checks a submission against."""

from __future__ import annotations

from django.conf import settings

from inference.limits import Limits


def limits() -> Limits:
    return Limits(
        max_text_chars=settings.LENSWEB_MAX_TEXT_CHARS,
        max_tokens=settings.LENSWEB_MAX_TOKENS,
        max_best_of_k=settings.LENSWEB_MAX_BEST_OF_K,
    )
