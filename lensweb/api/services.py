"""Generations, the way the core handles analyses: check_* validate, do_* write, the row is the job of
record, a conditional UPDATE is the claim. Bounds come from the core (`services.limits()`), so a
generation, an analysis and the engine agree."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from inference.errors import InputError, LensError, OptionError, UnknownLensError
from inference.types import AnalysisInput, AnalysisOptions, GenerationOptions
from lensweb.accounts.quotas import check_daily_generation_tokens
from lensweb.analyses import services as analyses
from lensweb.analyses.engine import get_engine
from lensweb.analyses.models import WorkerRecord
from lensweb.analyses.services import LensUnavailable, SubmissionError

from .models import Generation

log = logging.getLogger(__name__)

Status = Generation.Status
UNFINISHED = (Status.QUEUED, Status.RUNNING)
GENERATION_OPTION_FIELDS = set(GenerationOptions.__dataclass_fields__)
# A running generation polls its cancel flag at most this often (the engine asks every decode step).
CANCEL_POLL_SECONDS = 0.5


# --- submitting -------------------------------------------------------------------------------------


def check_generation_submission(lens_id: str | None, input_data: dict, options_data: dict):
    """(spec, AnalysisInput, GenerationOptions), or SubmissionError naming the field."""
    engine = get_engine()
    bounds = analyses.limits()
    try:
        spec = engine.get_spec(lens_id) if lens_id else engine.default_lens()
    except UnknownLensError as exc:
        raise SubmissionError(str(exc), "lens") from exc
    try:
        inp = AnalysisInput.from_dict(input_data).validate(bounds)
    except InputError as exc:
        raise SubmissionError(str(exc), "messages" if "messages" in input_data else "text") from exc
    try:
        unknown = set(options_data) - GENERATION_OPTION_FIELDS
        if unknown:
            raise OptionError(f"unknown option(s): {', '.join(sorted(unknown))}")
        options = GenerationOptions(**options_data).validate(bounds)
        if not isinstance(options.chat_reply, bool):  # GenerationOptions.validate does not check it
            raise OptionError(f"chat_reply must be true or false, got {options.chat_reply!r}")
        if options.temperature == 0 and options.n > 1:  # transformers refuses greedy with several samples
            raise OptionError(
                "n must be 1 with temperature 0 (greedy decoding gives one answer); raise temperature"
            )
    except OptionError as exc:
        first = str(exc).split(" ", 1)[0]
        raise SubmissionError(str(exc), first if first in GENERATION_OPTION_FIELDS else None) from exc
    try:
        # The prompt's token count, with the lens' own tokenizer (the same bound as an analysis').
        engine.prepare(spec, inp, AnalysisOptions(), bounds)
    except InputError as exc:
        raise SubmissionError(str(exc), "messages" if inp.is_chat else "text") from exc
    except (LensError, OSError) as exc:  # its checkpoint or model files: logged, not shown
        log.error("lens %s is unavailable: %s", spec.id, exc, exc_info=True)
        raise LensUnavailable(spec.id) from None
    return spec, inp, options


def check_generation_capacity(user) -> None:
    analyses.check_queue_caps(
        Generation, user, settings.LENSWEB_MAX_QUEUED_GENERATIONS_PER_USER, "generations"
    )


def do_submit_generation(user, lens_id: str | None, input_data: dict, options_data: dict) -> Generation:
    """Validate, check the caps (QuotaExceeded, SubmissionError) and queue; rings the workers' doorbell."""
    spec, inp, options = check_generation_submission(lens_id, input_data, options_data)
    with transaction.atomic():
        # As the core does: lock the owner's row so two simultaneous submits cannot both pass the caps.
        get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
        check_generation_capacity(user)
        check_daily_generation_tokens(user, options.n * options.max_new_tokens)
        generation = Generation.objects.create(
            owner=user, lens_id=spec.id, input=inp.to_dict(), options=options.to_dict()
        )
        transaction.on_commit(analyses.ring_doorbell)
    return generation


def queue_position(generation: Generation) -> int | None:
    """FIFO: the number of queued generations ahead of this one, plus one."""
    if generation.status != Status.QUEUED:
        return None
    ahead = Generation.objects.filter(status=Status.QUEUED).filter(
        Q(queued_at__lt=generation.queued_at) | Q(queued_at=generation.queued_at, id__lt=generation.pk)
    )
    return ahead.count() + 1


# --- reading and cancelling --------------------------------------------------------------------------


