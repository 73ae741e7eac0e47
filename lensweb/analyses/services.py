"""Everything that changes a job goes through here (check_* validate and look up, do_* write and notify on
commit), so views, the API, warm_cache, consumers and the worker stay thin and agree on the rules. One
lifecycle for both kinds of job, analyses and generations (models.Job); queue order: queue.py. Refusals are
typed (errors.py); the caller maps them (a form error, an API status, a CLI line).
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
from inference.options import option_names
from inference.rows import Row
from inference.types import AnalysisInput, AnalysisOptions, GenerationOptions

from . import notify, quotas, rates, signals
from .engine import get_engine
from .errors import LensUnavailable, NoWorker, QueueFull, SubmissionError
from .families import is_nla
from .limits import limits  # noqa: F401  (service API)
from .models import PLACEMENT_KEYS, Analysis, AnalysisRow, Generation, WorkerRecord
from .queue import JOB_MODELS, fair_queue, queue_position, queue_positions  # noqa: F401  (service API)

log = logging.getLogger(__name__)

Status = Analysis.Status
UNFINISHED = (Status.QUEUED, Status.RUNNING)
OPTION_FIELDS = option_names(AnalysisOptions)
GENERATION_OPTION_FIELDS = option_names(GenerationOptions)
# A running generation persists (and streams) its tokens at most this often.
TOKENS_EVERY_SECONDS = 0.3


# --- the result cache's port ---------------------------------------------------------------------------


class NoResultStore:
    """What the core asks a result cache at submit. lensweb.cache plugs itself in (its AppConfig.ready());
    without it every submission is computed."""

    @staticmethod
    def key_for(spec, prepared, options, owner=None):
        return None

    @staticmethod
    def lookup(key):
        return None

    @staticmethod
    def check_daily_cached_positions(user, adding: int) -> None:
        return None

    @staticmethod
    def attach(job, key, hit) -> None:
        return None

    @staticmethod
    def warm(spec) -> None:
        """Compute what key_for needs of a lens ahead of the first submission (web start-up)."""
        return None

    @staticmethod
    def prefix_sources(owner, lens_id: str, placement: dict, keyed: dict, limit: int) -> list:
        """Cached results `owner` may reuse a prefix of: (label, token ids, rows loader) each."""
        return []

    @staticmethod
    def detach(job) -> None:
        """`job` no longer computes the result its key names (it grew): store nothing under that key."""
        return None


result_store = NoResultStore()
# Set on a running analysis that positions were added to (analyses.growth): done, it is queued again.
GREW_WHILE_RUNNING = "grew_while_running"
# What a job's metadata keeps when an attempt records its lens' (the rest is that attempt's): positions
# added while it ran, and the rows it took from an earlier analysis' prefix (analyses.prefixes).
KEPT_METADATA = (GREW_WHILE_RUNNING, "reused_positions", "reused_from")
# What a result copied from the cache, or waiting for another job's, says of itself (lensweb.cache writes
# them): not so once it grows (analyses.growth), never stored with a cached result.
COPY_MARKS = ("cached", "computed_seconds", "followed")


def use_result_store(store) -> None:
    global result_store
    result_store = store


# --- submitting -------------------------------------------------------------------------------------


def _option_field(error: Exception, fields=OPTION_FIELDS) -> str | None:
    first = str(error).split(" ", 1)[0]
    return first if first in fields else None


def _spec(engine, lens_id: str | None):
    try:
        return engine.get_spec(lens_id) if lens_id else engine.default_lens()
    except UnknownLensError as exc:
        raise SubmissionError(str(exc), "lens") from exc


def _input(input_data: dict, bounds: Limits, field: str | None = None) -> AnalysisInput:
    """`field`: where the form shows an input error (the analysis form has one "text" field for both)."""
    try:
        return AnalysisInput.from_dict(input_data).validate(bounds)
    except (InputError, TypeError) as exc:
        raise SubmissionError(
            str(exc), field or ("messages" if "messages" in input_data else "text")
        ) from exc


def _analysis_options(options_data: dict, bounds: Limits) -> AnalysisOptions:
    try:
        return AnalysisOptions.from_dict(options_data).validate(bounds)
    except (OptionError, TypeError) as exc:
        raise SubmissionError(str(exc), _option_field(exc)) from exc


def _prepare(engine, spec, inp, options, bounds, field: str | None = None):
    try:
        return engine.prepare(spec, inp, options, bounds)
    except InputError as exc:
        raise SubmissionError(str(exc), field or ("messages" if inp.is_chat else "text")) from exc
    except OptionError as exc:
        raise SubmissionError(str(exc), _option_field(exc)) from exc
    except (LensError, OSError) as exc:  # its checkpoint or model files: logged, not shown
        log.error("lens %s is unavailable: %s", spec.id, exc, exc_info=True)
        raise LensUnavailable(spec.id) from None


def check_submission(lens_id: str | None, input_data: dict, options_data: dict):
    """Validate with the engine's own types and bounds, and count tokens with the lens' tokenizer.
    Returns (spec, AnalysisInput, AnalysisOptions, number of positions)."""
    spec, inp, options, prepared = check_prepared_submission(lens_id, input_data, options_data)
    return spec, inp, options, len(prepared.positions)


def check_prepared_submission(lens_id: str | None, input_data: dict, options_data: dict):
    """check_submission, returning the PreparedInput (token ids and positions: the result cache's key)."""
    engine = get_engine()
    bounds = limits()
    spec = _spec(engine, lens_id)
    inp = _input(input_data, bounds, "text")
    options = _analysis_options(options_data, bounds)
    if options.last_n_messages is not None and not inp.is_chat:
        raise SubmissionError("last N messages applies to chats only", "last_n_messages")
    prepared = _prepare(engine, spec, inp, options, bounds, "text")
    if not prepared.positions:
        raise SubmissionError("there are no positions to analyse in this input", "text")
    return spec, inp, options, prepared


def check_generation_submission(lens_id: str | None, input_data: dict, options_data: dict):
    """(spec, AnalysisInput, GenerationOptions), or SubmissionError naming the field."""
    engine = get_engine()
    bounds = limits()
    spec = _spec(engine, lens_id)
    inp = _input(input_data, bounds)
    try:
        options = GenerationOptions.from_dict(options_data).validate(bounds)
        if options.temperature == 0 and options.n > 1:  # transformers refuses greedy with several samples
            raise OptionError(
                "n must be 1 with temperature 0 (greedy decoding gives one answer); raise temperature"
            )
    except (OptionError, TypeError) as exc:
        raise SubmissionError(str(exc), _option_field(exc, GENERATION_OPTION_FIELDS)) from exc
    # The prompt's token count, with the lens' own tokenizer (the same bound as an analysis').
    _prepare(engine, spec, inp, AnalysisOptions(), bounds)
    return spec, inp, options


def check_queue_caps(model, user, per_user: int, noun: str) -> None:
    """The per-user cap (waiting + running) and the global queue cap (both kinds: one queue)."""
    mine = model.objects.filter(owner=user, status__in=UNFINISHED).count()
    if mine >= per_user:
        raise QueueFull(
            f"you have {mine} {noun} waiting or running; the limit is {per_user}. "
            "Cancel one or wait for one to finish."
        )
    queued = sum(m.objects.filter(status=Status.QUEUED).count() for m in JOB_MODELS.values())
    if queued >= settings.LENSWEB_MAX_QUEUE:
        raise QueueFull(f"the queue is full ({queued} jobs waiting); please try again in a few minutes.")


def check_capacity(user) -> None:
    check_queue_caps(Analysis, user, settings.LENSWEB_MAX_QUEUED_PER_USER, "analyses")


def check_generation_capacity(user) -> None:
    check_queue_caps(Generation, user, settings.LENSWEB_MAX_QUEUED_GENERATIONS_PER_USER, "generations")


def check_worker_available() -> None:
    if not live_workers().exists():
        raise NoWorker()


def _lock_owner(user) -> None:
    """Serialise one user's submissions, so two at once cannot both pass the caps."""
    get_user_model().objects.select_for_update().filter(pk=user.pk).exists()


def do_submit(
    user,
    lens_id: str | None,
    input_data: dict,
    options_data: dict,
    *,
    limited: bool = True,
    require_worker: bool = False,
) -> Analysis:
    """The one way an analysis is queued (form, API, warm_cache, a generation's follow-up): validate and
    tokenize once, ask the result cache, check the caps, create the row, ring the doorbell after commit.
    `limited=False` (the cache warmer's service user) skips the per-user caps and the daily quota;
    `require_worker` refuses (NoWorker) a job that would wait for a worker that is not there."""
    spec, inp, options, prepared = check_prepared_submission(lens_id, input_data, options_data)
    total = len(prepared.positions)
    key = result_store.key_for(spec, prepared, options, user)
    with transaction.atomic():
        _lock_owner(user)
        hit = result_store.lookup(key)  # a hit takes no place in the queue and costs no compute quota
        if hit is None:
            if limited:
                quotas.check_daily_positions(user, total)
                check_capacity(user)
            if require_worker:
                check_worker_available()
        elif limited:  # but its rows are copied for the user: capped per day (a refusal undoes the hit count)
            result_store.check_daily_cached_positions(user, total)
        job = Analysis.objects.create(
            owner=user,
            lens_id=spec.id,
            input=inp.to_dict(),
            options=options.to_dict(),
            progress_total=total,
        )
        result_store.attach(job, key, hit)  # a hit: done now; an identical job unfinished: waits for it
        transaction.on_commit(lambda: (notify.job_created(job), ring_doorbell(), notify.queue_moved()))
    return job


def do_submit_generation(
    user,
    lens_id: str | None,
    input_data: dict,
    options_data: dict,
    *,
    then_analyse: dict | None = None,
    require_worker: bool = False,
) -> Generation:
    """Queue a generation; with `then_analyse` (analysis options) its result is analysed when it is done
    (the conversation with the reply, or the text continued), as one more submission by the same user."""
    spec, inp, options = check_generation_submission(lens_id, input_data, options_data)
    analysis_options = None
    if then_analyse is not None:
        if not isinstance(then_analyse, dict):
            raise SubmissionError("the analysis options must be an object", "analysis_options")
        try:
            analysis_options = _analysis_options(then_analyse, limits())
        except SubmissionError as exc:  # named as the caller sent it: the follow-up's options
            field = f"analysis_options.{exc.field}" if exc.field else "analysis_options"
            raise SubmissionError(exc.message, field) from exc.__cause__
        if analysis_options.last_n_messages is not None and not (inp.is_chat or options.chat_reply):
            raise SubmissionError("last N messages applies to chats only", "analysis_options.last_n_messages")
        if options.n != 1:
            raise SubmissionError("generate, then analyse takes one sample (n = 1)", "n")
        analysis_options = analysis_options.to_dict()
    with transaction.atomic():
        _lock_owner(user)
        quotas.check_daily_generation_tokens(user, options.n * options.max_new_tokens)
        check_generation_capacity(user)
        if require_worker:
            check_worker_available()
        generation = Generation.objects.create(
            owner=user,
            lens_id=spec.id,
            input=inp.to_dict(),
            options=options.to_dict(),
            progress_total=options.max_new_tokens,
            analysis_options=analysis_options,
        )
        transaction.on_commit(lambda: (notify.job_created(generation), ring_doorbell(), notify.queue_moved()))
    return generation


def do_analyse_sample(user, generation_id, sample_index, options_data: dict) -> Analysis:
    """ "Analyse" on a generation's sample: the conversation with that reply (or the text continued)."""
    generation = get_generation_for(user, generation_id, write=True)
    samples = generation.samples
    if not isinstance(sample_index, int) or not 0 <= sample_index < len(samples):
        raise SubmissionError(f"generation #{generation.pk} has no sample {sample_index!r}", "sample")
    if (generation.result or {}).get("partial"):
        raise SubmissionError("this generation is still running; analyse it when it is done", "sample")
    return do_submit(user, generation.lens_id, generation.analysis_input(sample_index), options_data)


def _queue_follow_up(generation: Generation) -> None:
    """Inside the transaction that finished `generation`: its analysis queued, or why not."""
    try:
        with transaction.atomic():
            follow_up = do_submit(
                generation.owner,
                generation.lens_id,
                generation.analysis_input(0),
                generation.analysis_options,
            )
    except SubmissionError as exc:
        Generation.objects.filter(pk=generation.pk).update(follow_up_error=exc.message[:2000])
        log.info("generation %s: its analysis was refused: %s", generation.pk, exc.message)
        return
    Generation.objects.filter(pk=generation.pk).update(follow_up=follow_up)
    generation.follow_up = follow_up


# --- access --------------------------------------------------------------------------------------------


def _get_for(model, user, job_id, write: bool):
    """The one access rule for a job: its owner may do anything; staff may read any; anyone else gets
    DoesNotExist (someone else's job is 'not found', not 'forbidden')."""
    if user.is_staff and not write:
        return model.objects.get(pk=job_id)
    return model.objects.get(pk=job_id, owner=user)


def get_analysis_for(user, job_id, write: bool = False) -> Analysis:
    return _get_for(Analysis, user, job_id, write)


def get_generation_for(user, generation_id, write: bool = False) -> Generation:
    return _get_for(Generation, user, generation_id, write)


# --- the queue ----------------------------------------------------------------------------------------


def claim_next_job(worker: WorkerRecord) -> Analysis | Generation | None:
    """Take the first job (of either kind) in fair order. The conditional UPDATE is the lock: of several
    workers racing for one job exactly one sees rowcount 1 (PostgreSQL re-checks the WHERE after the row
    lock). The claim counts an attempt (a crash cannot report itself); a graceful hand-back gives it back
    (do_requeue_job). One transaction: a database that fails between the claim and reading the job back
    undoes the claim."""
    for kind, job_id in fair_queue():
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


# --- cancelling ------------------------------------------------------------------------------------


def check_job_for_user(user, job_id) -> Analysis:
    """The analysis if `user` owns it; Analysis.DoesNotExist otherwise."""
    return get_analysis_for(user, job_id, write=True)


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


# --- staff ---------------------------------------------------------------------------------------------

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


# --- what workers report -------------------------------------------------------------------------------


def persisted_positions(job_id: int) -> set[int]:
    return set(AnalysisRow.objects.filter(analysis_id=job_id).values_list("position", flat=True))


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


def summarize(job_id: int) -> dict:
    return summarize_rows(AnalysisRow.objects.filter(analysis_id=job_id).values_list("data", flat=True))


# The positions a summary's means leave out: the Consistency Lenses were never trained on positions 0–5
# (shared/spec/lens-inference.md §3), the reference NLAs only on positions 50 and later (shared/spec/nla.md
# §5); and rows whose ‖A‖ the engine flagged far outside the lens' usual range (attention sinks), whose mse
# is large because A is. Position 0's mse alone is often dozens of times the others': a mean with it says
# little.
def first_trained_position(nla: bool) -> int:
    from .colours import UNTRAINED_POSITIONS
    from .fragments import NLA_UNTRAINED_POSITIONS

    return NLA_UNTRAINED_POSITIONS if nla else UNTRAINED_POSITIONS


def summary_rows(rows: list[dict], nla: bool) -> tuple[list[dict], dict]:
    """(the rows a summary's means are over, what was left out and why): the trained positions (all the rows
    when none is), less the ‖A‖ outliers among them (unless they are all outliers)."""
    first = first_trained_position(nla)
    trained = [data for data in rows if data["position"] >= first]
    pool = trained or rows
    usual = [data for data in pool if data.get("activation_norm_outlier") is not True]
    untrained = sorted(data["position"] for data in rows if data["position"] < first) if trained else []
    outliers = (
        sorted(data["position"] for data in pool if data.get("activation_norm_outlier") is True)
        if usual
        else []
    )
    return usual or pool, {"trained_from": first, "untrained": untrained, "outliers": outliers}


def summarize_rows(rows, nla: bool | None = None) -> dict:
    """Row count; mean and max mse, mean cos (and an NLA's mean fve and mse_nrm) over the positions the lens
    was trained on, ‖A‖ outliers left out (summary_rows), with which positions those are and a note that says
    so. `nla`: the family, by default from the rows (an NLA's carry mse_nrm)."""
    rows = [data for data in rows if isinstance(data.get("mse"), int | float)]
    if not rows:
        return {"rows": 0}
    if nla is None:
        nla = is_nla(None, rows)
    used, left = summary_rows(rows, nla)
    mses = [data["mse"] for data in used]
    positions = sorted(data["position"] for data in used)
    summary = {"rows": len(rows), "mean_mse": sum(mses) / len(mses), "max_mse": max(mses)}
    for key in ("fve_nrm", "cosine_similarity", "mse_nrm"):
        values = [data[key] for data in used if isinstance(data.get(key), int | float)]
        if values:
            summary[f"mean_{key}"] = sum(values) / len(values)
    summary["trained_from"] = left["trained_from"]
    summary["mean_positions"] = [positions[0], positions[-1]]
    if left["untrained"]:
        summary["left_out"] = [left["untrained"][0], left["untrained"][-1]]
    if left["outliers"]:
        summary["outliers_left_out"] = left["outliers"][:20]
    summary["note"] = summary_note(summary)
    return summary


def _positions_text(a: int, b: int) -> str:
    return f"position {a}" if a == b else f"positions {a}–{b}"


def summary_note(summary: dict) -> str:
    """Which positions a summary's means cover, e.g. "positions 6–41; 0–5 left out: not trained on"; for a
    summary stored before positions were left out, that its means include them."""
    if "trained_from" not in summary:
        return "all positions, the untrained first ones included (summarised before they were left out)"
    first = summary["trained_from"]
    a, b = summary["mean_positions"]
    parts = [_positions_text(a, b)]
    if "left_out" in summary:
        parts.append(f"{_positions_text(*summary['left_out'])} left out: not trained on")
    elif a < first:
        parts[0] += f", none trained on (training starts at position {first})"
    outliers = summary.get("outliers_left_out") or []
    if outliers:
        shown = ", ".join(str(p) for p in outliers[:3]) + (", …" if len(outliers) > 3 else "")
        which = "position" if len(outliers) == 1 else "positions"
        parts.append(f"{which} {shown} left out: ‖A‖ far outside the lens' usual range")
    return "; ".join(parts)


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
            changes["metadata"] = {**job.metadata, "summary": summarize(job_id)}
        elif result is not None:
            changes["result"] = result
            changes["progress_done"] = max(
                (len(s.get("token_ids") or []) for s in result["samples"]), default=0
            )
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
        WorkerRecord.objects.filter(pk=worker_id).update(state=WorkerRecord.State.IDLE, last_heartbeat=now)
        if not finished:
            return False
        job.refresh_from_db()
        if model is Analysis:
            if status == Status.DONE:
                rates.record(job)  # the next job's ETA
            signals.job_ended.send(sender=Analysis, job=job)  # done: cached and followers completed
        elif status == Status.DONE and job.analysis_options is not None and job.samples:
            _queue_follow_up(job)
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


# --- worker records and the doorbell -------------------------------------------------------------------


def served_lens_ids() -> list[str]:
    try:
        return [spec.id for spec in get_engine().lenses()]
    except Exception:  # a broken registry: the worker serves nothing until it can be read
        log.exception("the lens registry cannot be read")
        return []


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
    notify.status_changed()
    return record


def worker_heartbeat(
    worker_id: int,
    job_id: int | None,
    lens_id: str = "",
    device: str = "",
    memory_bytes: int | None = None,
    kind: str = Analysis.kind,
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
    JOB_MODELS[kind].objects.filter(pk=job_id, worker_id=worker_id, status=Status.RUNNING).update(
        heartbeat_at=now
    )
    return is_cancel_requested(job_id, kind)


def worker_listens_on(worker_id: int, channel_name: str) -> None:
    """The worker's own channel changed (its consumer restarted after the channel layer failed): doorbells
    and cancels go to the new one."""
    WorkerRecord.objects.filter(pk=worker_id).update(channel_name=channel_name)


def worker_stopped(worker_id: int) -> None:
    WorkerRecord.objects.filter(pk=worker_id).update(
        state=WorkerRecord.State.STOPPED, last_heartbeat=timezone.now(), loading_lens="", loading_since=None
    )
    notify.status_changed()


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
