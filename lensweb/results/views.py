"""Thin views over services: every view starts with an access helper that returns the analysis or 404.
A full page and its htmx fragment come from the same template (the fragment is the included partial)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.cache import patch_cache_control
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from lensweb import security
from lensweb.accounts.ratelimits import retry_after
from lensweb.analyses import colours, growth
from lensweb.analyses import services as analyses_services
from lensweb.analyses.errors import QueueFull, QuotaExceeded, SubmissionError
from lensweb.analyses.models import Analysis, AnalysisRow, Generation, Probe

from . import display, figure, imports, services
from .chart import metric_chart
from .downloads import as_download
from .models import ResultsPreference, ShareLink

HISTORY_PAGE_SIZE = 25


def _is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _get_analysis_for_user(request, analysis_id) -> Analysis:
    """Owner or staff; 404 for everyone else (an analysis you may not see does not exist for you)."""
    try:
        return services.check_viewable(request.user, analysis_id)
    except Analysis.DoesNotExist:
        raise Http404("no such analysis") from None


def _get_owned_analysis(request, analysis_id) -> Analysis:
    try:
        return services.check_owned(request.user, analysis_id)
    except Analysis.DoesNotExist:
        raise Http404("no such analysis") from None


def _get_shared_analysis(token: str) -> Analysis:
    try:
        return services.check_shared(token)
    except ShareLink.DoesNotExist:
        raise Http404("this share link does not exist or was turned off") from None


# --- one analysis --------------------------------------------------------------------------------------


def _metric_columns(state_columns, metrics: tuple[str, ...]) -> list[dict]:
    """The table's numeric columns: the analysis' own metrics that the viewer has on, in family order."""
    return [
        {"key": m, "label": display.HEADER_LABELS[m], "title": display.COLUMN_TITLES[m]}
        for m in metrics
        if m in state_columns
    ]


def _chart(rows: list[dict], family: str, metrics: tuple[str, ...], untrained: bool):
    """(title, SVG): mse and KL for a Consistency Lens; fve (cos without a variance constant) and KL for an
    NLA."""
    first = "mse"
    if family == display.NLA:
        first = "fve_nrm" if "fve_nrm" in metrics else "cosine_similarity"
    title = f"{colours.METRIC_LABELS[first]}{' and KL' if 'kl' in metrics else ''} along the text"
    return title, metric_chart(rows, first, early=display.EARLY_POSITIONS[family], untrained=untrained)


def _results_context(
    request, analysis: Analysis, *, shared_token: str | None = None, view: str | None = None
) -> dict:
    rows = services.rows_of(analysis)
    family = display.family_of(analysis.metadata, rows)
    metrics = display.metrics_of(family, rows)
    early = display.EARLY_POSITIONS[family]
    preference = services.preference_for(request.user)
    query = request.GET
    if view is not None:  # a figure's own view, whatever the page's was
        query = query.copy()
        query["view"] = view
    state = display.Display.from_request(query, preference, metrics)
    scheme = colours.build_scheme(rows, state.scale, state.palette, early)
    add_current = bool((analysis.metadata or {}).get("add_current_token"))
    glyphs = display.glyph_parts(analysis.metadata)  # tokens that are parts of one split glyph
    views = display.row_views(rows, scheme, add_current, early, glyphs)
    shown = display.sort_and_filter(views, state) if state.view == "table" else views
    cells: list = []
    if state.view == "fulltext":
        for v in views:
            v.fulltext_cls = v.classes[state.metric]
            v.fulltext_value = v.text(state.metric) or "–"
            v.fulltext_label = colours.METRIC_LABELS[state.metric]
        read = None if (analysis.metadata or {}).get("imported") else services.input_tokens(analysis)
        tokens, asked = read if read else (None, set())
        cells = display.fulltext_cells(views, tokens, asked if not analysis.is_final else set(), glyphs)
    has_kl = "kl" in metrics
    has_ll = any(v.logit_lens for v in views)
    metric_columns = _metric_columns(state.columns, metrics)
    if state.view == "table":
        for v in shown:
            v.cells = [v.text(c["key"]) for c in metric_columns]
    elif state.view == "transposed":  # a column head's tooltip: the family's headline numbers
        headline = display.compare_metrics(family, rows)[:2]
        for v in views:
            v.tip = " · ".join(f"{colours.METRIC_LABELS[m]} {v.text(m)}" for m in headline if v.text(m))
    columns = [c["key"] for c in metric_columns]
    if has_ll and "logit_lens" in state.columns:
        columns.append("logit_lens")
    choices = display.column_choices(family, rows, metrics, has_ll)
    offered = [c for c, _label, computed in choices if computed]  # the ticks this form can change
    chart_title, chart = _chart(rows, family, metrics, bool(analysis.metadata.get("untrained")))
    if shared_token:
        base_url = reverse("results:shared", args=[shared_token])
        candidates_url = base_url + "candidates/"
        scores_url = ""
        export_json = reverse("results:shared_export_json", args=[shared_token])
        export_csv = reverse("results:shared_export_csv", args=[shared_token])
        export_research = reverse("results:shared_export_research_json", args=[shared_token])
        figure_url = reverse("results:shared_fulltext_figure", args=[shared_token])
        figure_svg_url = reverse("results:shared_fulltext_svg", args=[shared_token])
    else:
        base_url = reverse("results:detail", args=[analysis.pk])
        candidates_url = base_url + "candidates/"
        scores_url = base_url + "scores/"
        export_json = reverse("results:export_json", args=[analysis.pk])
        export_csv = reverse("results:export_csv", args=[analysis.pk])
        export_research = reverse("results:export_research_json", args=[analysis.pk])
        figure_url = reverse("results:fulltext_figure", args=[analysis.pk])
        figure_svg_url = reverse("results:fulltext_svg", args=[analysis.pk])
    is_owner = request.user.is_authenticated and analysis.owner_id == request.user.pk and not shared_token
    return {
        "cells": cells,
        # the owner clicks a token without a row to add it (analyses.growth); the page follows until done
        "can_grow": is_owner and analysis.status != Analysis.Status.FAILED,
        "grow_url": reverse("results:add_positions", args=[analysis.pk]),
        "query": request.GET.urlencode(),
        "unfinished": not analysis.is_final,
        "analysis": analysis,
        "family": family,
        "family_name": display.FAMILY_NAMES[family],
        "rows": shown,
        "all_rows": views,
        "n_rows": len(views),
        "state": state,
        "scheme": scheme,
        "salience_scale": scheme["salience"],
        "metric_scale": scheme[state.metric],
        "columns": columns,
        "metric_columns": metric_columns,
        "numeric_columns": len(metric_columns),
        "column_choices": choices,
        "offered_columns": offered,
        "sort_choices": [(m, display.COLUMN_LABELS[m]) for m in metrics],
        "sort_columns": [c["key"] for c in metric_columns],
        "has_kl": has_kl,
        "has_salience": any(isinstance(r.get("token_salience"), list) for r in rows),
        "has_candidates": any(v.candidates for v in views),
        "views": [(v, display.VIEW_LABELS[v]) for v in display.VIEWS],
        "metrics": [(m, colours.METRIC_LABELS[m]) for m in metrics],
        "scales": ResultsPreference.Scale.choices,
        "palettes": ResultsPreference.Palette.choices,
        "chart": chart,
        "chart_title": chart_title,
        "metadata_items": display.metadata_items(analysis),
        "untrained_note": display.untrained_note(family, analysis.metadata),
        "early_range": display.early_range(family),
        "salience_note": display.SALIENCE_NOTES[family],
        "candidate_metric": display.COLUMN_LABELS[display.CANDIDATE_METRIC[family]],
        "base_url": base_url,
        "candidates_url": candidates_url,
        # the owner scores explanations of their own under a row (analyses.probes)
        "scores_url": scores_url if is_owner else "",
        "export_json_url": export_json,
        "export_csv_url": export_csv,
        "export_research_url": export_research,
        "figure_url": figure_url,
        "figure_svg_url": figure_svg_url,
        "shared_token": shared_token,
        "is_owner": is_owner,
        "can_save_preferences": request.user.is_authenticated,
        "share_link": services.share_link_of(analysis) if is_owner else None,
        "colours_version": colours.palette_version(),
    }


# The chart's PNG download draws the chart's SVG into a canvas through a blob: image (results.js); nothing
# else is added to the site's policy.
RESULTS_EXTRA = {"img-src": "blob:"}


def _render_results(request, context):
    if _is_htmx(request) and request.headers.get("HX-Target") == "results-body":
        return render(request, "results/partials/results-body.html", context)
    return security.apply(render(request, "results/detail.html", context), request, RESULTS_EXTRA)


@require_GET
def detail(request, analysis_id):
    analysis = _get_analysis_for_user(request, analysis_id)
    return _render_results(request, _results_context(request, analysis))


@login_not_required
@require_GET
def shared(request, token):
    analysis = _get_shared_analysis(token)
    response = _render_results(request, _results_context(request, analysis, shared_token=token))
    response["X-Robots-Tag"] = "noindex"
    response["Referrer-Policy"] = "no-referrer"  # the token must not leak to links followed from the page
    return response


def _candidates(request, analysis: Analysis, position: int):
    row = (
        AnalysisRow.objects.filter(analysis=analysis, position=position)
        .values_list("data", flat=True)
        .first()
    )
    family = display.family_of(analysis.metadata, [row] if row else [])
    found = display.candidates(row, family) if row else None
    if found is None:
        raise Http404("no candidates were kept for this position")
    metric = display.COLUMN_LABELS[display.CANDIDATE_METRIC[family]]
    return render(request, "results/partials/candidates.html", {"candidates": found, "metric": metric})


@require_GET
def candidates(request, analysis_id, position):
    return _candidates(request, _get_analysis_for_user(request, analysis_id), position)


@login_not_required
@require_GET
def shared_candidates(request, token, position):
    return _candidates(request, _get_shared_analysis(token), position)


@require_POST
def share(request, analysis_id):
    analysis = _get_owned_analysis(request, analysis_id)
    if request.POST.get("enabled") == "1":
        services.do_share(request.user, analysis.pk)
    else:
        services.do_unshare(request.user, analysis.pk)
    context = {"analysis": analysis, "share_link": services.share_link_of(analysis), "is_owner": True}
    if _is_htmx(request):
        return render(request, "results/partials/share-box.html", context)
    return redirect("results:detail", analysis.pk)


@require_POST
def add_positions(request, analysis_id):
    """Tokens clicked in the full-text view join the analysis (analyses.growth); the answer is the results
    body again, which follows the job until its new rows are in."""
    analysis = _get_owned_analysis(request, analysis_id)
    error = ""
    try:
        positions = growth.parse_positions(request.POST.get("positions", ""))
        growth.do_add_positions(request.user, analysis.pk, positions)
    except (SubmissionError, QuotaExceeded, QueueFull) as exc:
        error = str(exc.message if isinstance(exc, SubmissionError) else exc)
    analysis.refresh_from_db()
    context = {**_results_context(request, analysis), "grow_error": error}
    if _is_htmx(request):
        return render(request, "results/partials/results-body.html", context)
    return redirect(f"{reverse('results:detail', args=[analysis.pk])}?view=fulltext")


@require_http_methods(["GET", "POST"])
def scores(request, analysis_id, position):
    """A row's "edit" panel (the owner's): their own explanation scored at the position (analyses.probes),
    and the scores kept there, newest first; it polls while one is being computed."""
    analysis = _get_owned_analysis(request, analysis_id)
    row = (
        AnalysisRow.objects.filter(analysis=analysis, position=position)
        .values_list("data", flat=True)
        .first()
    )
    if row is None:
        raise Http404("no row at this position")
    error = ""
    if request.method == "POST":
        try:
            analyses_services.do_submit_probe(
                request.user,
                analysis.pk,
                "score",
                {"position": position, "explanation": request.POST.get("explanation", "")},
            )
        except (SubmissionError, QuotaExceeded, QueueFull) as exc:
            error = str(exc.message if isinstance(exc, SubmissionError) else exc)
    probes = analysis.probes.filter(owner=request.user, what="score", request__position=position).order_by(
        "-id"
    )
    kept = [display.score_view(probe, row) for probe in probes[:20]]
    context = {
        "analysis": analysis,
        "position": position,
        "explanation": request.POST.get("explanation") if error else row.get("explanation", ""),
        "scores": kept,
        "pending": any(not probe.is_final for probe in probes[:20]),
        "error": error,
    }
    return render(request, "results/partials/score-panel.html", context)


@require_POST
def explain_difference(request):
    """The compare page's "explain the difference": position `pa` of analysis `a` minus position `pb` of `b`
    (one lens), queued as a probe (analyses.probes); the answer is its panel, which polls until done."""
    try:
        sides = [
            {
                "analysis_id": int(request.POST.get(name, "")),
                "position": int(request.POST.get(f"p{name}", "")),
            }
            for name in ("a", "b")
        ]
    except ValueError:
        return render(
            request, "results/partials/difference.html", {"error": "choose a position on each side"}
        )
    try:
        probe = analyses_services.do_submit_compare(request.user, *sides, None, {"temperature": 0})
    except (SubmissionError, QuotaExceeded, QueueFull) as exc:
        error = str(exc.message if isinstance(exc, SubmissionError) else exc)
        return render(request, "results/partials/difference.html", {"error": error})
    return render(request, "results/partials/difference.html", {"probe": display.difference_view(probe)})


@require_GET
def difference(request, probe_id):
    try:
        probe = analyses_services.get_probe_for(request.user, probe_id)
    except Probe.DoesNotExist:
        raise Http404("no such comparison") from None
    if probe.what != Probe.What.COMPARE:
        raise Http404("no such comparison")
    return render(request, "results/partials/difference.html", {"probe": display.difference_view(probe)})


@require_POST
def preferences(request):
    columns = request.POST.getlist("cols") if request.POST.get("cols_sent") else None
    services.do_save_preference(
        request.user,
        columns=columns,
        offered=request.POST.getlist("cols_offered"),
        scale=request.POST.get("scale"),
        palette=request.POST.get("palette"),
    )
    if _is_htmx(request):
        return HttpResponse(status=204)
    target = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("results:history")
    return redirect(target)


# --- export --------------------------------------------------------------------------------------------


def _export(request, analysis: Analysis, kind: str) -> HttpResponse:
    return as_download(*services.analysis_download(analysis, kind, raw=request.GET.get("raw") == "1"))


@require_GET
def export_json(request, analysis_id):
    return _export(request, _get_analysis_for_user(request, analysis_id), "json")


@require_GET
def export_csv(request, analysis_id):
    return _export(request, _get_analysis_for_user(request, analysis_id), "csv")


@require_GET
def export_research_json(request, analysis_id):
    return _export(request, _get_analysis_for_user(request, analysis_id), "research")


def _get_generation_for_user(request, generation_id) -> Generation:
    try:
        return analyses_services.get_generation_for(request.user, generation_id)
    except Generation.DoesNotExist:
        raise Http404("no such generation") from None


@require_GET
def generation_export_json(request, generation_id):
    return as_download(
        *services.generation_download(_get_generation_for_user(request, generation_id), "json")
    )


@require_GET
def generation_export_csv(request, generation_id):
    generation = _get_generation_for_user(request, generation_id)
    return as_download(*services.generation_download(generation, "csv", raw=request.GET.get("raw") == "1"))


@login_not_required
@require_GET
def shared_export_json(request, token):
    return _export(request, _get_shared_analysis(token), "json")


@login_not_required
@require_GET
def shared_export_csv(request, token):
    return _export(request, _get_shared_analysis(token), "csv")


@login_not_required
@require_GET
def shared_export_research_json(request, token):
    return _export(request, _get_shared_analysis(token), "research")


def _fulltext_context(request, analysis: Analysis, shared_token: str | None) -> dict:
    """The full-text view's context, coloured as the page's display settings say; nothing to click."""
    return {
        **_results_context(request, analysis, shared_token=shared_token, view="fulltext"),
        "can_grow": False,
    }


def _fulltext_html(request, analysis: Analysis, shared_token: str | None) -> HttpResponse:
    """The full-text view as one standalone HTML file."""
    context = _fulltext_context(request, analysis, shared_token)
    body = render_to_string("results/partials/figure-fulltext.html", context, request=request)
    title = f"Analysis #{analysis.pk} · full text"
    return as_download(
        figure.standalone(title, body), "text/html; charset=utf-8", f"analysis-{analysis.pk}-fulltext.html"
    )


def _fulltext_svg(request, analysis: Analysis, shared_token: str | None) -> HttpResponse:
    """The full-text view as one standalone SVG image, on the same colours as the HTML figure."""
    context = _fulltext_context(request, analysis, shared_token)
    layer = (analysis.metadata or {}).get("layer")
    caption = " · ".join(
        [f"Analysis #{analysis.pk}", analysis.lens_id, *([f"layer {layer}"] if layer is not None else [])]
    )
    content = figure.fulltext_svg(
        context["cells"],
        metric=context["state"].metric,
        scale=context["metric_scale"],
        palette=context["state"].palette,
        title=f"Analysis #{analysis.pk} · full text",
        caption=f"{caption} · {context['family_name']}",
        note=f"{context['early_range']} are faded: {context['untrained_note']}",
    )
    return as_download(content, "image/svg+xml", f"analysis-{analysis.pk}-fulltext.svg")


FULLTEXT_FIGURES = {"html": _fulltext_html, "svg": _fulltext_svg}  # a route's `fmt` (results/urls.py)


@require_GET
def fulltext_figure(request, analysis_id, fmt):
    return FULLTEXT_FIGURES[fmt](request, _get_analysis_for_user(request, analysis_id), None)


@login_not_required
@require_GET
def shared_fulltext_figure(request, token, fmt):
    return FULLTEXT_FIGURES[fmt](request, _get_shared_analysis(token), token)


# --- history, delete, import ---------------------------------------------------------------------------


@require_GET
def history(request):
    q = (request.GET.get("q") or "").strip()[:200]
    lens = request.GET.get("lens") or ""
    status = request.GET.get("status") or ""
    if status not in Analysis.Status.values:
        status = ""
    timeline = services.Timeline(request.user, q, lens, status)
    page = Paginator(timeline, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    analyses = [job for job in page.object_list if isinstance(job, Analysis)]
    shared_ids = set(ShareLink.objects.filter(analysis__in=analyses).values_list("analysis_id", flat=True))
    context = {
        "page": page,
        "counts": timeline.counts,
        "q": q,
        "lens": lens,
        "status": status,
        "lenses": services.lenses_used(request.user),
        "statuses": Analysis.Status.choices,
        "shared_ids": shared_ids,
        "filter_query": "&".join(f"{k}={v}" for k, v in (("q", q), ("lens", lens), ("status", status)) if v),
    }
    if _is_htmx(request) and request.headers.get("HX-Target") == "history-list":
        return render(request, "results/partials/history-list.html", context)
    return render(request, "results/history.html", context)


@require_POST
def delete(request, analysis_id):
    analysis = _get_owned_analysis(request, analysis_id)
    services.do_delete(request.user, analysis.pk)
    return _deleted(request, f"Analysis #{analysis_id}")


@require_POST
def delete_generation(request, generation_id):
    try:
        services.do_delete_generation(request.user, generation_id)
    except Generation.DoesNotExist:
        raise Http404("no such generation") from None
    return _deleted(request, f"Generation #{generation_id}")


def _deleted(request, what: str) -> HttpResponse:
    """History's answer to a delete: nothing for htmx (the row's hx-swap="outerHTML" removes it), else back."""
    if _is_htmx(request):
        return HttpResponse("")
    messages.info(request, f"{what} deleted.")
    return redirect("results:history")


class _ImportSizeLimit(FileUploadHandler):
    """Stops reading an upload past the import limit, so a huge file never lands on disk or in memory."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.exceeded = False

    def receive_data_chunk(self, raw_data, start):
        if start + len(raw_data) > self.limit:
            self.exceeded = True
            raise StopUpload(connection_reset=False)  # the rest is read and dropped; the page can answer
        return raw_data

    def file_complete(self, file_size):
        return None  # the next handlers build the file


