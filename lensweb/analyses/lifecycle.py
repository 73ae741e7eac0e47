"""A job's life after submission, analyses and generations alike (models.Job): claimed in fair order (queue.py),
its metadata, rows, progress and tokens recorded, cancelled, finished, failed, re-queued (stale ones too).
Every write is conditional on the job still being the worker's, so a stale worker can change nothing.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from inference.rows import Row

from . import notify, rates, signals
from .access import get_analysis_for, get_generation_for
from .models import PLACEMENT_KEYS, Analysis, AnalysisRow, Generation, WorkerRecord
from .queue import JOB_MODELS, fair_queue
from .submit import queue_follow_up
from .summaries import summarize
from .workers import ring_doorbell

log = logging.getLogger(__name__)
Status = Analysis.Status


# A running generation persists (and streams) its tokens at most this often.
TOKENS_EVERY_SECONDS = 0.3


# Set on a running analysis that positions were added to (analyses.growth): done, it is queued again.
GREW_WHILE_RUNNING = "grew_while_running"


# What a job's metadata keeps when an attempt records its lens' (the rest is that attempt's): positions
# added while it ran, and the rows it took from an earlier analysis' prefix (analyses.prefixes).
KEPT_METADATA = (GREW_WHILE_RUNNING, "reused_positions", "reused_from")


def claim_next_job(worker: WorkerRecord, joins=None) -> Analysis | Generation | None:
    """Take the first job (of any kind) of a lens the worker serves, in fair order. The conditional UPDATE is
    the lock: of several workers racing for one job exactly one sees rowcount 1 (PostgreSQL re-checks the WHERE
    after the row lock). The claim counts an attempt (a crash cannot report itself); a graceful hand-back gives
    it back (do_requeue_job). One transaction: a database that fails between the claim and reading the job
    back undoes the claim. `joins(kind, job_id)`: a running shared batch's test; a job joins it only from the
    head of the queue, so sharing never takes a job ahead of one that cannot join."""
    for kind, job_id in fair_queue(worker.lenses or []):
        if joins is not None and not joins(kind, job_id):
            return None
        model = JOB_MODELS[kind]
        now = timezone.now()
        with transaction.atomic():
            claimed = model.objects.filter(id=job_id, status=Status.QUEUED, cancel_requested=False).update(
                status=Status.RUNNING,
                worker=worker,
                heartbeat_at=now,
                attempt_started_at=now,
                started_at=Coalesce(F("started_at"), Value(now)),
                attempts=F("attempts") + 1,
                attempt_base=F("progress_done"),
                phase="",
                progress_partial=F("progress_done"),
            )
            if claimed:
                WorkerRecord.objects.filter(pk=worker.pk).update(
                    state=WorkerRecord.State.BUSY, last_heartbeat=now
                )
                job = model.objects.get(pk=job_id)
                transaction.on_commit(lambda job=job: (notify.job_state(job), notify.queue_moved()))
                return job
    return None


def _cancel(job):
    """Queued: cancelled at once, never starts. Running: flagged; the worker stops within one batch (or a
    few decode steps) and marks it cancelled with what it has."""
    if job.is_final:
        return job
    model = type(job)
    now = timezone.now()
    if model.objects.filter(pk=job.pk, status=Status.QUEUED).update(
        status=Status.CANCELLED, cancel_requested=True, finished_at=now, worker=None
    ):
        job.refresh_from_db()
        if model is Analysis:
            signals.job_ended.send(sender=Analysis, job=job)  # its cache followers compute themselves
        transaction.on_commit(lambda: (notify.job_state(job), notify.queue_moved()))
        return job
    model.objects.filter(pk=job.pk, status=Status.RUNNING).update(cancel_requested=True)
    job.refresh_from_db()
    if job.status == Status.RUNNING:
        channel = job.worker.channel_name if job.worker else ""
        transaction.on_commit(lambda: (notify.job_state(job), notify.cancel_to_worker(channel, job)))
    return job


def do_cancel(user, job_id) -> Analysis:
    return _cancel(get_analysis_for(user, job_id, write=True))


def do_cancel_generation(user, generation_id) -> Generation:
    return _cancel(get_generation_for(user, generation_id, write=True))


def is_cancel_requested(job_id: int, kind: str = Analysis.kind) -> bool:
    return JOB_MODELS[kind].objects.filter(pk=job_id, cancel_requested=True).exists()


REQUEUABLE = (Status.FAILED, Status.CANCELLED)


def do_staff_cancel(job_id: int, kind: str = Analysis.kind):
    """Cancel on the owner's behalf (queued: at once; running: flagged)."""
    return _cancel(JOB_MODELS[kind].objects.get(pk=job_id))


