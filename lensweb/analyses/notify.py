"""Events to browsers (the owner's group) and to workers. Always called after commit, from sync code.
A failed send is logged, never raised: the database row is the truth and a reconnect replays it."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from . import fragments
from .queue import queue_position, queue_positions

log = logging.getLogger(__name__)

WORKER_CHANNEL = "lens-inference"


def user_group(user_id: int) -> str:
    """One group per user: the page shows all of its owner's jobs over one socket."""
    return f"user-{user_id}"


def _group_send(group: str, message: dict) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(group, message)
    except Exception:
        log.exception("could not send %s to %s", message.get("type"), group)


def _send(channel: str, message: dict) -> None:
    try:
        async_to_sync(get_channel_layer().send)(channel, message)
    except Exception:
        log.exception("could not send %s to %s", message.get("type"), channel)


def job_created(job) -> None:
    _group_send(user_group(job.owner_id), {"type": "analysis.created", "job": job.pk})


def job_state(job) -> None:
    html = fragments.render_state(job, queue_position(job))
    _group_send(
        user_group(job.owner_id),
        {
            "type": "analysis.state",
            "job": job.pk,
            "html": html,
            "done": job.progress_done,
            "final": job.is_final,
        },
    )


def job_rows(job, rows: list[dict]) -> None:
    """One small message per batch: the new rows (consumers append them) and the progress bar."""
    _group_send(
        user_group(job.owner_id),
        {
            "type": "analysis.rows",
            "job": job.pk,
            "rows": [[row["position"], fragments.render_row(job, row)] for row in rows],
            "progress": fragments.render_progress(job),
            "done": job.progress_done,
        },
    )


def session_check(user_id: int, ended: str = "") -> None:
    """Every socket of the user re-validates its session; the one whose session fingerprint is `ended`
    (a logout) closes without asking."""
    _group_send(user_group(user_id), {"type": "session.check", "ended": ended})


def queue_moved() -> None:
    """Every queued job's position, to its owner, whenever the queue moves."""
    from .models import Analysis

    positions = queue_positions()
    by_owner: dict[int, list] = {}
    for job in Analysis.objects.filter(pk__in=positions).only("id", "owner_id", "status"):
        by_owner.setdefault(job.owner_id, []).append(job)
    for owner_id, jobs in by_owner.items():
        html = "".join(fragments.render_queue(job, positions[job.pk]) for job in jobs)
        _group_send(user_group(owner_id), {"type": "analysis.queue", "html": html})


def cancel_to_worker(channel: str, job_id: int) -> None:
    """Fast path: the worker stops mid-batch. Without it the worker still sees the flag after the batch."""
    if channel:
        _send(channel, {"type": "analysis.cancel", "job": job_id})


def doorbell(channels: list[str]) -> None:
    for channel in channels or [WORKER_CHANNEL]:
        _send(channel, {"type": "analysis.doorbell"})
