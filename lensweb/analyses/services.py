"""Everything that changes an analysis goes through here (check_* validate and look up, do_* write and
notify on commit), so views, consumers and the worker stay thin and agree on the rules. Queue order: queue.py.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from inference.errors import InputError, LensError, OptionError, UnknownLensError
from inference.limits import Limits
from inference.types import AnalysisInput, AnalysisOptions
from lensweb.cache import services as result_cache

from . import notify
from .engine import get_engine
from .models import PLACEMENT_KEYS, Analysis, AnalysisRow, WorkerRecord
from .queue import fair_queue, queue_position, queue_positions  # noqa: F401  (part of the service API)

log = logging.getLogger(__name__)

Status = Analysis.Status
UNFINISHED = (Status.QUEUED, Status.RUNNING)
OPTION_FIELDS = set(AnalysisOptions.__dataclass_fields__)


class SubmissionError(Exception):
    """A refusal the page shows next to `field` (or above the form when field is None)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class LensUnavailable(SubmissionError):
    """The lens' files cannot be read right now: the server's fault, not the input's. The page says so
    above the form and the API answers 503; the details (paths, torch's text) go to the server log only."""

    retry_after = 60  # seconds: an operator has to fix or replace the lens' files

    def __init__(self, lens_id: str):
        super().__init__(f"the lens {lens_id} is unavailable right now; the operator has been told")
        self.lens_id = lens_id


def limits() -> Limits:
    return Limits(
        max_text_chars=settings.LENSWEB_MAX_TEXT_CHARS,
        max_tokens=settings.LENSWEB_MAX_TOKENS,
        max_best_of_k=settings.LENSWEB_MAX_BEST_OF_K,
    )


# --- submitting -------------------------------------------------------------------------------------


def _option_field(error: Exception) -> str | None:
    first = str(error).split(" ", 1)[0]
    return first if first in OPTION_FIELDS else None


def check_submission(lens_id: str | None, input_data: dict, options_data: dict):
    """Validate with the engine's own types and bounds, and count tokens with the lens' tokenizer.
    Returns (spec, AnalysisInput, AnalysisOptions, number of positions)."""
    spec, inp, options, prepared = check_prepared_submission(lens_id, input_data, options_data)
    return spec, inp, options, len(prepared.positions)


def check_prepared_submission(lens_id: str | None, input_data: dict, options_data: dict):
    """check_submission, returning the PreparedInput (token ids and positions: the result cache's key)."""
    engine = get_engine()
    bounds = limits()
    try:
        spec = engine.get_spec(lens_id) if lens_id else engine.default_lens()
    except UnknownLensError as exc:
        raise SubmissionError(str(exc), "lens") from exc
    try:
        inp = AnalysisInput.from_dict(input_data).validate(bounds)
    except InputError as exc:
        raise SubmissionError(str(exc), "text") from exc
    try:
        options = AnalysisOptions.from_dict(options_data).validate(bounds)
    except (OptionError, TypeError) as exc:
        raise SubmissionError(str(exc), _option_field(exc)) from exc
    if options.last_n_messages is not None and not inp.is_chat:
        raise SubmissionError("last N messages applies to chats only", "last_n_messages")
    try:
        prepared = engine.prepare(spec, inp, options, bounds)
    except InputError as exc:
        raise SubmissionError(str(exc), "text") from exc
    except OptionError as exc:
        raise SubmissionError(str(exc), _option_field(exc)) from exc
    except (LensError, OSError) as exc:  # its checkpoint or model files: logged, not shown
        log.error("lens %s is unavailable: %s", spec.id, exc, exc_info=True)
        raise LensUnavailable(spec.id) from None
    if not prepared.positions:
        raise SubmissionError("there are no positions to analyse in this input", "text")
    return spec, inp, options, prepared


def check_capacity(user) -> None:
    check_queue_caps(Analysis, user, settings.LENSWEB_MAX_QUEUED_PER_USER, "analyses")


def check_queue_caps(model, user, per_user: int, noun: str) -> None:
    """The per-user cap (waiting + running) and the global queue cap, for any kind of job of record."""
    mine = model.objects.filter(owner=user, status__in=UNFINISHED).count()
    if mine >= per_user:
        raise SubmissionError(
            f"you have {mine} {noun} waiting or running; the limit is {per_user}. "
            "Cancel one or wait for one to finish."
        )
    queued = model.objects.filter(status=Status.QUEUED).count()
    if queued >= settings.LENSWEB_MAX_QUEUE:
        raise SubmissionError(
            f"the queue is full ({queued} {noun} waiting); please try again in a few minutes."
        )


