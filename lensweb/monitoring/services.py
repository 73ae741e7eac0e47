"""Staff operations on analyses that the core's services lack, written the core's way: a conditional
UPDATE is the lock, notifications and the doorbell go out on commit."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from lensweb.analyses import notify
from lensweb.analyses import services as core
from lensweb.analyses.models import Analysis

log = logging.getLogger(__name__)

Status = Analysis.Status
REQUEUABLE = (Status.FAILED, Status.CANCELLED)


def do_staff_cancel(job_id: int) -> Analysis:
    """Cancel on the owner's behalf, through the core's do_cancel (queued: at once; running: flagged)."""
    job = Analysis.objects.select_related("owner").get(pk=job_id)
    return core.do_cancel(job.owner, job.pk)


def do_requeue(job_id: int) -> bool:
    """A failed or cancelled analysis back to the queue, as if submitted now: its rows stay (the next
    worker resumes after them), attempts and error start again. False if it was not failed/cancelled."""
    now = timezone.now()
    with transaction.atomic():
        requeued = Analysis.objects.filter(pk=job_id, status__in=REQUEUABLE).update(
            status=Status.QUEUED,
            cancel_requested=False,
            worker=None,
            heartbeat_at=None,
            attempts=0,
            error="",
            queued_at=now,
            started_at=None,  # so that queue wait and run time measure this run, not the first one
            finished_at=None,
        )
        if not requeued:
            return False
        job = Analysis.objects.get(pk=job_id)
        log.info("analysis %s re-queued by staff with %s rows kept", job_id, job.progress_done)
        transaction.on_commit(lambda: (notify.job_state(job), core.ring_doorbell(), notify.queue_moved()))
    return True
