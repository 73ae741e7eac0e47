"""Submitting: check_* validate a submission (lens, input, options, bounds, quotas, queue caps, a live worker)
and do_submit* queue it, or attach a cached result, and ring the doorbell on commit.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from inference.errors import InputError, LensError, OptionError, UnknownLensError
from inference.limits import Limits
from inference.options import option_names
from inference.types import AnalysisInput, AnalysisOptions, GenerationOptions

from . import catalog, notify, quotas, store
from .access import get_generation_for
from .engine import get_engine
from .errors import LensUnavailable, NoWorker, QueueFull, SubmissionError
from .limits import limits
from .models import Analysis, Generation
from .queue import JOB_MODELS
from .workers import live_workers, ring_doorbell

log = logging.getLogger(__name__)
Status = Analysis.Status
UNFINISHED = (Status.QUEUED, Status.RUNNING)


OPTION_FIELDS = option_names(AnalysisOptions)


GENERATION_OPTION_FIELDS = option_names(GenerationOptions)


def _option_field(error: Exception, fields=OPTION_FIELDS) -> str | None:
    first = str(error).split(" ", 1)[0]
    return first if first in fields else None


def lens_for(user, lens_id: str | None) -> str:
    """The id of the lens `user` asked for (None: their default) if they may use it (catalog: staff-only and
    hidden lenses are unknown to others), else SubmissionError on the lens field."""
    try:
        return catalog.check_usable(user, lens_id).id
    except UnknownLensError as exc:
        raise SubmissionError(str(exc), "lens") from exc


def lens_spec(engine, lens_id: str | None):
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


def check_analysis_options(options_data: dict, bounds: Limits) -> AnalysisOptions:
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
    spec = lens_spec(engine, lens_id)
    inp = _input(input_data, bounds, "text")
    options = check_analysis_options(options_data, bounds)
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
    spec = lens_spec(engine, lens_id)
    inp = _input(input_data, bounds)
    try:
        options = GenerationOptions.from_dict(options_data, chat=inp.is_chat).validate(bounds)
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


def lock_owner(user) -> None:
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
    if limited:  # the cache warmer (an operator's command) may warm any lens
        lens_id = lens_for(user, lens_id)
    spec, inp, options, prepared = check_prepared_submission(lens_id, input_data, options_data)
    total = len(prepared.positions)
    key = store.result_store.key_for(spec, prepared, options, user)
    with transaction.atomic():
        lock_owner(user)
        hit = store.result_store.lookup(key)  # a hit takes no place in the queue and costs no compute quota
        if hit is None:
            if limited:
                quotas.check_daily_positions(user, total)
                check_capacity(user)
            if require_worker:
                check_worker_available()
        elif limited:  # but its rows are copied for the user: capped per day (a refusal undoes the hit count)
            store.result_store.check_daily_cached_positions(user, total)
        job = Analysis.objects.create(
            owner=user,
            lens_id=spec.id,
            input=inp.to_dict(),
            options=options.to_dict(),
            progress_total=total,
        )
        store.result_store.attach(job, key, hit)  # a hit: done now; an identical job unfinished: waits for it
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
    spec, inp, options = check_generation_submission(lens_for(user, lens_id), input_data, options_data)
    analysis_options = None
    if then_analyse is not None:
        if not isinstance(then_analyse, dict):
            raise SubmissionError("the analysis options must be an object", "analysis_options")
        try:
            analysis_options = check_analysis_options(then_analyse, limits())
        except SubmissionError as exc:  # named as the caller sent it: the follow-up's options
            field = f"analysis_options.{exc.field}" if exc.field else "analysis_options"
            raise SubmissionError(exc.message, field) from exc.__cause__
        if analysis_options.last_n_messages is not None and not (inp.is_chat or options.chat_reply):
            raise SubmissionError("last N messages applies to chats only", "analysis_options.last_n_messages")
        if options.n != 1:
            raise SubmissionError("generate, then analyse takes one sample (n = 1)", "n")
        analysis_options = analysis_options.to_dict()
    with transaction.atomic():
        lock_owner(user)
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


def queue_follow_up(generation: Generation) -> None:
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