def do_submit(
    user, lens_id: str | None, input_data: dict, options_data: dict, *, limited: bool = True
) -> Analysis:
    """`limited=False` (the cache warmer's service user) skips the per-user caps and the daily quota."""
    spec, inp, options, prepared = check_prepared_submission(lens_id, input_data, options_data)
    total = len(prepared.positions)
    key = result_cache.key_for(spec, prepared, options)
    with transaction.atomic():
        # Lock the owner's row so two simultaneous submits cannot both pass the per-user cap.
        get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
        hit = result_cache.lookup(key)  # a hit takes no place in the queue and costs no compute quota
        if limited and hit is None:
            from lensweb.accounts.quotas import check_daily_positions  # quotas imports this module

            check_capacity(user)
            check_daily_positions(user, total)
        elif limited:  # but its rows are copied for the user: capped per day (a refusal undoes the hit count)
            result_cache.check_daily_cached_positions(user, total)
        job = Analysis.objects.create(
            owner=user,
            lens_id=spec.id,
            input=inp.to_dict(),
            options=options.to_dict(),
            progress_total=total,
        )
        result_cache.attach(job, key, hit)  # a hit: done now; an identical job unfinished: waits for it
        transaction.on_commit(lambda: (notify.job_created(job), ring_doorbell(), notify.queue_moved()))
    return job


# --- the queue ----------------------------------------------------------------------------------------


def claim_next_job(worker: WorkerRecord) -> Analysis | None:
    """Take the first job in fair order. The conditional UPDATE is the lock: of several workers racing
    for one job exactly one sees rowcount 1 (PostgreSQL re-checks the WHERE after the row lock). The claim
    counts an attempt (a crash cannot report itself); a graceful hand-back gives it back (do_requeue_job).
    One transaction: a database that fails between the claim and reading the job back undoes the claim."""
    for job_id in fair_queue():
        now = timezone.now()
        with transaction.atomic():
            claimed = Analysis.objects.filter(id=job_id, status=Status.QUEUED, cancel_requested=False).update(
                status=Status.RUNNING,
                worker=worker,
                heartbeat_at=now,
                attempt_started_at=now,
                started_at=Coalesce(F("started_at"), Value(now)),
                attempts=F("attempts") + 1,
                attempt_base=F("progress_done"),
            )
            if claimed:
                WorkerRecord.objects.filter(pk=worker.pk).update(
                    state=WorkerRecord.State.BUSY, last_heartbeat=now
                )
                job = Analysis.objects.get(pk=job_id)
                transaction.on_commit(lambda job=job: (notify.job_state(job), notify.queue_moved()))
                return job
    return None


# --- cancelling ------------------------------------------------------------------------------------


def check_job_for_user(user, job_id) -> Analysis:
    """The job if `user` owns it; Analysis.DoesNotExist otherwise (someone else's job is 'not found')."""
    return Analysis.objects.get(pk=job_id, owner=user)


def do_cancel(user, job_id) -> Analysis:
    """Queued: cancelled at once, never starts. Running: flagged; the worker stops within one batch and
    marks it cancelled with its partial rows."""
    job = check_job_for_user(user, job_id)
    if job.is_final:
        return job
    now = timezone.now()
    if Analysis.objects.filter(pk=job.pk, status=Status.QUEUED).update(
        status=Status.CANCELLED, cancel_requested=True, finished_at=now, worker=None
    ):
        job.refresh_from_db()
        result_cache.job_ended(job)  # its followers compute themselves
        transaction.on_commit(lambda: (notify.job_state(job), notify.queue_moved()))
        return job
    Analysis.objects.filter(pk=job.pk, status=Status.RUNNING).update(cancel_requested=True)
    job.refresh_from_db()
    if job.status == Status.RUNNING:
        channel = job.worker.channel_name if job.worker else ""
        transaction.on_commit(lambda: (notify.job_state(job), notify.cancel_to_worker(channel, job.pk)))
    return job


def is_cancel_requested(job_id: int) -> bool:
    return Analysis.objects.filter(pk=job_id, cancel_requested=True).exists()


