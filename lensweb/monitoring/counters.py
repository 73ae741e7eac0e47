"""Counters that every web process adds to and /metrics reads, kept in a shared cache
(settings.LENSWEB_METRICS_COUNTER_CACHE: Redis when there is one), not in the database: a request nobody
authenticated costs no database write, however many an attacker sends.

Labels are a fixed set (never a path or anything else a client chose), so the series cannot multiply.
A counter lost with its cache (a Redis restart) starts again at 0, which Prometheus reads as a reset.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.cache import caches

log = logging.getLogger(__name__)

CLIENTS = ("api", "browser")
# The request log's kinds of state-changing request, "read" for the rest (GETs), "other" for anything else.
KINDS = ("analysis", "generation", "cancel", "read", "other")


def _key(client: str, kind: str) -> str:
    return f"lensweb:counter:unauthenticated:{client}:{kind}"


def _labels(client: str, kind: str) -> tuple[str, str]:
    return (client if client in CLIENTS else "browser", kind if kind in KINDS else "other")


def count_unauthenticated(client: str, kind: str) -> None:
    """One more request refused for want of a login or a valid API key. Never raises."""
    key = _key(*_labels(client, kind))
    try:
        cache = caches[settings.LENSWEB_METRICS_COUNTER_CACHE]
        cache.add(key, 0, timeout=None)
        cache.incr(key)
    except Exception:  # evicted between add and incr, or the cache is away: one count lost, not a request
        log.debug("could not count an unauthenticated request", exc_info=True)


def unauthenticated_totals() -> dict[tuple[str, str], int]:
    """{(client, kind): count} for every label pair (0 where none was counted)."""
    keys = {_key(client, kind): (client, kind) for client in CLIENTS for kind in KINDS}
    try:
        values = caches[settings.LENSWEB_METRICS_COUNTER_CACHE].get_many(list(keys))
    except Exception:
        log.warning("could not read the unauthenticated request counters", exc_info=True)
        values = {}
    return {labels: int(values.get(key) or 0) for key, labels in keys.items()}
