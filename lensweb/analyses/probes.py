"""Probes: questions to a lens about an analysis' text that a worker answers (models.Probe): the owner's own
explanation scored at a position, or the layer activations at positions. Checked here with the engine's
bounds and the text tokenised (the web process loads no model); the worker's engine checks them again."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from inference.engine import (
    activation_vectors,
    explanation_ids,
    explanation_text,
    vector_options,
    vector_token_ids,
)
from inference.errors import InputError, LensError, OptionError

from . import quotas
from .access import get_analysis_for
from .engine import get_engine
from .errors import LensUnavailable, SubmissionError
from .limits import limits
from .models import Analysis, Probe
from .submit import (
    check_analysis_options,
    check_prepared_submission,
    check_queue_caps,
    lens_for,
    lens_spec,
    lock_owner,
)
from .workers import ring_doorbell

log = logging.getLogger(__name__)

What = Probe.What
ANY_TOKEN = 2**31  # the web process' bound on a token id: the worker checks the lens' vocabulary


def _whole_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _position(value, n: int, field: str) -> int:
    if not _whole_int(value) or not -n <= value < n:
        raise SubmissionError(f"position {str(value)[:20]} is outside the text's {n} tokens", field)
    return value % n


def check_score(data: dict, n: int) -> dict:
    """{position, explanation} or {position, explanation_token_ids}, bounded; the position resolved."""
    bounds = limits()
    if not isinstance(data, dict):
        raise SubmissionError("send {position, explanation} or {position, explanation_token_ids}", "position")
    position = _position(data.get("position"), n, "position")
    text, ids = data.get("explanation"), data.get("explanation_token_ids")
    if (text is None) == (ids is None):
        raise SubmissionError("give either an explanation or its explanation_token_ids", "explanation")
    try:  # the engine's own checks; the vocabulary is the worker's to check (the web process has no model)
        if text is not None:
            return {"position": position, "explanation": explanation_text(text, bounds)}
        return {"position": position, "explanation_token_ids": explanation_ids(ids, ANY_TOKEN, bounds)}
    except InputError as exc:
        raise SubmissionError(
            str(exc), "explanation" if text is not None else "explanation_token_ids"
        ) from None


def check_activations(data: dict, n: int) -> dict:
    most = limits().max_chosen_positions
    positions = data.get("positions") if isinstance(data, dict) else None
    if not isinstance(positions, list) or not 1 <= len(positions) <= most:
        raise SubmissionError(f"positions: give 1 to {most} of them", "positions")
    return {"positions": [_position(p, n, "positions") for p in positions]}


CHECKS = {What.SCORE: check_score, What.ACTIVATIONS: check_activations}


def _queue(user, **fields) -> Probe:
    with transaction.atomic():
        lock_owner(user)
        quotas.check_daily_positions(user, 1)
        check_queue_caps(Probe, user, settings.LENSWEB_MAX_QUEUED_PER_USER, "probes")
        probe = Probe.objects.create(owner=user, **fields)
        transaction.on_commit(ring_doorbell)
    return probe


def do_submit_probe(user, analysis_id: int, what: str, data: dict) -> Probe:
    """Queue a probe of `user`'s analysis (a score is kept with it: its owner only; activations: whoever may
    read it). The text is tokenised here, so a position outside it is refused before anything is queued."""
    analysis = get_analysis_for(user, analysis_id, write=what == What.SCORE)
    spec, inp, options, prepared = check_prepared_submission(
        analysis.lens_id, analysis.input, analysis.options
    )
    request = CHECKS[What(what)](data, len(prepared.token_ids))
    return _queue_on(user, analysis, spec, inp, options, what, request)


def _queue_on(user, analysis, spec, inp, options, what: str, request: dict) -> Probe:
    """A probe of `analysis`, on its text and options: answered in one step."""
    return _queue(
        user,
        analysis=analysis,
        lens_id=spec.id,
        input=inp.to_dict(),
        options=options.to_dict(),
        what=what,
        request=request,
        progress_total=1,
    )


def do_submit_describe(user, lens_id: str | None, vectors, options_data: dict, token_ids=None) -> Probe:
    """Queue the description of vectors of the caller's own (an SAE feature's direction, a difference of
    activations) by a lens: each explained as if it were its layer activation at a position. Their width is
    checked against the lens' here (read from its files, no weights), so a wrong one is refused at once."""
    engine = get_engine()
    bounds = limits()
    spec = lens_spec(engine, lens_for(user, lens_id))
    options = _vector_options(options_data, bounds)
    width = _width(engine, spec)
    try:
        checked = activation_vectors(vectors, width, bounds.max_chosen_positions)
    except InputError as exc:
        raise SubmissionError(str(exc), "vectors") from None
    if token_ids is not None:
        try:
            token_ids = vector_token_ids(token_ids, len(checked), ANY_TOKEN)
        except InputError as exc:
            raise SubmissionError(str(exc), "token_ids") from None
    return _queue(
        user,
        analysis=None,
        lens_id=spec.id,
        input={},
        options=options.to_dict(),
        what=What.DESCRIBE,
        request={"vectors": checked, "token_ids": token_ids},
        progress_total=len(checked),
    )


