"""Queue order, read-only: round-robin between users, FIFO within a user, analyses and generations alike.

A job's rank is the number of its owner's jobs ahead of it (of either kind), running ones included; between
users of the same rank, the one served least recently goes first (never served: first of all). So one user's
twenty jobs never starve another user's one, and users take turns. Workers claim and pages show this order.
A job is keyed (kind, id): two tables, one queue.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from django.db.models import Max

from .models import Analysis, Generation, JobStatus, Probe

NEVER = datetime.min.isoformat()
JOB_MODELS = {Analysis.kind: Analysis, Generation.kind: Generation, Probe.kind: Probe}


def _waiting(model, lenses=None):
    queued = model.objects.filter(status=JobStatus.QUEUED)
    if lenses is not None:  # a worker claims only jobs of the lenses it serves (LENSWEB_WORKER_LENSES)
        queued = queued.filter(lens_id__in=list(lenses))
    if model is Analysis:
        # a follower waits for the identical job it follows (lensweb.cache), unless that one gave up
        queued = queued.exclude(cache_link__leader__status__in=(JobStatus.QUEUED, JobStatus.RUNNING))
    return queued


def fair_queue(lenses=None) -> list[tuple[str, int]]:
    """Queued jobs' (kind, id) in the order workers take them; with `lenses`, only the jobs of those lenses
    (what a worker serving them may claim), ranked by the same rule. Bounded by LENSWEB_MAX_QUEUE."""
    queued = []
    for kind, model in JOB_MODELS.items():
        queued += [
            (queued_at, kind, job_id, owner_id)
            for job_id, owner_id, queued_at in _waiting(model, lenses).values_list(
                "id", "owner_id", "queued_at"
            )
        ]
    queued.sort(key=lambda item: (item[0], item[1] == Generation.kind, item[2]))
    owners = {owner_id for *_, owner_id in queued}
    running: Counter = Counter()
    last_served: dict = {}
    for model in JOB_MODELS.values():
        running.update(
            model.objects.filter(status=JobStatus.RUNNING, owner_id__in=owners).values_list(
                "owner_id", flat=True
            )
        )
        for owner_id, last in (
            model.objects.filter(owner_id__in=owners, attempt_started_at__isnull=False)
            .values("owner_id")
            .annotate(last=Max("attempt_started_at"))
            .values_list("owner_id", "last")
        ):
            if owner_id not in last_served or last > last_served[owner_id]:
                last_served[owner_id] = last
    seen: Counter = Counter()
    keyed = []
    for order, (_, kind, job_id, owner_id) in enumerate(queued):
        served = last_served.get(owner_id)
        rank = running[owner_id] + seen[owner_id]
        keyed.append((rank, served.isoformat() if served else NEVER, order, (kind, job_id)))
        seen[owner_id] += 1
    keyed.sort()
    return [key[-1] for key in keyed]


def queue_positions() -> dict[tuple[str, int], int]:
    return {key: i + 1 for i, key in enumerate(fair_queue())}


def queue_position(job) -> int | None:
    return queue_positions().get((job.kind, job.pk)) if job.status == JobStatus.QUEUED else None