def do_requeue(job_id: int, kind: str = Analysis.kind) -> bool:
    """A failed or cancelled job back to the queue, as if submitted now: an analysis' rows stay (the next
    worker resumes after them), attempts and error start again. False if it was not failed/cancelled."""
    model = JOB_MODELS[kind]
    now = timezone.now()
    fresh = {"result": None, "progress_done": 0} if model is Generation else {}
    with transaction.atomic():
        requeued = model.objects.filter(pk=job_id, status__in=REQUEUABLE).update(
            status=Status.QUEUED,
            cancel_requested=False,
            worker=None,
            heartbeat_at=None,
            attempts=0,
            error="",
            queued_at=now,
            started_at=None,  # so that queue wait and run time measure this run, not the first one
            finished_at=None,
            **fresh,
        )
        if not requeued:
            return False
        job = model.objects.get(pk=job_id)
        log.info("%s %s re-queued by staff with %s done kept", kind, job_id, job.progress_done)
        transaction.on_commit(lambda: (notify.job_state(job), ring_doorbell(), notify.queue_moved()))
    return True


def persisted_positions(job_id: int) -> set[int]:
    return set(AnalysisRow.objects.filter(analysis_id=job_id).values_list("position", flat=True))


def row_at(analysis_id: int, position: int) -> dict | None:
    """An analysis' stored row at `position` (what a score is compared with), or None."""
    return (
        AnalysisRow.objects.filter(analysis_id=analysis_id, position=position)
        .values_list("data", flat=True)
        .first()
    )


def do_record_metadata(job_id: int, worker_id: int, metadata: dict, total: int) -> None:
    """This attempt's lens metadata, plus the placement of every attempt whose rows the job holds."""
    with transaction.atomic():  # locked: positions added meanwhile (analyses.growth) are not written over
        job = (
            Analysis.objects.select_for_update()
            .filter(pk=job_id, worker_id=worker_id, status=Status.RUNNING)
            .first()
        )
        if job is not None:
            _record_metadata(job, worker_id, metadata, total)


def _record_metadata(job: Analysis, worker_id: int, metadata: dict, total: int) -> None:
    placement = [metadata.get(key) for key in PLACEMENT_KEYS]
    earlier = list((job.metadata or {}).get("attempt_placements", [])) if job.attempt_base else []
    placements = earlier + ([placement] if placement not in earlier else [])
    kept = {k: v for k, v in (job.metadata or {}).items() if k in KEPT_METADATA}
    grew = kept.get(GREW_WHILE_RUNNING)
    Analysis.objects.filter(pk=job.pk, worker_id=worker_id, status=Status.RUNNING).update(
        metadata={**metadata, "attempt_placements": placements, **kept},
        # positions added since the attempt began count too (it is queued again for them when done)
        progress_total=max(total, job.progress_total) if grew else total,
    )


def do_record_batch(job_id: int, worker_id: int, rows: list[Row | dict]) -> bool:
    """Persist a batch (idempotently), update progress, THEN notify. Returns whether the worker should go
    on: False once the job is no longer its own (re-queued as stale) or a cancel was requested. `rows`: the
    engine's, stored as their JSON shape (Row.to_dict)."""
    rows = [row.to_dict() if isinstance(row, Row) else row for row in rows]
    now = timezone.now()
    with transaction.atomic():
        if not Analysis.objects.filter(pk=job_id, worker_id=worker_id, status=Status.RUNNING).update(
            heartbeat_at=now
        ):
            return False
        AnalysisRow.objects.bulk_create(
            [AnalysisRow(analysis_id=job_id, position=row["position"], data=row) for row in rows],
            ignore_conflicts=True,
        )
        done = AnalysisRow.objects.filter(analysis_id=job_id).count()
        Analysis.objects.filter(pk=job_id).update(progress_done=done)
        job = Analysis.objects.get(pk=job_id)
        transaction.on_commit(lambda: notify.job_rows(job, rows))
    return not job.cancel_requested


def do_record_progress(job_id: int, worker_id: int, phase: str, partial: float | None = None) -> None:
    """Where a running analysis is within its batch (or that it waits for its lens to load), THEN notify.
    Progress only: nothing is lost if it is not written."""
    changes = {"phase": phase, "heartbeat_at": timezone.now()}
    if partial is not None:
        changes["progress_partial"] = partial
    if Analysis.objects.filter(pk=job_id, worker_id=worker_id, status=Status.RUNNING).update(**changes):
        job = Analysis.objects.get(pk=job_id)
        notify.job_progress(job)