def _compare_side(user, side, field: str) -> tuple[dict, str | None, Analysis | None]:
    """One side of a comparison, checked: a position of an analysis `user` may read (its input kept, for the
    worker to re-read that activation) or a vector (its width checked once the lens is known); with the lens
    the side names (None for a vector)."""
    if not isinstance(side, dict) or ("vector" in side) == ("analysis_id" in side):
        raise SubmissionError("give {analysis_id, position} or {vector}", field)
    if "vector" in side:
        return {"vector": side["vector"]}, None, None
    try:
        analysis = get_analysis_for(user, side["analysis_id"])
    except (Analysis.DoesNotExist, ValueError, TypeError):
        raise SubmissionError(
            f"no analysis {str(side['analysis_id'])[:20]} of yours", f"{field}.analysis_id"
        ) from None
    spec, inp, _options, prepared = check_prepared_submission(
        analysis.lens_id, analysis.input, analysis.options
    )
    position = _position(side.get("position"), len(prepared.token_ids), f"{field}.position")
    return {"analysis_id": analysis.pk, "position": position, "input": inp.to_dict()}, spec.id, analysis


def do_submit_compare(user, a, b, lens_id: str | None, options_data: dict) -> Probe:
    """Queue the explanation of a − b, each side a position of an analysis or a vector of the caller's own,
    by one lens (the analyses' lens; `lens_id` for two vectors): the difference described as a vector is, and
    its norm given."""
    engine = get_engine()
    bounds = limits()
    (side_a, lens_a, analysis_a), (side_b, lens_b, analysis_b) = (
        _compare_side(user, a, "a"),
        _compare_side(user, b, "b"),
    )
    named = {lens for lens in (lens_a, lens_b, lens_id) if lens}
    if len(named) > 1:
        raise SubmissionError(
            f"both sides must be of one lens; these name {', '.join(sorted(named))}", "lens"
        )
    spec = lens_spec(engine, lens_for(user, named.pop() if named else None))
    options = _vector_options(options_data, bounds)
    width = _width(engine, spec)
    for name, side in (("a", side_a), ("b", side_b)):
        if "vector" in side:
            try:
                side["vector"] = activation_vectors([side["vector"]], width, 1)[0]
            except InputError as exc:
                raise SubmissionError(
                    str(exc).replace("vector 0", f"{name}'s vector"), f"{name}.vector"
                ) from None
    return _queue(
        user,
        analysis=analysis_a or analysis_b,
        lens_id=spec.id,
        input={},
        options=options.to_dict(),
        what=What.COMPARE,
        request={"a": side_a, "b": side_b},
        progress_total=1,
    )


def _vector_options(options_data: dict, bounds):
    """An analysis' options for explaining vectors, refused as the engine refuses them (KL, chosen positions)."""
    options = check_analysis_options(options_data, bounds)
    try:
        return vector_options(options)
    except OptionError as exc:
        raise SubmissionError(str(exc), "kl" if options.kl else "positions") from None


def _width(engine, spec) -> int:
    try:
        return engine.width(spec)
    except (LensError, OSError) as exc:
        log.error("lens %s is unavailable: %s", spec.id, exc, exc_info=True)
        raise LensUnavailable(spec.id) from None


def activations_probe(user, analysis_id: int, positions) -> Probe:
    """The activations read of these positions: the user's last one for the same positions unless it failed,
    else a new one queued (so asking again, or polling by asking, computes once)."""
    analysis = get_analysis_for(user, analysis_id)
    spec, inp, options, prepared = check_prepared_submission(
        analysis.lens_id, analysis.input, analysis.options
    )
    request = check_activations({"positions": positions}, len(prepared.token_ids))
    recent = analysis.probes.filter(owner=user, what=What.ACTIVATIONS).exclude(
        status__in=(Probe.Status.FAILED, Probe.Status.CANCELLED)
    )
    for probe in recent.order_by("-id")[:50]:
        if probe.request == request:
            return probe
    return _queue_on(user, analysis, spec, inp, options, What.ACTIVATIONS, request)


def get_probe_for(user, probe_id) -> Probe:
    """A probe of `user` (staff may read any); DoesNotExist otherwise, as for every job."""
    if user.is_staff:
        return Probe.objects.get(pk=probe_id)
    return Probe.objects.get(pk=probe_id, owner=user)


def user_scores(analysis: Analysis) -> list[dict]:
    """The scores kept with an analysis (done ones, oldest first): what its export lists as `user_scores`."""
    done = analysis.probes.filter(what=What.SCORE, status=Probe.Status.DONE).order_by("finished_at", "id")
    return [{"id": p.pk, "request": p.request, **(p.result or {})} for p in done]
