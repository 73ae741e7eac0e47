"""The JSON shapes of the API, as dicts; the operations' response schemas (schemas.py) check them on the way
out, so a field the schema does not name never leaves unnoticed."""

from __future__ import annotations

from django.urls import reverse

from lensweb.analyses import rates
from lensweb.analyses import services as analyses
from lensweb.analyses.models import Analysis, Generation
from lensweb.analyses.status import status_detail


def _time(value):
    return value.isoformat() if value else None


def queue_fields(job) -> dict:
    """A job's place in the queue and where it stands in words (rates.attach sets what status_detail reads)."""
    rates.attach([job])
    position = analyses.queue_position(job)
    return {"queue_position": position, "status_detail": status_detail(job, position)}


def analysis_json(
    request, job: Analysis, *, rows_after: int | None = None, include_rows: bool = True
) -> dict:
    data = {
        "id": job.pk,
        "status": job.status,
        "lens": job.lens_id,
        **queue_fields(job),
        "progress": analysis_progress(job),
        "cancel_requested": job.cancel_requested,
        "input": job.input,
        "options": job.options,
        "metadata": job.metadata or {},
        "error": job.error or None,
        "created_at": _time(job.created_at),
        "started_at": _time(job.started_at),
        "finished_at": _time(job.finished_at),
        "url": request.build_absolute_uri(reverse("api:analysis", args=[job.pk])),
        "html_url": analysis_html_url(request, job.pk),
    }
    if include_rows:
        rows = job.rows.all()
        if rows_after is not None:
            rows = rows.filter(position__gt=rows_after)
        data["rows"] = list(rows.values_list("data", flat=True))
    return data


def analysis_progress(job: Analysis) -> dict:
    rates.attach([job])
    eta = job.eta_seconds()
    return {
        "done": job.progress_done,
        "total": job.progress_total,
        "phase": job.phase or None if job.status == Analysis.Status.RUNNING else None,
        "partial": round(job.progress_now, 3),
        "eta_seconds": None if eta is None else round(eta, 1),
    }


def analysis_html_url(request, analysis_id: int) -> str:
    return request.build_absolute_uri(reverse("results:detail", args=[analysis_id]))


def submitted_json(request, job: Analysis) -> dict:
    queue = queue_fields(job)
    if queue["queue_position"] is None:  # a worker took it already: say so, not "queued" with no position
        job.refresh_from_db()
        queue = queue_fields(job)
    return {
        "id": job.pk,
        "status": job.status,
        **queue,
        # served from the result cache: done at once, nothing computed
        "cached": job.status == Analysis.Status.DONE and bool((job.metadata or {}).get("cached")),
        "url": request.build_absolute_uri(reverse("api:analysis", args=[job.pk])),
        "html_url": analysis_html_url(request, job.pk),
    }


def generation_json(request, generation: Generation) -> dict:
    return {
        "id": generation.pk,
        "status": generation.status,
        "lens": generation.lens_id,
        **queue_fields(generation),
        "progress": {"done": generation.progress_done, "total": generation.progress_total},
        "cancel_requested": generation.cancel_requested,
        "input": generation.input,
        "options": generation.options,
        "result": generation.result,
        "error": generation.error or None,
        "then_analyse": generation.analysis_options is not None,
        "analysis_options": generation.analysis_options,
        "analysis_id": generation.follow_up_id,
        "analysis_url": (
            request.build_absolute_uri(reverse("api:analysis", args=[generation.follow_up_id]))
            if generation.follow_up_id
            else None
        ),
        "analysis_html_url": (
            analysis_html_url(request, generation.follow_up_id) if generation.follow_up_id else None
        ),
        "analysis_error": generation.follow_up_error or None,
        "timings": generation.timings or {},
        "created_at": _time(generation.created_at),
        "started_at": _time(generation.started_at),
        "finished_at": _time(generation.finished_at),
        "url": request.build_absolute_uri(reverse("api:generation", args=[generation.pk])),
        "html_url": request.build_absolute_uri(reverse("analyses:generation", args=[generation.pk])),
    }


def lens_json(spec, notes: dict, entry=None) -> dict:
    return {
        "id": spec.id,
        "name": spec.name,
        "description": notes.get("description") or getattr(spec, "description", "") or "",
        "default": bool(getattr(spec, "default", False)),
        "untrained": bool(notes.get("untrained")),
        # "lens" (a Consistency Lens) or "nla" (a Natural Language Autoencoder): which metrics its rows carry
        "kind": getattr(spec, "kind", "lens"),
        # lenses sharing a base model are grouped by it; these three are known once a worker has loaded it
        "base_model": (entry.base_model or None) if entry else None,
        "layer": entry.layer if entry else None,
        "t_text": entry.t_text if entry else None,
    }


def probe_json(request, probe) -> dict:
    return {
        "id": probe.pk,
        "what": probe.what,
        "status": probe.status,
        "lens": probe.lens_id,
        "analysis_id": probe.analysis_id,
        **queue_fields(probe),
        "request": probe.request,
        "result": probe.result,
        "error": probe.error or None,
        "created_at": _time(probe.created_at),
        "finished_at": _time(probe.finished_at),
        "url": request.build_absolute_uri(reverse("api:probe", args=[probe.pk])),
    }