def do_record_tokens(generation_id: int, worker_id: int, samples: list[dict], steps: int) -> bool:
    """A running generation's tokens so far (persisted, so a reload shows them), THEN streamed to its owner.
    Returns whether to go on, as do_record_batch."""
    now = timezone.now()
    with transaction.atomic():
        if not Generation.objects.filter(pk=generation_id, worker_id=worker_id, status=Status.RUNNING).update(
            heartbeat_at=now, result={"samples": samples, "partial": True}, progress_done=steps
        ):
            return False
        generation = Generation.objects.get(pk=generation_id)
        transaction.on_commit(lambda: notify.generation_tokens(generation))
    return not generation.cancel_requested


def do_finish_job(
    job_id: int,
    worker_id: int,
    status: str,
    timings: dict | None = None,
    error: str = "",
    *,
    kind: str = Analysis.kind,
    result: dict | None = None,
) -> bool:
    """done / cancelled / failed, only if the job is still this worker's (a stale one may have lost it).
    An analysis gets its summary (and the cache hears of it); a generation its result, and, done and asked
    for, its follow-up analysis, in the same transaction (so neither can be lost without the other)."""
    model = JOB_MODELS[kind]
    with transaction.atomic():
        mine = model.objects.filter(pk=job_id, worker_id=worker_id, status=Status.RUNNING)
        job = mine.select_for_update().first()  # locked: positions added meanwhile are seen (growth)
        if job is None:
            return False
        if model is Analysis and status == Status.DONE and job.metadata.get(GREW_WHILE_RUNNING):
            return _queue_again_for_added_positions(job, worker_id)
        changes = {}
        if model is Analysis:
            untrained = bool(job.metadata.get("untrained"))
            changes["metadata"] = {**job.metadata, "summary": summarize(job_id, untrained=untrained)}
        elif model is Generation and result is not None:
            changes["result"] = result
            changes["progress_done"] = max(
                (len(s.get("token_ids") or []) for s in result["samples"]), default=0
            )
        elif result is not None:  # a probe's answer
            changes.update(result=result, progress_done=F("progress_total"))
        now = timezone.now()
        finished = model.objects.filter(pk=job_id, worker_id=worker_id, status=Status.RUNNING).update(
            status=status,
            phase="",
            finished_at=now,
            heartbeat_at=None,
            timings={**job.timings, **(timings or {})},
            error=error[:2000],
            **changes,
        )
        if not finished:
            return False
        if not any(
            m.objects.filter(worker_id=worker_id, status=Status.RUNNING).exists() for m in JOB_MODELS.values()
        ):
            WorkerRecord.objects.filter(pk=worker_id).update(
                state=WorkerRecord.State.IDLE, last_heartbeat=now
            )
        job.refresh_from_db()
        if model is Analysis:
            if status == Status.DONE:
                rates.record(job)  # the next job's ETA
            signals.job_ended.send(sender=Analysis, job=job)  # done: cached and followers completed
        elif (
            model is Generation and status == Status.DONE and job.analysis_options is not None and job.samples
        ):
            queue_follow_up(job)
        transaction.on_commit(lambda: (notify.job_state(job), notify.queue_moved()))
    return True


def _queue_again_for_added_positions(job: Analysis, worker_id: int) -> bool:
    """Positions were added while this attempt ran (analyses.growth): the job is queued again, and its next
    attempt computes only those (it resumes after the rows it holds). The attempt is given back."""
    metadata = {k: v for k, v in job.metadata.items() if k != GREW_WHILE_RUNNING}
    Analysis.objects.filter(pk=job.pk, worker_id=worker_id, status=Status.RUNNING).update(
        status=Status.QUEUED,
        worker=None,
        heartbeat_at=None,
        attempts=F("attempts") - 1,
        metadata=metadata,
        timings={},
        **_restart(Analysis),
    )
    WorkerRecord.objects.filter(pk=worker_id).update(
        state=WorkerRecord.State.IDLE, last_heartbeat=timezone.now()
    )
    job.refresh_from_db()
    transaction.on_commit(lambda: (notify.job_state(job), ring_doorbell(), notify.queue_moved()))
    return True


def do_fail_job(job_id: int, worker_id: int, error: str, *, kind: str = Analysis.kind) -> bool:
    return do_finish_job(job_id, worker_id, Status.FAILED, error=error, kind=kind)


