"""Queue order, read-only: round-robin between users, FIFO within a user.

A job's rank is the number of its owner's jobs ahead of it, running ones included; between users of the
same rank, the one served least recently goes first (never served: first of all). So one user's twenty
jobs never starve another user's one, and users take turns. Workers claim and pages show this order.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from django.db.models import Max

from .models import Analysis

NEVER = datetime.min.isoformat()


def fair_queue() -> list[int]:
    """Queued job ids in the order workers take them. Bounded by LENSWEB_MAX_QUEUE, so cheap."""
    queued = list(
        Analysis.objects.filter(status=Analysis.Status.QUEUED)
        # a follower waits for the identical job it follows (lensweb.cache), unless that one gave up
        .exclude(cache_link__leader__status__in=(Analysis.Status.QUEUED, Analysis.Status.RUNNING))
        .order_by("queued_at", "id")
        .values_list("id", "owner_id", "queued_at")
    )
    owners = {owner_id for _, owner_id, _ in queued}
    running = Counter(
        Analysis.objects.filter(status=Analysis.Status.RUNNING, owner_id__in=owners).values_list(
            "owner_id", flat=True
        )
    )
    last_served = dict(
        Analysis.objects.filter(owner_id__in=owners, attempt_started_at__isnull=False)
        .values("owner_id")
        .annotate(last=Max("attempt_started_at"))
        .values_list("owner_id", "last")
    )
    seen: Counter = Counter()
    keyed = []
    for job_id, owner_id, queued_at in queued:
        served = last_served.get(owner_id)
        keyed.append(
            (running[owner_id] + seen[owner_id], served.isoformat() if served else NEVER, queued_at, job_id)
        )
        seen[owner_id] += 1
    keyed.sort()
    return [key[-1] for key in keyed]


def queue_positions() -> dict[int, int]:
    return {job_id: i + 1 for i, job_id in enumerate(fair_queue())}


def queue_position(job: Analysis) -> int | None:
    return queue_positions().get(job.pk) if job.status == Analysis.Status.QUEUED else None
