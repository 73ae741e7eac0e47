"""Worker records (one per `runworker` process, or the worker inside `serve`) and the doorbell that wakes them.
The worker's run loop itself is worker.py.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import notify
from .engine import get_engine
from .models import Analysis, WorkerRecord

log = logging.getLogger(__name__)
Status = Analysis.Status


def served_lens_ids() -> list[str]:
    """The lenses this process' workers serve: those LENSWEB_WORKER_LENSES names, else every lens of the
    registry. Jobs of other lenses are left to other workers (lifecycle.claim_next_job)."""
    try:
        ids = [spec.id for spec in get_engine().lenses()]
    except Exception:  # a broken registry: the worker serves nothing until it can be read
        log.exception("the lens registry cannot be read")
        return []
    chosen = settings.LENSWEB_WORKER_LENSES
    return [lens_id for lens_id in ids if lens_id in chosen] if chosen else ids


def worker_lenses_problem() -> str | None:
    """Why a worker must not start with this LENSWEB_WORKER_LENSES (an id the registry lacks), else None."""
    chosen = settings.LENSWEB_WORKER_LENSES
    if not chosen:
        return None
    known = [spec.id for spec in get_engine().lenses()]
    unknown = [lens_id for lens_id in chosen if lens_id not in known]
    if unknown:
        return (
            f"LENSWEB_WORKER_LENSES names {', '.join(unknown)}, which the lens registry does not have; "
            f"it has: {', '.join(known)}"
        )
    return None


def register_worker(
    channel_name: str = "", device: str = "", lenses: list[str] | None = None
) -> WorkerRecord:
    """A new worker's record; `lenses`: the ids it serves, by default every lens of the registry (a worker
    loads whichever a job needs)."""
    if lenses is None:
        lenses = served_lens_ids()
    host, pid = socket.gethostname(), os.getpid()
    record = WorkerRecord.objects.create(
        name=f"{host}:{pid}:{uuid.uuid4().hex[:8]}",
        host=host,
        pid=pid,
        channel_name=channel_name,
        device=device,
        lenses=list(lenses or []),
        state=WorkerRecord.State.IDLE,
    )
    # the queued cards re-read whether a worker serves their lens (rates.attach's waiting note)
    transaction.on_commit(notify.queue_moved)
    return record


def worker_listens_on(worker_id: int, channel_name: str) -> None:
    """The worker's own channel changed (its consumer restarted after the channel layer failed): doorbells
    and cancels go to the new one."""
    WorkerRecord.objects.filter(pk=worker_id).update(channel_name=channel_name)


def worker_stopped(worker_id: int) -> None:
    WorkerRecord.objects.filter(pk=worker_id).update(
        state=WorkerRecord.State.STOPPED, last_heartbeat=timezone.now(), loading_lens="", loading_since=None
    )
    transaction.on_commit(notify.queue_moved)  # its lenses may have no worker left: the cards say so


def live_workers():
    return WorkerRecord.live()


def ring_doorbell() -> None:
    """Wake idle workers on their own channels (the shared channel reaches only one, maybe a busy one);
    with none known, ring the shared channel. A lost ring costs latency only: workers also poll."""
    channels = [
        c
        for c in live_workers().filter(state=WorkerRecord.State.IDLE).values_list("channel_name", flat=True)
        if c
    ]
    notify.doorbell(channels)


def worker_directives(worker_id: int) -> tuple[set[str], set[str]]:
    """What staff asked of the worker in admin: (lenses to keep past the idle time, lenses to let go of now)."""
    record = WorkerRecord.objects.filter(pk=worker_id).values("pinned_lenses", "unload_lenses").first()
    if record is None:
        return set(), set()
    return set(record["pinned_lenses"] or []), set(record["unload_lenses"] or [])


def unloads_done(worker_id: int, done: set[str]) -> None:
    """The worker let go of the lenses staff asked it to unload: the request is cleared (a newer one stays)."""
    with transaction.atomic():
        record = WorkerRecord.objects.select_for_update().filter(pk=worker_id).first()
        if record is not None:
            record.unload_lenses = [lens for lens in record.unload_lenses or [] if lens not in done]
            record.save(update_fields=["unload_lenses"])


def pin_held_lenses(workers) -> int:
    """Staff pin the lens each worker holds on its device: kept there past LENSWEB_IDLE_UNLOAD_S."""
    pinned = 0
    for record in workers.exclude(lens_id=""):
        record.pinned_lenses = sorted({*(record.pinned_lenses or []), record.lens_id})
        record.save(update_fields=["pinned_lenses"])
        pinned += 1
    return pinned


def unload_lenses(workers) -> int:
    """Staff ask each worker to let go of every lens it holds (device and CPU cache) and unpin them; a job
    running on one finishes first (lenscache). Done at the worker's next heartbeat."""
    asked = 0
    for record in workers:
        held = {record.lens_id, *(record.cached_lenses or [])} - {""}
        record.unload_lenses = sorted({*(record.unload_lenses or []), *held})
        record.pinned_lenses = [lens for lens in record.pinned_lenses or [] if lens not in held]
        record.save(update_fields=["unload_lenses", "pinned_lenses"])
        asked += bool(held)
    return asked