@csrf_exempt  # only so the upload handlers can be changed before the body is read; checked below
@require_http_methods(["GET", "POST"])
def import_file(request):
    limiter = _ImportSizeLimit(services.max_import_bytes())
    request.upload_handlers.insert(0, limiter)
    return _import_file(request, limiter)


def _import_page(request, limit: int, *, error: str = "", created=(), status: int = 200, retry: int = 0):
    context = {"error": error, "created": created, "max_import": imports.size_text(limit)}
    response = render(request, "results/import.html", context, status=status)
    if retry:
        response["Retry-After"] = str(retry)
    return response


@csrf_protect
def _import_file(request, limiter: _ImportSizeLimit):
    limit = limiter.limit
    if request.method != "POST":
        return _import_page(request, limit)
    seconds = retry_after(request, "results.import", "user", settings.LENSWEB_IMPORT_RATE)
    if seconds is not None:
        error = f"You are importing too fast; wait {seconds} s and try again."
        return _import_page(request, limit, error=error, status=429, retry=seconds)
    upload = request.FILES.get("file")
    if limiter.exceeded:
        error = (
            f"The file is over the import limit of {imports.size_text(limit)}. Split it into several files."
        )
        return _import_page(request, limit, error=error, status=400)
    if upload is None:
        error = "Choose a file to import (the research site's JSON or JSONL export)."
        return _import_page(request, limit, error=error, status=400)
    try:
        transcripts = services.parse_upload(upload.read(limit + 1), upload.name)
        created = services.do_import(request.user, transcripts, upload.name)
    except imports.ImportFormatError as exc:
        return _import_page(request, limit, error=str(exc), status=400)
    except QuotaExceeded as exc:
        error = f"Not imported: each imported row counts as an analysed position, and {exc.message}."
        return _import_page(request, limit, error=error, status=429, retry=exc.retry_after)
    if _is_htmx(request):
        return _import_page(request, limit, created=created)
    messages.info(request, f"Imported {len(created)} {'analysis' if len(created) == 1 else 'analyses'}.")
    return redirect("results:history")


