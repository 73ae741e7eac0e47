"""Per-user daily caps, checked by the one submit path (browser, API and cache warmer alike).

Analyses count positions (the sum of progress_total of the user's analyses created today, UTC), so one long
text costs what it costs the GPU. A cap of 0 turns the check off.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from django.conf import settings
from django.db.models import Q, Sum
from django.utils import timezone

from .errors import QuotaExceeded
from .models import Analysis, Generation


def day_bounds(now=None) -> tuple[datetime, int]:
    """The start of today (in TIME_ZONE) and the seconds left until tomorrow."""
    now = timezone.localtime(now or timezone.now())
    start = timezone.make_aware(datetime.combine(now.date(), time.min), now.tzinfo)
    return start, max(1, int((start + timedelta(days=1) - now).total_seconds()))


def check_daily_cap(cap: int, used_today, adding: int, refusal, now=None) -> None:
    """QuotaExceeded if `adding` more takes today's use past `cap` (0: no cap). `used_today()` counts (only
    called when there is a cap); `refusal(used, cap)` says what was refused."""
    if not cap:
        return
    used = used_today()
    if used + adding > cap:
        _, seconds = day_bounds(now)
        raise QuotaExceeded(
            f"{refusal(used, cap)}; the count starts again at midnight UTC, in "
            f"{seconds // 3600} h {seconds % 3600 // 60} min",
            seconds,
        )


def positions_today(user, now=None) -> int:
    start, _ = day_bounds(now)
    today = Analysis.objects.filter(owner=user, created_at__gte=start)
    # answered from the result cache: nothing was computed for them
    # (an exclude() would drop rows without the key too: SQL's NOT NULL is NULL)
    computed = today.filter(Q(metadata__cached__isnull=True) | Q(metadata__cached=False))
    total = computed.aggregate(n=Sum("progress_total"))
    return total["n"] or 0


def check_daily_positions(user, adding: int, now=None) -> None:
    """Raise QuotaExceeded if `adding` more positions would take `user` past today's cap."""
    check_daily_cap(
        settings.LENSWEB_MAX_POSITIONS_PER_DAY,
        lambda: positions_today(user, now),
        adding,
        lambda used, cap: (
            f"this analysis has {adding:,} positions and you have used {used:,} of your {cap:,} positions today"
        ),
        now,
    )


def generated_tokens_today(user, now=None) -> int:
    start, _ = day_bounds(now)
    return sum(
        int(o.get("n", 1)) * int(o.get("max_new_tokens", 0))
        for o in Generation.objects.filter(owner=user, created_at__gte=start).values_list(
            "options", flat=True
        )
    )


def check_daily_generation_tokens(user, adding: int, now=None) -> None:
    """Generations count n × max_new_tokens (what they may cost, known at submit)."""
    check_daily_cap(
        settings.LENSWEB_MAX_GENERATED_TOKENS_PER_DAY,
        lambda: generated_tokens_today(user, now),
        adding,
        lambda used, cap: (
            f"this generation may produce {adding:,} tokens and you have used {used:,} of your {cap:,} "
            "generated tokens today"
        ),
        now,
    )