# --- what workers report -------------------------------------------------------------------------------


def persisted_positions(job_id: int) -> set[int]:
    return set(AnalysisRow.objects.filter(analysis_id=job_id).values_list("position", flat=True))


def do_record_metadata(job_id: int, worker_id: int, metadata: dict, total: int) -> None:
    """This attempt's lens metadata, plus the placement of every attempt whose rows the job holds."""
    job = Analysis.objects.filter(pk=job_id, worker_id=worker_id, status=Status.RUNNING).first()
    if job is None:
        return
    placement = [metadata.get(key) for key in PLACEMENT_KEYS]
    earlier = list((job.metadata or {}).get("attempt_placements", [])) if job.attempt_base else []
    placements = earlier + ([placement] if placement not in earlier else [])
    Analysis.objects.filter(pk=job_id, worker_id=worker_id, status=Status.RUNNING).update(
        metadata={**metadata, "attempt_placements": placements}, progress_total=total
    )


def do_record_batch(job_id: int, worker_id: int, rows: list[dict]) -> bool:
    """Persist a batch (idempotently), update progress, THEN notify. Returns whether the worker should go
    on: False once the job is no longer its own (re-queued as stale) or a cancel was requested."""
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


def summarize(job_id: int) -> dict:
    return summarize_rows(AnalysisRow.objects.filter(analysis_id=job_id).values_list("data", flat=True))


def summarize_rows(rows) -> dict:
    mses = [data["mse"] for data in rows if isinstance(data.get("mse"), int | float)]
    if not mses:
        return {"rows": 0}
    return {"rows": len(mses), "mean_mse": sum(mses) / len(mses), "max_mse": max(mses)}


def do_finish_job(
    job_id: int, worker_id: int, status: str, timings: dict | None = None, error: str = ""
) -> bool:
    """done / cancelled / failed, only if the job is still this worker's (a stale one may have lost it)."""
    job = Analysis.objects.filter(pk=job_id, worker_id=worker_id, status=Status.RUNNING).first()
    if job is None:
        return False
    metadata = {**job.metadata, "summary": summarize(job_id)}
    now = timezone.now()
    finished = Analysis.objects.filter(pk=job_id, worker_id=worker_id, status=Status.RUNNING).update(
        status=status,
        finished_at=now,
        heartbeat_at=None,
        metadata=metadata,
        timings={**job.timings, **(timings or {})},
        error=error[:2000],
    )
    WorkerRecord.objects.filter(pk=worker_id).update(state=WorkerRecord.State.IDLE, last_heartbeat=now)
    if finished:
        job.refresh_from_db()
        result_cache.job_ended(job)  # done: stored and followers completed; else followers re-queued
        transaction.on_commit(lambda: (notify.job_state(job), notify.queue_moved()))
    return bool(finished)


def do_fail_job(job_id: int, worker_id: int, error: str) -> bool:
    return do_finish_job(job_id, worker_id, Status.FAILED, error=error)


def do_requeue_job(job_id: int, worker_id: int, error: str = "") -> bool:
    """A worker hands its job back; the rows stay and the next worker resumes after them.

    Without `error` it is stopping (SIGTERM): graceful, so the attempt its claim counted is given back and
    `attempts` counts only crashes and errors. With `error` (the database failed mid-job) the attempt stays
    counted, and a job that has used up its attempts fails instead of going round for ever."""
    if is_cancel_requested(job_id):
        return do_finish_job(job_id, worker_id, Status.CANCELLED)
    mine = Analysis.objects.filter(pk=job_id, worker_id=worker_id, status=Status.RUNNING)
    if error:
        attempts = mine.values_list("attempts", flat=True).first()
        if attempts is not None and attempts >= settings.LENSWEB_MAX_ATTEMPTS:
            return do_fail_job(
                job_id,
                worker_id,
                f"the database failed {attempts} times while running this analysis; giving up "
                f"(last error: {error})",
            )
    given_back = {} if error else {"attempts": F("attempts") - 1}
    requeued = mine.update(status=Status.QUEUED, worker=None, heartbeat_at=None, **given_back)
    if requeued:
        job = Analysis.objects.get(pk=job_id)
        transaction.on_commit(lambda: (notify.job_state(job), ring_doorbell(), notify.queue_moved()))
    return bool(requeued)


