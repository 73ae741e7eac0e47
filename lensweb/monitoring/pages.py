"""The staff dashboard (a page and the partial it polls), and the lens registry page. Thin: numbers come
from stats.py, pictures from charts.py."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from lensweb.analyses.engine import get_engine
from lensweb.analyses.models import Analysis, WorkerRecord
from lensweb.cache import services as result_cache

from . import charts, stats
from .access import staff_required
from .models import RequestLogEntry

STOP_POLLING = 286
RECENT_REQUESTS = 20
RUNNING_SHOWN = 20


def dashboard_context(now=None) -> dict:
    now = now or timezone.now()
    jobs = Analysis.objects.all()
    series = stats.series(jobs, now)
    labels = (timezone.localtime(series.times[0]).strftime("%H:%M"), "now") if series.times else ("", "")
    return {
        "now": now,
        "queue": stats.queue_stats(jobs, now),
        "running": jobs.filter(status=Analysis.Status.RUNNING)
        .select_related("owner", "worker")
        .order_by("started_at")[:RUNNING_SHOWN],
        "workers": stats.worker_rows(
            stats.recent_workers(WorkerRecord.objects.all(), now),
            now,
            settings.LENSWEB_STALE_AFTER,
            stats.running_by_worker(jobs),
        ),
        "throughput": stats.throughput(jobs, now),
        "throughput_window": stats.THROUGHPUT_WINDOW,
        "windows": [
            {
                "name": name,
                "latency": stats.latency(jobs, now, window),
                "outcomes": stats.outcomes(jobs, now, window),
                "cache": stats.cache_stats(jobs, now, window),
            }
            for name, window in (("last hour", stats.HOUR), ("last day", stats.DAY))
        ],
        "result_cache": result_cache.size(),
        "usage": stats.usage_today(jobs, now),
        "charts": [
            charts.line_chart("Throughput, last hour", "positions/s", series.throughput, labels),
            charts.line_chart("Queue depth, last hour", "jobs waiting", series.queue_depth, labels),
        ],
        "requests": RequestLogEntry.objects.order_by("-created_at", "-id")[:RECENT_REQUESTS],
        "poll_seconds": 5,
    }


@require_GET
@staff_required
def dashboard(request):
    return render(request, "monitoring/dashboard.html", dashboard_context())


@login_not_required  # a poll that outlived its session is answered below, not with the login page
@require_GET
def live(request):
    """The partial the dashboard polls; named after the element it replaces (#monitoring-live)."""
    if not request.user.is_authenticated:
        # 286: htmx swaps this in and stops polling (a redirect would swap the whole login page in).
        return render(request, "monitoring/partials/monitoring-live-ended.html", status=STOP_POLLING)
    return _live(request)


@staff_required
def _live(request):
    return render(request, "monitoring/partials/monitoring-live.html", dashboard_context())


@require_GET
@staff_required
def lenses(request):
    """The lens registry (read-only: lenses are configuration, not rows), and which workers hold each."""
    engine = get_engine()
    try:
        specs, error = list(engine.lenses()), ""
    except Exception as exc:  # a broken registry file: say what is wrong rather than 500
        specs, error = [], str(exc)
    now = timezone.now()
    workers = stats.worker_rows(
        stats.recent_workers(WorkerRecord.objects.all(), now), now, settings.LENSWEB_STALE_AFTER
    )
    start = now - stats.DAY
    jobs_today = dict(
        Analysis.objects.filter(created_at__gte=start)
        .order_by()
        .values_list("lens_id")
        .annotate(n=Count("id"))
    )
    rows = [
        {
            "spec": spec,
            "notes": engine.lens_notes(spec),
            "workers": [w for w in workers if w.lens_id == spec.id and w.live],
            "jobs_day": jobs_today.get(spec.id, 0),
        }
        for spec in specs
    ]
    return render(request, "monitoring/lenses.html", {"lenses": rows, "error": error})
