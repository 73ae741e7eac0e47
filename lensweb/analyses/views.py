"""Thin views: parse, call a service, render the partial named after the element it replaces."""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from lensweb.accounts.ratelimits import retry_after

from . import cards, catalog, fragments, rates, services
from .engine import get_engine
from .forms import NO_CHAT, Action, AnalysisForm, GenerationForm, analysis_options_from, rerun_initial
from .models import Analysis, Generation
from .signals import note_request

log = logging.getLogger(__name__)


def _is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _lenses(user):
    """The lenses listed to `user` (catalog), each with what the page says of it."""
    engine = get_engine()
    try:
        lenses = catalog.lenses_for(user)
    except Exception as exc:  # a broken registry must not take the page down; say what is wrong
        return [], str(exc)
    return [(spec, engine.lens_notes(spec)) for spec in lenses], ""


def _form_context(user, form, submitted=None):
    lenses, lens_error = _lenses(user)
    return {"form": form, "submitted": submitted, "lenses": lenses, "lens_error": lens_error}


def _new_form(user, data=None, initial=None):
    lenses, _ = _lenses(user)
    return AnalysisForm(data, lenses=[spec for spec, _ in lenses], initial=initial)


def _chat_facts(lens_id) -> dict:
    """The lens' chat template facts for the builder. A registry or tokenizer that cannot be read leaves
    the builder without chat (the page says the registry is broken; a submit says why the lens is not
    usable): the page must still come up."""
    engine = get_engine()
    try:
        spec = engine.get_spec(lens_id) if lens_id else engine.default_lens()
        return {**NO_CHAT, **engine.chat_info(spec)}
    except Exception as exc:
        log.warning("no chat facts for lens %r: %s", lens_id, exc)
        return dict(NO_CHAT)


def _new_generation_form(user, data=None, initial=None):
    specs = [spec for spec, _ in _lenses(user)[0]]
    # The builder's chat facts follow the lens chosen (the user's default lens' on a fresh page).
    lens_id = (
        (data or {}).get(f"{GenerationForm.PREFIX}-lens")
        or (initial or {}).get("lens")
        or next((spec.id for spec in specs if spec.default), None)
    )
    return GenerationForm(
        data, lenses=specs, limits=services.limits(), chat=_chat_facts(lens_id), initial=initial
    )


def _page_context(request, form=None, gen_form=None, tab="analyse") -> dict:
    context = _form_context(request.user, form or _new_form(request.user))
    context["gen_form"] = gen_form or _new_generation_form(request.user)
    context["tab"] = tab
    context.update(fragments.jobs_context(*cards.load_replay(request.user)))
    context["keep_finished"] = cards.recent_count()
    return context


@require_GET
def index(request):
    """The page; `?rerun=<id>`: its analysis form refilled with that analysis' input and options ("Re-run
    with changes", the owner's own only). From a card (htmx) the form alone, swapped in place."""
    if "rerun" not in request.GET:
        return render(request, "analyses/index.html", _page_context(request))
    job = _get_job_for_user(request, _job_id(request.GET["rerun"]))
    form = _new_form(request.user, initial=rerun_initial(job))
    if _is_htmx(request):
        return render(
            request,
            "analyses/partials/analysis-form.html",
            {**_form_context(request.user, form), "rerun": job},
        )
    return render(request, "analyses/index.html", {**_page_context(request, form=form), "rerun": job})


def _job_id(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit() and len(raw) < 19):
        raise Http404("no such analysis")
    return int(raw)


def _rate_limited(request) -> bool:
    """Both forms and the API count in one group; an empty rate turns the limit off."""
    if retry_after(request, "analyses.submit", "user", settings.LENSWEB_SUBMIT_RATE) is not None:
        note_request(outcome="refused", reason="rate_limited")
        return True
    return False


TOO_FAST = "you are submitting too fast; wait a minute and try again"