def stale_job_changes(job, kind: str, now) -> dict:
    """What a job (analysis or generation) whose worker went silent becomes: cancelled if that was asked,
    failed once it has used up its attempts (it may be what kills workers), else queued again."""
    if job.cancel_requested:
        return {"status": Status.CANCELLED, "finished_at": now}
    if job.attempts >= settings.LENSWEB_MAX_ATTEMPTS:
        return {
            "status": Status.FAILED,
            "finished_at": now,
            "error": f"the worker running this {kind} stopped {job.attempts} times; giving up",
        }
    return {"status": Status.QUEUED}


def requeue_stale_jobs(now=None) -> list[int]:
    """Jobs whose worker stopped heart-beating go back to the queue with their rows (or are cancelled /
    failed if a cancel was asked for / they used up their attempts). Any worker calls this as it polls."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.LENSWEB_STALE_AFTER)
    stale_q = Q(status=Status.RUNNING) & (
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, attempt_started_at__lt=cutoff)
    )
    moved = []
    for job in Analysis.objects.filter(stale_q):
        changes = stale_job_changes(job, "analysis", now)
        if Analysis.objects.filter(stale_q, pk=job.pk).update(worker=None, heartbeat_at=None, **changes):
            moved.append(job.pk)
            log.warning(
                "analysis %s: worker %s stopped heart-beating; now %s",
                job.pk,
                job.worker_id,
                changes["status"],
            )
    WorkerRecord.objects.filter(
        last_heartbeat__lt=cutoff,
        state__in=[WorkerRecord.State.STARTING, WorkerRecord.State.IDLE, WorkerRecord.State.BUSY],
    ).update(state=WorkerRecord.State.LOST)
    if moved:
        jobs = list(Analysis.objects.filter(pk__in=moved))
        transaction.on_commit(lambda: ([notify.job_state(j) for j in jobs], notify.queue_moved()))
    return moved


# --- worker records and the doorbell -------------------------------------------------------------------


def register_worker(channel_name: str = "", device: str = "") -> WorkerRecord:
    host, pid = socket.gethostname(), os.getpid()
    return WorkerRecord.objects.create(
        name=f"{host}:{pid}:{uuid.uuid4().hex[:8]}",
        host=host,
        pid=pid,
        channel_name=channel_name,
        device=device,
        state=WorkerRecord.State.IDLE,
    )


def worker_heartbeat(
    worker_id: int, job_id: int | None, lens_id: str = "", device: str = "", memory_bytes: int | None = None
) -> bool:
    """Refresh the worker's and its job's heartbeat. Returns whether a cancel was requested for the job."""
    now = timezone.now()
    WorkerRecord.objects.filter(pk=worker_id).update(
        last_heartbeat=now,
        state=WorkerRecord.State.BUSY if job_id else WorkerRecord.State.IDLE,
        lens_id=lens_id,
        device=device,
        memory_bytes=memory_bytes,
    )
    if job_id is None:
        return False
    Analysis.objects.filter(pk=job_id, worker_id=worker_id, status=Status.RUNNING).update(heartbeat_at=now)
    return is_cancel_requested(job_id)


def worker_listens_on(worker_id: int, channel_name: str) -> None:
    """The worker's own channel changed (its consumer restarted after the channel layer failed): doorbells
    and cancels go to the new one."""
    WorkerRecord.objects.filter(pk=worker_id).update(channel_name=channel_name)


def worker_stopped(worker_id: int) -> None:
    WorkerRecord.objects.filter(pk=worker_id).update(
        state=WorkerRecord.State.STOPPED, last_heartbeat=timezone.now()
    )


def live_workers():
    cutoff = timezone.now() - timedelta(seconds=settings.LENSWEB_STALE_AFTER)
    return WorkerRecord.objects.filter(
        last_heartbeat__gte=cutoff, state__in=[WorkerRecord.State.IDLE, WorkerRecord.State.BUSY]
    )


def ring_doorbell() -> None:
    """Wake idle workers on their own channels (the shared channel reaches only one, maybe a busy one);
    with none known, ring the shared channel. A lost ring costs latency only: workers also poll."""
    channels = [
        c
        for c in live_workers().filter(state=WorkerRecord.State.IDLE).values_list("channel_name", flat=True)
        if c
    ]
    notify.doorbell(channels)
