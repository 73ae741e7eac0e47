"""/metrics: Prometheus text computed from the database at scrape time.

A fresh CollectorRegistry per scrape holding one custom collector: no process-global metric state, so any
number of web processes answer the same thing (the database is the source; the counts of unauthenticated
requests, which must cost no database write, come from the shared cache of counters.py).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from lensweb.analyses.models import Analysis, Generation, WorkerRecord
from lensweb.cache import services as result_cache

from . import counters, stats
from .access import metrics_allowed


def _buckets(histogram: stats.Histogram) -> list[tuple[str, int]]:
    return [("+Inf" if bound == float("inf") else repr(bound), n) for bound, n in histogram.buckets]


def _histogram(name: str, doc: str, histogram: stats.Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=_buckets(histogram), sum_value=histogram.total_s)


def _lens_metrics(now):
    """Where each live worker holds each lens it serves (1 or 0 on the device and in its CPU cache), and the
    load times of lenses onto devices, by lens and source (its files, or the CPU cache)."""
    loaded = GaugeMetricFamily(
        "lensweb_lens_loaded",
        "1 if the worker holds the lens there (where: device or cpu_cache), else 0; every lens each live "
        "worker serves.",
        labels=["lens", "worker", "where"],
    )
    for worker in WorkerRecord.live().order_by("name"):
        for lens in worker.lenses or []:
            loaded.add_metric([lens, worker.name, "device"], 1 if worker.lens_id == lens else 0)
            loaded.add_metric(
                [lens, worker.name, "cpu_cache"], 1 if lens in (worker.cached_lenses or []) else 0
            )
    yield loaded
    load_times = HistogramMetricFamily(
        "lensweb_lens_load_seconds",
        "Seconds each load of a lens onto a worker's device took, by lens and source (disk or cpu_cache).",
        labels=["lens", "source"],
    )
    for (lens, source), histogram in stats.lens_load_histograms().items():
        load_times.add_metric([lens, source], _buckets(histogram), histogram.total_s)
    yield load_times


class LenswebCollector:
    """Queue, workers, jobs, throughput, latency and cache, read from the rows of record."""

    def __init__(self, now=None):
        self.now = now

    def collect(self):
        now = self.now or timezone.now()
        jobs = Analysis.objects.all()
        queue = stats.queue_stats(jobs, now)
        yield GaugeMetricFamily("lensweb_queue_depth", "Analyses waiting in the queue.", value=queue.depth)
        yield GaugeMetricFamily(
            "lensweb_queue_oldest_age_seconds",
            "How long the oldest queued analysis has waited (0 when none waits).",
            value=queue.oldest_wait_s or 0.0,
        )
        yield GaugeMetricFamily("lensweb_running_jobs", "Analyses running now.", value=queue.running)

        by_status = GaugeMetricFamily(
            "lensweb_analyses", "Analyses in the table, by status.", labels=["status"]
        )
        for status, n in stats.jobs_by_status(jobs).items():
            by_status.add_metric([status], n)
        yield by_status
        generations = GaugeMetricFamily(
            "lensweb_generations", "Generations in the table, by status.", labels=["status"]
        )
        for status, n in stats.jobs_by_status(Generation.objects.all()).items():
            generations.add_metric([status], n)
        yield generations

        workers = WorkerRecord.objects.all()
        by_state = GaugeMetricFamily(
            "lensweb_workers", "Workers heard from in the last day, by state.", labels=["state"]
        )
        for state, n in stats.workers_by_state(stats.recent_workers(workers, now)).items():
            by_state.add_metric([state], n)
        yield by_state
        labels = ["worker", "host", "device", "lens"]
        age = GaugeMetricFamily(
            "lensweb_worker_heartbeat_age_seconds",
            "Seconds since the last heartbeat of each worker heard from in the last day (stopped ones left out).",
            labels=labels,
        )
        memory = GaugeMetricFamily(
            "lensweb_worker_memory_bytes", "Device (or resident) memory each worker reports.", labels=labels
        )
        live = GaugeMetricFamily(
            "lensweb_worker_live", "1 if the worker counts as live for /readyz, else 0.", labels=labels
        )
        recent = stats.recent_workers(workers.exclude(state=WorkerRecord.State.STOPPED), now)
        for w in stats.worker_rows(recent, now, settings.LENSWEB_STALE_AFTER):
            values = [w.name, w.host, w.device, w.lens_id]
            age.add_metric(values, w.heartbeat_age_s)
            live.add_metric(values, 1 if w.live else 0)
            if w.memory_bytes is not None:
                memory.add_metric(values, w.memory_bytes)
        yield age
        yield memory
        yield live
        yield from _lens_metrics(now)

        yield GaugeMetricFamily(
            "lensweb_positions_per_second",
            f"Positions analysed per second over the last {int(stats.THROUGHPUT_WINDOW.total_seconds())} s.",
            value=stats.throughput(jobs, now),
        )
        yield _histogram(
            "lensweb_queue_wait_seconds",
            "Queue wait (started_at - queued_at) of every started analysis.",
            stats.queue_wait_histogram(jobs),
        )
        yield _histogram(
            "lensweb_run_seconds",
            "Run time (finished_at - started_at) of every analysis that finished done.",
            stats.run_time_histogram(jobs),
        )
        hits, misses = stats.cache_totals(jobs)
        yield CounterMetricFamily(
            "lensweb_cache_hits", "Analyses answered from the result cache (metadata.cached).", value=hits
        )
        yield CounterMetricFamily(
            "lensweb_cache_misses", "Analyses not answered from the result cache.", value=misses
        )
        cache = result_cache.size()
        yield GaugeMetricFamily("lensweb_cache_entries", "Results in the result cache.", value=cache.entries)
        yield GaugeMetricFamily(
            "lensweb_cache_size_bytes",
            "Stored (compressed) size of the result cache.",
            value=cache.size_bytes,
        )
        unauthenticated = CounterMetricFamily(
            "lensweb_unauthenticated_requests",
            "Submits, cancels and API calls refused for want of a login or a valid API key (not in the "
            "request log), by client and endpoint kind.",
            labels=["client", "kind"],
        )
        for (client, kind), n in counters.unauthenticated_totals().items():
            unauthenticated.add_metric([client, kind], n)
        yield unauthenticated


def render(now=None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LenswebCollector(now))
    return generate_latest(registry)


@login_not_required  # a scraper has no session: metrics_allowed() decides
@require_GET
def metrics_view(request):
    if not metrics_allowed(request):
        response = HttpResponse("metrics: staff session or the metrics bearer token required\n", status=403)
        if settings.LENSWEB_METRICS_TOKEN:
            response.status_code = 401
            response["WWW-Authenticate"] = 'Bearer realm="lensweb-metrics"'
        response["Content-Type"] = "text/plain; charset=utf-8"
        return response
    response = HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