def check_generation_for_user(user, generation_id) -> Generation:
    """The generation if `user` owns it (staff: any); Generation.DoesNotExist otherwise."""
    if user.is_staff:
        return Generation.objects.get(pk=generation_id)
    return Generation.objects.get(pk=generation_id, owner=user)


def do_cancel_generation(generation: Generation) -> Generation:
    """Queued: cancelled at once. Running: flagged; the engine stops within a decode step or so."""
    if generation.is_final:
        return generation
    now = timezone.now()
    if not Generation.objects.filter(pk=generation.pk, status=Status.QUEUED).update(
        status=Status.CANCELLED, cancel_requested=True, finished_at=now, worker=None
    ):
        Generation.objects.filter(pk=generation.pk, status=Status.RUNNING).update(cancel_requested=True)
    generation.refresh_from_db()
    return generation


# --- the worker's side -------------------------------------------------------------------------------


def claim_next_generation(worker: WorkerRecord) -> Generation | None:
    """The oldest queued generation, claimed by a conditional UPDATE (the lock, as in claim_next_job)."""
    candidates = Generation.objects.filter(status=Status.QUEUED, cancel_requested=False).order_by(
        "queued_at", "id"
    )
    for generation_id in candidates.values_list("id", flat=True)[:50]:
        now = timezone.now()
        claimed = Generation.objects.filter(
            pk=generation_id, status=Status.QUEUED, cancel_requested=False
        ).update(status=Status.RUNNING, worker=worker, started_at=now, attempts=F("attempts") + 1)
        if claimed:
            WorkerRecord.objects.filter(pk=worker.pk).update(
                state=WorkerRecord.State.BUSY, last_heartbeat=now
            )
            return Generation.objects.get(pk=generation_id)
    return None


def cancel_checker(generation_id: int):
    """should_cancel for the engine: reads the flag at most every CANCEL_POLL_SECONDS."""
    state = {"at": 0.0, "cancel": False}

    def should_cancel() -> bool:
        now = time.monotonic()
        if not state["cancel"] and now - state["at"] >= CANCEL_POLL_SECONDS:
            state["at"] = now
            state["cancel"] = Generation.objects.filter(pk=generation_id, cancel_requested=True).exists()
        return state["cancel"]

    return should_cancel


def run_generation(lens, generation: Generation, should_cancel=None, timings: dict | None = None) -> bool:
    """Generate with the engine and store the result (done, or cancelled with what was generated)."""
    started = time.monotonic()
    result = get_engine().generate(
        lens,
        AnalysisInput.from_dict(generation.input),
        GenerationOptions(**generation.options),
        should_cancel=should_cancel,
        limits=analyses.limits(),
    )
    status = Status.CANCELLED if result.get("cancelled") else Status.DONE
    timings = {**(timings or {}), "generate_s": round(time.monotonic() - started, 3)}
    return do_finish_generation(generation.pk, generation.worker_id, status, result=result, timings=timings)


def do_finish_generation(
    generation_id: int, worker_id: int | None, status: str, *, result=None, timings=None, error: str = ""
) -> bool:
    """Final state, only if the generation is still this worker's (a stale one may have lost it)."""
    now = timezone.now()
    finished = Generation.objects.filter(pk=generation_id, worker_id=worker_id, status=Status.RUNNING).update(
        status=status, result=result, timings=timings or {}, error=error[:2000], finished_at=now
    )
    if worker_id is not None:
        WorkerRecord.objects.filter(pk=worker_id).update(state=WorkerRecord.State.IDLE, last_heartbeat=now)
    return bool(finished)


def do_fail_generation(generation_id: int, worker_id: int | None, error: str, timings=None) -> bool:
    return do_finish_generation(generation_id, worker_id, Status.FAILED, error=error, timings=timings)


def requeue_stale_generations(now=None) -> list[int]:
    """Running generations whose worker stopped heart-beating: queued again, or failed after
    LENSWEB_MAX_ATTEMPTS, or cancelled if that was asked for."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.LENSWEB_STALE_AFTER)
    stale_q = Q(status=Status.RUNNING) & (
        Q(worker__isnull=True) | Q(worker__last_heartbeat__lt=cutoff) | ~Q(worker__state__in=["idle", "busy"])
    )
    moved = []
    for generation in Generation.objects.filter(stale_q):
        changes = analyses.stale_job_changes(generation, "generation", now)
        if Generation.objects.filter(
            pk=generation.pk, status=Status.RUNNING, worker_id=generation.worker_id
        ).update(worker=None, **changes):
            moved.append(generation.pk)
            log.warning("generation %s: its worker stopped; now %s", generation.pk, changes["status"])
    return moved