@require_POST
def submit(request):
    form = _new_form(request.user, request.POST)
    submitted = None
    if _rate_limited(request):
        form.is_valid()
        form.add_error(None, TOO_FAST)
    elif form.is_valid():
        try:
            submitted = services.do_submit(
                request.user, form.cleaned_data["lens"], form.cleaned_data["input"], form.options()
            )
        except services.SubmissionError as exc:
            field = "text" if exc.field == "messages" else exc.field  # a chat is typed in the text box
            form.add_error(field if field in form.fields else None, exc.message)
            note_request(outcome="refused", reason=_refusal_reason(exc))
    if not _is_htmx(request):
        if submitted:
            return redirect("analyses:index")
        return render(request, "analyses/index.html", _page_context(request, form=form), status=400)
    # 200 even with errors: htmx swaps only 2xx. Values stay for the next variation; the card comes over the socket.
    return render(
        request, "analyses/partials/analysis-form.html", _form_context(request.user, form, submitted)
    )


def _refusal_reason(exc: services.SubmissionError) -> str:
    if isinstance(exc, services.LensUnavailable):
        return "lens_unavailable"
    return f"invalid_{exc.field}" if exc.field else "capacity"


def _get_job_for_user(request, job_id) -> Analysis:
    try:
        return services.check_job_for_user(request.user, job_id)
    except Analysis.DoesNotExist:
        raise Http404("no such analysis") from None


@require_GET
def job_card(request, job_id):
    job = _get_job_for_user(request, job_id)
    rates.attach([job])
    return render(
        request,
        "analyses/partials/job-card.html",
        fragments.card_context(job, services.queue_position(job), cards.card_rows(job)),
    )


@require_POST
def cancel(request, job_id):
    _get_job_for_user(request, job_id)
    job = services.do_cancel(request.user, job_id)
    if not _is_htmx(request):
        return redirect("analyses:index")
    return render(request, "analyses/partials/job-status.html", {"job": job})


# --- generations ---------------------------------------------------------------------------------------

# Where a service's refusal is shown on the generation form: its field names, or the builder / prompt.
_GEN_FIELDS = {"n", "max_new_tokens", "temperature", "top_p", "seed", "lens", "last_n_messages"}


def _gen_error_field(form: GenerationForm, field: str | None) -> str | None:
    if field in _GEN_FIELDS:
        return field
    if field in ("text", "messages", "prompt"):
        return "messages" if form.cleaned_data.get("mode") == "chat" else "prompt"
    return None  # chat_reply, analysis options, capacity: above the form


def _submit_generation(request, form: GenerationForm):
    """The service the clicked button asks for; (generation, analysis), one of them set, or a form error."""
    data, action = form.cleaned_data, form.action
    analysis_options = None
    if action in (Action.THEN_ANALYSE, Action.ANALYSE):
        analysis_options, problem = analysis_options_from(request.POST)
        if analysis_options is None:
            form.add_error(None, problem)
            return None, None
        if action == Action.THEN_ANALYSE and data.get("last_n_messages"):
            analysis_options["last_n_messages"] = data["last_n_messages"]
    try:
        if action == Action.ANALYSE:
            return None, services.do_submit(request.user, data["lens"], data["input"], analysis_options)
        generation = services.do_submit_generation(
            request.user,
            data["lens"],
            data["input"],
            form.options(),
            then_analyse=analysis_options if action == Action.THEN_ANALYSE else None,
        )
        return generation, None
    except services.SubmissionError as exc:
        form.add_error(_gen_error_field(form, exc.field), exc.message)
        note_request(outcome="refused", reason=_refusal_reason(exc))
    return None, None


