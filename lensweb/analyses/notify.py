"""Events to browsers (the owner's group) and to workers. Always called after commit, from sync code.
A failed send is logged, never raised: the database row is the truth and a reconnect replays it."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from . import fragments, rates
from .models import Probe
from .queue import queue_position, queue_positions

log = logging.getLogger(__name__)

WORKER_CHANNEL = "lens-inference"
# Every open page's status strip listens here: a worker loaded a lens, came or went, the queue moved.
STATUS_GROUP = "lensweb-status"


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


def status_changed() -> None:
    """A doorbell for the status strips: each re-reads the status from the database."""
    _group_send(STATUS_GROUP, {"type": "status.changed"})


def job_created(job) -> None:
    """An analysis or a generation: its owner's pages add its card."""
    _group_send(user_group(job.owner_id), {"type": f"{job.kind}.created", "job": job.pk})


def job_state(job) -> None:
    if job.kind == Probe.kind:  # no card: its asker polls it (the API) or its page does
        return
    rates.attach([job])
    if job.kind == "generation":
        _group_send(
            user_group(job.owner_id),
            {
                "type": "generation.state",
                "job": job.pk,
                "html": fragments.render_generation_card(job, queue_position(job)),
                "final": job.is_final,
            },
        )
        return
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
    rates.attach([job])
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


def job_progress(job) -> None:
    """A running analysis' phase, progress within its batch and ETA: the card's progress line."""
    rates.attach([job])
    _group_send(
        user_group(job.owner_id),
        {
            "type": "analysis.progress",
            "job": job.pk,
            "html": fragments.render_progress(job),
            "done": job.progress_done,
        },
    )


def generation_tokens(generation) -> None:
    """A running generation's samples so far (small: bounded by n × max_new_tokens)."""
    _group_send(
        user_group(generation.owner_id),
        {
            "type": "generation.tokens",
            "job": generation.pk,
            "html": fragments.render_generation_samples(generation),
        },
    )


def session_check(user_id: int, ended: str = "") -> None:
    """Every socket of the user re-validates its session; the one whose session fingerprint is `ended`
    (a logout) closes without asking."""
    _group_send(user_group(user_id), {"type": "session.check", "ended": ended})


def queue_moved() -> None:
    """Every queued job's position, to its owner, whenever the queue moves."""
    from .queue import JOB_MODELS

    positions = queue_positions()
    by_owner: dict[int, list] = {}
    for kind, model in JOB_MODELS.items():
        ids = [job_id for job_kind, job_id in positions if job_kind == kind]
        if model is Probe:  # no card shows a probe's place
            continue
        jobs = list(model.objects.filter(pk__in=ids).only("id", "owner_id", "status", "lens_id", "metadata"))
        rates.attach(jobs)  # a lens no live worker serves: the card says so instead of its place
        for job in jobs:
            by_owner.setdefault(job.owner_id, []).append(job)
    for owner_id, jobs in by_owner.items():
        # one line per job: each page sends on only those of the cards it shows
        lines = [
            [job.kind, job.pk, fragments.render_queue(job, positions[(job.kind, job.pk)])] for job in jobs
        ]
        _group_send(user_group(owner_id), {"type": "analysis.queue", "lines": lines})
    status_changed()  # the strips' queue length


def cancel_to_worker(channel: str, job) -> None:
    """Fast path: the worker stops mid-batch. Without it the worker still sees the flag after the batch."""
    if channel:
        _send(channel, {"type": "analysis.cancel", "job": job.pk, "kind": job.kind})


def doorbell(channels: list[str]) -> None:
    for channel in channels or [WORKER_CHANNEL]:
        _send(channel, {"type": "analysis.doorbell"})