# --- compare -------------------------------------------------------------------------------------------


@require_GET
def compare(request):
    try:
        ids = [int(request.GET.get("a", "")), int(request.GET.get("b", ""))]
    except ValueError:
        return render(
            request,
            "results/compare.html",
            {"error": "Give two analyses to compare: /analyses/compare/?a=<id>&b=<id>."},
            status=400,
        )
    a, b = (_get_analysis_for_user(request, i) for i in ids)
    rows_a, rows_b = services.rows_of(a), services.rows_of(b)
    context = {"a": a, "b": b}
    try:
        services.check_comparable(a, rows_a, b, rows_b)
    except services.CompareError as exc:
        context["error"] = str(exc)
        return render(request, "results/compare.html", context, status=400)
    families = display.family_of(a.metadata, rows_a), display.family_of(b.metadata, rows_b)
    early = [display.EARLY_POSITIONS[f] for f in families]
    preference = services.preference_for(request.user)
    state = display.Display.from_request(request.GET, preference)
    # One scheme over both analyses: the same colour means the same number on both sides.
    scheme = colours.build_scheme(rows_a + rows_b, state.scale, state.palette, min(early))
    sides = []
    for analysis, rows, family, first in zip((a, b), (rows_a, rows_b), families, early, strict=True):
        metrics = display.compare_metrics(family, rows)
        add_current = bool(analysis.metadata.get("add_current_token"))
        views = display.row_views(rows, scheme, add_current, first, display.glyph_parts(analysis.metadata))
        sides.append(
            {
                "analysis": analysis,
                "family": family,
                "family_name": display.FAMILY_NAMES[family],
                "metrics": [(m, display.HEADER_LABELS[m], display.COLUMN_TITLES[m]) for m in metrics],
                "summary": display.summary_items(family, rows, bool(analysis.metadata.get("untrained"))),
                "meta": display.metadata_items(analysis),
                "views": {v.position: v for v in views},
            }
        )
    # A difference only within one family: mse and an NLA's mse_nrm are not on one scale.
    delta_metric = display.CANDIDATE_METRIC[families[0]] if families[0] == families[1] else None
    pairs = []
    for position in sorted(set(sides[0]["views"]) | set(sides[1]["views"])):
        va, vb = sides[0]["views"].get(position), sides[1]["views"].get(position)
        delta = None
        if delta_metric and va and vb:
            x, y = getattr(va, delta_metric), getattr(vb, delta_metric)
            delta = y - x if x is not None and y is not None else None
        pairs.append(
            {
                "position": position,
                "a": va,
                "b": vb,
                "a_cells": [va.text(m) if va else "" for m, _, _ in sides[0]["metrics"]],
                "b_cells": [vb.text(m) if vb else "" for m, _, _ in sides[1]["metrics"]],
                "early": all(v is None or v.early for v in (va, vb)),
                "delta": display.number(delta),
                "better": None if delta is None else ("b" if delta < 0 else "a" if delta > 0 else ""),
            }
        )
    context.update(
        pairs=pairs,
        # one lens' activations on both sides: their difference is an activation to explain
        can_explain_difference=a.lens_id == b.lens_id,
        side_a=sides[0],
        side_b=sides[1],
        mixed=families[0] != families[1],
        delta_label=display.HEADER_LABELS[delta_metric] if delta_metric else "",
        legend_caption=scheme["salience"].describe().replace("this analysis", "both analyses"),
        scheme=scheme,
        salience_scale=scheme["salience"],
        state=state,
        colours_version=colours.palette_version(),
        untrained_notes=sorted(
            {
                display.untrained_note(f, side["analysis"].metadata)
                for f, side in zip(families, sides, strict=True)
            }
        ),
        early_range=display.early_range(families[0] if early[0] <= early[1] else families[1]),
    )
    return render(request, "results/compare.html", context)


# --- the colour classes --------------------------------------------------------------------------------


@login_not_required
@require_GET
def colours_css(request):
    response = HttpResponse(colours.palette_css(), content_type="text/css; charset=utf-8")
    patch_cache_control(response, public=True, max_age=86400)
    return response