@require_POST
def generate(request):
    """The generation form's buttons: Generate, Get reply, Generate then analyse, Analyse the chat; and
    "refresh" (another lens chosen: the form again with that lens' chat facts, nothing submitted)."""
    form = _new_generation_form(request.user, request.POST)
    generation = analysis = None
    if form.action == Action.REFRESH:
        form = _new_generation_form(request.user, initial=form.carried())
    elif _rate_limited(request):
        form.is_valid()
        form.add_error(None, TOO_FAST)
    elif form.is_valid():
        generation, analysis = _submit_generation(request, form)
    if not _is_htmx(request):
        if generation or analysis:
            return redirect("analyses:index")
        status = 200 if form.action == Action.REFRESH else 400
        return render(
            request,
            "analyses/index.html",
            _page_context(request, gen_form=form, tab="generate"),
            status=status,
        )
    context = {
        "gen_form": form,
        "generation": generation,
        "analysis": analysis,
        # the reply joins the chat builder once done ("Get reply"; "Generate, then analyse" too, its card then
        # being its analysis')
        "pending_reply": generation.pk
        if generation and form.action in (Action.REPLY, Action.THEN_ANALYSE)
        else None,
    }
    return render(request, "analyses/partials/generation-form.html", context)


def _get_generation(request, generation_id, *, write: bool = False) -> Generation:
    try:
        return services.get_generation_for(request.user, generation_id, write=write)
    except Generation.DoesNotExist:
        raise Http404("no such generation") from None


@require_GET
def generation_card(request, generation_id):
    generation = _get_generation(request, generation_id)
    read_only = generation.owner_id != request.user.pk  # staff reading another user's card
    rates.attach([generation])
    context = fragments.generation_context(
        generation, services.queue_position(generation), read_only=read_only
    )
    return render(request, "analyses/partials/gen-card.html", context)


@require_GET
def generation_page(request, generation_id):
    """A generation on a page of its own (the API's html_url): its card, refreshed until it ends, and its
    downloads."""
    generation = _get_generation(request, generation_id)
    read_only = generation.owner_id != request.user.pk
    rates.attach([generation])
    context = fragments.generation_context(
        generation, services.queue_position(generation), read_only=read_only
    )
    return render(request, "analyses/generation.html", context)


@require_GET
def generation_input(request, generation_id):
    """What "Use as input" fills in: the analysis input for sample ?sample=N (the chat with the reply, or
    the text continued). JSON, read by the page's script."""
    generation = _get_generation(request, generation_id)
    index = _sample_index(request.GET.get("sample", "0"))
    if index is None or index >= len(generation.samples):
        raise Http404("no such sample")
    return JsonResponse(generation.analysis_input(index))


def _sample_index(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and len(raw) < 6 else None


@require_POST
def generation_cancel(request, generation_id):
    try:
        generation = services.do_cancel_generation(request.user, generation_id)
    except Generation.DoesNotExist:
        raise Http404("no such generation") from None
    if not _is_htmx(request):
        return redirect("analyses:index")
    return render(request, "analyses/partials/gen-status.html", {"gen": generation})


@require_POST
def generation_analyse(request, generation_id):
    """ "Analyse" on a generation card: the sample analysed with the analysis form's options (included by
    htmx; the defaults without them). The answer is the card's note; the analysis card comes by socket."""
    generation = _get_generation(request, generation_id, write=True)
    index = _sample_index(request.POST.get("sample", ""))
    analysis, error = None, ""
    options, problem = analysis_options_from(request.POST)
    if index is None:
        error = "which sample? (a number)"
    elif options is None:
        error = problem
    elif _rate_limited(request):
        error = TOO_FAST
    else:
        try:
            analysis = services.do_analyse_sample(request.user, generation.pk, index, options)
        except services.SubmissionError as exc:
            error = exc.message
            note_request(outcome="refused", reason=_refusal_reason(exc))
    if not _is_htmx(request):
        if analysis:
            return redirect("analyses:index")
        return render(
            request,
            "analyses/index.html",
            {**_page_context(request), "page_error": error},
            status=400,
        )
    context = {"gen": generation, "index": index or 0, "analysis": analysis, "error": error}
    return render(request, "analyses/partials/gen-note.html", context)