def do_requeue_job(job_id: int, worker_id: int, error: str = "", *, kind: str = Analysis.kind) -> bool:
    """A worker hands its job back; an analysis' rows stay and the next worker resumes after them (a
    generation starts again: it is deterministic for its seed).

    Without `error` it is stopping (SIGTERM): graceful, so the attempt its claim counted is given back and
    `attempts` counts only crashes and errors. With `error` (the database failed mid-job) the attempt stays
    counted, and a job that has used up its attempts fails instead of going round for ever."""
    model = JOB_MODELS[kind]
    if is_cancel_requested(job_id, kind):
        return do_finish_job(job_id, worker_id, Status.CANCELLED, kind=kind)
    mine = model.objects.filter(pk=job_id, worker_id=worker_id, status=Status.RUNNING)
    if error:
        attempts = mine.values_list("attempts", flat=True).first()
        if attempts is not None and attempts >= settings.LENSWEB_MAX_ATTEMPTS:
            return do_fail_job(
                job_id,
                worker_id,
                f"the database failed {attempts} times while running this {kind}; giving up "
                f"(last error: {error})",
                kind=kind,
            )
    given_back = {} if error else {"attempts": F("attempts") - 1}
    requeued = mine.update(
        status=Status.QUEUED, worker=None, heartbeat_at=None, **given_back, **_restart(model)
    )
    if requeued:
        job = model.objects.get(pk=job_id)
        transaction.on_commit(lambda: (notify.job_state(job), ring_doorbell(), notify.queue_moved()))
    return bool(requeued)


def _restart(model) -> dict:
    """What a job going back to the queue forgets: its phase and share of an unfinished batch, and a
    generation its partial tokens (its next attempt produces them again); an analysis keeps its rows."""
    kept = {"phase": "", "progress_partial": F("progress_done")}
    return (
        {**kept, "result": None, "progress_done": 0, "progress_partial": 0} if model is Generation else kept
    )


def stale_job_changes(job, kind: str, now) -> dict:
    """What a job whose worker went silent becomes: cancelled if that was asked, failed once it has used
    up its attempts (it may be what kills workers), else queued again."""
    if job.cancel_requested:
        return {"status": Status.CANCELLED, "finished_at": now}
    if job.attempts >= settings.LENSWEB_MAX_ATTEMPTS:
        return {
            "status": Status.FAILED,
            "finished_at": now,
            "error": f"the worker running this {kind} stopped {job.attempts} times; giving up",
        }
    return {"status": Status.QUEUED, **_restart(type(job))}


def requeue_stale_jobs(now=None) -> list[int]:
    """Jobs of either kind whose worker stopped heart-beating go back to the queue (an analysis with its
    rows), or are cancelled / failed if a cancel was asked for / they used up their attempts. Any worker
    calls this as it polls. Returns the ids moved."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.LENSWEB_STALE_AFTER)
    stale_q = Q(status=Status.RUNNING) & (
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, attempt_started_at__lt=cutoff)
    )
    moved, jobs = [], []
    for kind, model in JOB_MODELS.items():
        for job in model.objects.filter(stale_q):
            changes = stale_job_changes(job, kind, now)
            if model.objects.filter(stale_q, pk=job.pk).update(worker=None, heartbeat_at=None, **changes):
                moved.append(job.pk)
                jobs.append((model, job.pk))
                log.warning(
                    "%s %s: worker %s stopped heart-beating; now %s",
                    kind,
                    job.pk,
                    job.worker_id,
                    changes["status"],
                )
    WorkerRecord.objects.filter(
        last_heartbeat__lt=cutoff,
        state__in=[WorkerRecord.State.STARTING, WorkerRecord.State.IDLE, WorkerRecord.State.BUSY],
    ).update(state=WorkerRecord.State.LOST)
    if jobs:
        fresh = [model.objects.get(pk=pk) for model, pk in jobs]
        transaction.on_commit(lambda: ([notify.job_state(j) for j in fresh], notify.queue_moved()))
    return moved


def worker_heartbeat(
    worker_id: int,
    jobs=(),
    lens_id: str = "",
    device: str = "",
    memory_bytes: int | None = None,
    cached_lenses: list[str] | None = None,
) -> set[tuple[str, int]]:
    """Refresh the worker's heartbeat and its running jobs' (`jobs`: their (kind, id); several share its
    batches), with what it holds (on the device, in its CPU cache). Returns the jobs whose cancel was asked."""
    now = timezone.now()
    jobs = list(jobs)
    WorkerRecord.objects.filter(pk=worker_id).update(
        last_heartbeat=now,
        state=WorkerRecord.State.BUSY if jobs else WorkerRecord.State.IDLE,
        lens_id=lens_id,
        device=device,
        memory_bytes=memory_bytes,
        cached_lenses=list(cached_lenses or []),
    )
    cancelled = set()
    for kind in {kind for kind, _ in jobs}:
        ids = [job_id for k, job_id in jobs if k == kind]
        mine = JOB_MODELS[kind].objects.filter(pk__in=ids, worker_id=worker_id, status=Status.RUNNING)
        mine.update(heartbeat_at=now)
        asked = JOB_MODELS[kind].objects.filter(pk__in=ids, cancel_requested=True)
        cancelled |= {(kind, job_id) for job_id in asked.values_list("pk", flat=True)}
    return cancelled
