"""What grows for ever unless pruned: request log entries, expired sessions, records of workers long gone,
and (when LENSWEB_ANALYSIS_RETENTION_DAYS is set) finished analyses with their rows.

`manage.py purge` (or its old name, purge_request_log) runs all of it, for a cron job. The app itself runs
the cheap part (`purge_routine`) at most hourly per process, from requestlog.record(). Deleting analyses
may delete millions of rows: only the command does that, in batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from importlib import import_module

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from lensweb.analyses.models import Analysis, WorkerRecord

from .models import RequestLogEntry

# Analyses deleted per transaction: each batch holds the write lock for a moment, not for the whole purge.
ANALYSIS_BATCH = 200


@dataclass
class Purged:
    request_log: int = 0
    sessions: int | None = 0  # None: the session backend expires its sessions itself
    workers: int = 0
    analyses: int = 0


def purge_request_log(now=None) -> int:
    """Entries older than LENSWEB_REQUEST_LOG_RETENTION_DAYS (0 keeps them forever)."""
    days = settings.LENSWEB_REQUEST_LOG_RETENTION_DAYS
    if not days or days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted, _ = RequestLogEntry.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def purge_sessions(now=None) -> int | None:
    """Expired sessions, as `manage.py clearsessions` deletes them; None for a backend without a table."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    if hasattr(store, "get_model_class"):  # the database backends: count what goes
        model = store.get_model_class()
        deleted, _ = model.objects.filter(expire_date__lt=now or timezone.now()).delete()
        return deleted
    try:
        store.clear_expired()
    except NotImplementedError:  # cache and cookie sessions expire by themselves
        pass
    return None


def purge_worker_records(now=None) -> int:
    """Records of workers stopped or lost more than LENSWEB_WORKER_RECORD_RETENTION_DAYS ago (0: kept).
    Their jobs keep their rows; a job's `worker` becomes empty."""
    days = settings.LENSWEB_WORKER_RECORD_RETENTION_DAYS
    if not days or days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    gone = WorkerRecord.objects.filter(
        state__in=[WorkerRecord.State.STOPPED, WorkerRecord.State.LOST], last_heartbeat__lt=cutoff
    )
    _, by_model = gone.delete()
    return by_model.get(WorkerRecord._meta.label, 0)


def purge_analyses(now=None) -> int:
    """Finished analyses (done, failed, cancelled) that ended more than LENSWEB_ANALYSIS_RETENTION_DAYS ago,
    with their rows, cache links and share links (0: kept forever). Queued and running ones never: each
    batch is locked and checked again, so a job re-queued meanwhile stays."""
    days = settings.LENSWEB_ANALYSIS_RETENTION_DAYS
    if not days or days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    ended = Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, created_at__lt=cutoff)
    old = Analysis.objects.filter(ended, status__in=Analysis.FINAL)
    total = 0
    while ids := list(old.order_by("pk").values_list("pk", flat=True)[:ANALYSIS_BATCH]):
        with transaction.atomic():
            locked = list(
                Analysis.objects.select_for_update()
                .filter(ended, pk__in=ids, status__in=Analysis.FINAL)
                .values_list("pk", flat=True)
            )
            _, by_model = Analysis.objects.filter(pk__in=locked).delete()
        total += by_model.get(Analysis._meta.label, 0)
    return total


def purge_routine(now=None) -> Purged:
    """The cheap part: one DELETE per table, safe to run from a request."""
    now = now or timezone.now()
    return Purged(
        request_log=purge_request_log(now), sessions=purge_sessions(now), workers=purge_worker_records(now)
    )


def purge_all(now=None) -> Purged:
    now = now or timezone.now()
    purged = purge_routine(now)
    purged.analyses = purge_analyses(now)
    return purged
