"""Thin views: parse, call a service, render the partial named after the element it replaces."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from lensweb.accounts.ratelimits import retry_after
from lensweb.monitoring import requestlog

from . import fragments, services
from .engine import get_engine
from .forms import AnalysisForm
from .models import Analysis


def _is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _lenses():
    engine = get_engine()
    try:
        lenses = engine.lenses()
    except Exception as exc:  # a broken registry must not take the page down; say what is wrong
        return [], str(exc)
    return [(spec, engine.lens_notes(spec)) for spec in lenses], ""


def _form_context(form, submitted=None):
    lenses, lens_error = _lenses()
    return {"form": form, "submitted": submitted, "lenses": lenses, "lens_error": lens_error}


def _new_form(data=None):
    lenses, _ = _lenses()
    return AnalysisForm(data, lenses=[spec for spec, _ in lenses])


@require_GET
def index(request):
    context = _form_context(_new_form())
    context.update(fragments.jobs_context(request.user)[0])
    return render(request, "analyses/index.html", context)


@require_POST
def submit(request):
    form = _new_form(request.POST)
    submitted = None
    # The API counts in the same group; an empty rate turns the limit off.
    if retry_after(request, "analyses.submit", "user", settings.LENSWEB_SUBMIT_RATE) is not None:
        form.is_valid()
        form.add_error(None, "you are submitting too fast; wait a minute and try again")
        requestlog.note(outcome="refused", reason="rate_limited")
    elif form.is_valid():
        try:
            submitted = services.do_submit(
                request.user, form.cleaned_data["lens"], form.cleaned_data["input"], form.options()
            )
        except services.SubmissionError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            requestlog.note(outcome="refused", reason=_refusal_reason(exc))
    if not _is_htmx(request):
        if submitted:
            return redirect("analyses:index")
        context = _form_context(form)
        context.update(fragments.jobs_context(request.user)[0])
        return render(request, "analyses/index.html", context, status=400)
    # 200 even with errors: htmx swaps only 2xx. Values stay for the next variation; the card comes over the socket.
    return render(request, "analyses/partials/analysis-form.html", _form_context(form, submitted))


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
    return render(
        request, "analyses/partials/job-card.html", fragments.card_context(job, services.queue_position(job))
    )


@require_POST
def cancel(request, job_id):
    _get_job_for_user(request, job_id)
    job = services.do_cancel(request.user, job_id)
    if not _is_htmx(request):
        return redirect("analyses:index")
    return render(request, "analyses/partials/job-status.html", {"job": job})
