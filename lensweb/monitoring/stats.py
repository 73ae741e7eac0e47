"""What the dashboard and /metrics show, computed from the rows of record (analyses and worker records).

Pure functions of a queryset and `now`: no request, no cache, no process state, so every process computes
the same numbers and tests pin them with a known set of rows. Rows carry no per-position timestamps, so
throughput spreads each job's positions evenly over the time it ran: an estimate, good to a batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum

from lensweb.analyses.models import Analysis, LensLoad, WorkerRecord
from lensweb.analyses.quotas import day_bounds

Status = Analysis.Status
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
THROUGHPUT_WINDOW = timedelta(minutes=5)
LIVE_STATES = (WorkerRecord.State.IDLE, WorkerRecord.State.BUSY)
# Seconds; the buckets of /metrics' latency histograms.
WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RUN_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-quantile (0..1) with linear interpolation between ranks (numpy's default); None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# --- the queue and the workers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueStats:
    depth: int
    oldest_wait_s: float | None
    running: int


def queue_stats(jobs, now: datetime) -> QueueStats:
    queued = jobs.filter(status=Status.QUEUED).aggregate(n=Count("id"), oldest=Min("queued_at"))
    oldest = queued["oldest"]
    return QueueStats(
        depth=queued["n"],
        oldest_wait_s=max(0.0, (now - oldest).total_seconds()) if oldest else None,
        running=jobs.filter(status=Status.RUNNING).count(),
    )


def jobs_by_status(jobs) -> dict[str, int]:
    counts = dict(jobs.order_by().values_list("status").annotate(n=Count("id")))
    return {status: counts.get(status, 0) for status in Status.values}


@dataclass(frozen=True)
class WorkerRow:
    pk: int
    name: str
    host: str
    pid: int
    device: str
    lens_id: str
    memory_bytes: int | None
    state: str
    last_heartbeat: datetime
    heartbeat_age_s: float
    live: bool
    job_id: int | None


def recent_workers(workers, now: datetime, keep: timedelta = DAY):
    """Workers heard from within `keep` (a stopped process' record stays in the table for good)."""
    return workers.filter(last_heartbeat__gte=now - keep).order_by("state", "host", "name")


def worker_rows(workers, now: datetime, stale_after: float, running: dict[int, int] | None = None):
    """Each worker as the dashboard shows it. `live` is what /readyz counts: idle or busy, and heard from
    within `stale_after` seconds. `running` maps worker id to the job it runs."""
    rows = []
    for w in workers:
        age = max(0.0, (now - w.last_heartbeat).total_seconds())
        rows.append(
            WorkerRow(
                pk=w.pk,
                name=w.name,
                host=w.host,
                pid=w.pid,
                device=w.device,
                lens_id=w.lens_id,
                memory_bytes=w.memory_bytes,
                state=w.state,
                last_heartbeat=w.last_heartbeat,
                heartbeat_age_s=age,
                live=w.state in LIVE_STATES and age <= stale_after,
                job_id=(running or {}).get(w.pk),
            )
        )
    return rows


def running_by_worker(jobs) -> dict[int, int]:
    return dict(
        jobs.filter(status=Status.RUNNING, worker__isnull=False).values_list("worker_id", "id").order_by("id")
    )


def workers_by_state(workers) -> dict[str, int]:
    counts = dict(workers.order_by().values_list("state").annotate(n=Count("id")))
    return {state: counts.get(state, 0) for state in WorkerRecord.State.values}


# --- throughput ----------------------------------------------------------------------------------------------


def _is_cached(flag) -> bool:
    return flag is True or flag == 1 or flag == "true"


def _work_spans(jobs, since: datetime, now: datetime):
    """(start, end, positions) of the work done since `since`: running jobs and jobs finished since."""
    rows = jobs.filter(Q(status=Status.RUNNING) | Q(finished_at__gte=since, started_at__isnull=False))
    for status, started, attempt_started, finished, done, base, cached in rows.values_list(
        "status", "started_at", "attempt_started_at", "finished_at", "progress_done", "attempt_base",
        "metadata__cached",
    ):  # fmt: skip
        if not started or _is_cached(cached) or not done:
            continue
        if status == Status.RUNNING:
            attempt = attempt_started or started
            if base and attempt > started:  # earlier attempts' rows, spread over the time before this one
                yield started, attempt, base
            yield attempt, now, max(0, done - base)
        elif finished:
            yield started, finished, done


def _share(start: datetime, end: datetime, amount: float, lo: datetime, hi: datetime) -> float:
    """The part of `amount`, done evenly over [start, end], that falls in [lo, hi)."""
    if end <= start:
        return amount if lo <= end < hi else 0.0
    overlap = (min(end, hi) - max(start, lo)).total_seconds()
    return amount * overlap / (end - start).total_seconds() if overlap > 0 else 0.0


def positions_between(jobs, lo: datetime, hi: datetime, now: datetime) -> float:
    return sum(_share(s, e, n, lo, hi) for s, e, n in _work_spans(jobs, lo, now))


def throughput(jobs, now: datetime, window: timedelta = THROUGHPUT_WINDOW) -> float:
    """Positions per second over the last `window` (cache hits excluded: they cost no work)."""
    return positions_between(jobs, now - window, now, now) / window.total_seconds()


# --- latency and outcomes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    waits: int
    wait_p50: float | None
    wait_p95: float | None
    runs: int
    run_p50: float | None
    run_p95: float | None


def queue_waits(jobs, since: datetime) -> list[float]:
    """started_at − queued_at (seconds) of the jobs that started since `since`."""
    rows = jobs.filter(started_at__gte=since).values_list("queued_at", "created_at", "started_at")
    return [max(0.0, (started - (queued or created)).total_seconds()) for queued, created, started in rows]


def run_times(jobs, since: datetime) -> list[float]:
    """finished_at − started_at (seconds) of the jobs that finished `done` since `since`."""
    rows = jobs.filter(status=Status.DONE, finished_at__gte=since, started_at__isnull=False).values_list(
        "started_at", "finished_at"
    )
    return [max(0.0, (finished - started).total_seconds()) for started, finished in rows]


def latency(jobs, now: datetime, window: timedelta) -> Latency:
    waits, runs = queue_waits(jobs, now - window), run_times(jobs, now - window)
    return Latency(
        waits=len(waits),
        wait_p50=percentile(waits, 0.5),
        wait_p95=percentile(waits, 0.95),
        runs=len(runs),
        run_p50=percentile(runs, 0.5),
        run_p95=percentile(runs, 0.95),
    )


@dataclass(frozen=True)
class Outcomes:
    finished: int
    done: int
    failed: int
    cancelled: int
    error_rate: float | None
    cancel_rate: float | None


def outcomes(jobs, now: datetime, window: timedelta) -> Outcomes:
    """Of the jobs that finished within `window`: how many failed, how many were cancelled."""
    counts = jobs_by_status(jobs.filter(finished_at__gte=now - window, status__in=Analysis.FINAL))
    finished = sum(counts[s] for s in Analysis.FINAL)
    return Outcomes(
        finished=finished,
        done=counts[Status.DONE],
        failed=counts[Status.FAILED],
        cancelled=counts[Status.CANCELLED],
        error_rate=_ratio(counts[Status.FAILED], finished),
        cancel_rate=_ratio(counts[Status.CANCELLED], finished),
    )


# --- the result cache (a later issue): lights up once analyses carry metadata.cached ----------------------------


@dataclass(frozen=True)
class CacheStats:
    enabled: bool  # some analysis carries the flag: there is a cache
    submitted: int
    hits: int
    rate: float | None


def cache_stats(jobs, now: datetime, window: timedelta) -> CacheStats:
    """Hits (metadata.cached true) over all analyses submitted within `window`."""
    enabled = jobs.filter(metadata__has_key="cached").exists()
    counts = jobs.filter(created_at__gte=now - window).aggregate(
        n=Count("id"), hits=Count("id", filter=Q(metadata__cached=True))
    )
    return CacheStats(
        enabled=enabled, submitted=counts["n"], hits=counts["hits"], rate=_ratio(counts["hits"], counts["n"])
    )


def cache_totals(jobs) -> tuple[int, int]:
    """(hits, misses) over every analysis in the table: for /metrics' counters."""
    counts = jobs.aggregate(n=Count("id"), hits=Count("id", filter=Q(metadata__cached=True)))
    return counts["hits"], counts["n"] - counts["hits"]


# --- usage ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    username: str
    jobs: int
    positions: int
    done_positions: int


def usage_today(jobs, now: datetime) -> list[Usage]:
    """Per user, analyses submitted today (UTC day, as the daily quota counts) and their positions."""
    start, _ = day_bounds(now)
    rows = (
        jobs.filter(created_at__gte=start)
        .order_by()
        .values("owner__username")
        .annotate(jobs=Count("id"), positions=Sum("progress_total"), done=Sum("progress_done"))
        .order_by("-positions", "owner__username")
    )
    return [Usage(r["owner__username"], r["jobs"], r["positions"] or 0, r["done"] or 0) for r in rows]


# --- series for the charts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    times: list[datetime]  # the end of each step
    throughput: list[float]  # positions/s over each step
    queue_depth: list[int]  # jobs waiting at the end of each step


def series(jobs, now: datetime, span: timedelta = HOUR, step: timedelta = timedelta(minutes=1)) -> Series:
    """Throughput and queue depth over the last `span`, reconstructed from the job rows."""
    lo = now - span
    steps = int(span / step)
    ends = [lo + step * (i + 1) for i in range(steps)]
    spans = list(_work_spans(jobs, lo, now))
    per_step = [
        sum(_share(s, e, n, end - step, end) for s, e, n in spans) / step.total_seconds() for end in ends
    ]
    waiting = list(
        jobs.filter(Q(status=Status.QUEUED) | Q(started_at__gte=lo) | Q(finished_at__gte=lo))
        .filter(queued_at__lte=now)
        .values_list("queued_at", "started_at", "finished_at")
    )
    depth = [
        sum(
            1
            for queued, started, finished in waiting
            if queued <= end and (started is None or started > end) and (finished is None or finished > end)
        )
        for end in ends
    ]
    return Series(times=ends, throughput=per_step, queue_depth=depth)


# --- histograms for /metrics, counted by the database ------------------------------------------------------------


@dataclass(frozen=True)
class Histogram:
    buckets: list[tuple[float, int]]  # (upper bound, cumulative count), +Inf last
    count: int
    total_s: float


def _histogram(rows, duration, buckets) -> Histogram:
    rows = rows.annotate(d=ExpressionWrapper(duration, output_field=DurationField()))
    aggregates = {f"le{i}": Count("id", filter=Q(d__lte=timedelta(seconds=b))) for i, b in enumerate(buckets)}
    result = rows.aggregate(n=Count("id"), total=Sum("d"), **aggregates)
    cumulative = [(float(b), result[f"le{i}"]) for i, b in enumerate(buckets)]
    total = result["total"]
    return Histogram(
        buckets=[*cumulative, (math.inf, result["n"])],
        count=result["n"],
        total_s=max(0.0, total.total_seconds()) if total is not None else 0.0,
    )


def queue_wait_histogram(jobs) -> Histogram:
    """Every started job's queue wait, cumulative over the table (so that rate() works on it)."""
    return _histogram(jobs.filter(started_at__isnull=False), F("started_at") - F("queued_at"), WAIT_BUCKETS)


def run_time_histogram(jobs) -> Histogram:
    done = jobs.filter(status=Status.DONE, started_at__isnull=False, finished_at__isnull=False)
    return _histogram(done, F("finished_at") - F("started_at"), RUN_BUCKETS)


LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def lens_load_histograms() -> dict[tuple[str, str], Histogram]:
    """Every recorded load of a lens onto a device (analyses.LensLoad), cumulative, by (lens, source)."""
    histograms = {}
    groups = LensLoad.objects.values_list("lens_id", "source").distinct().order_by("lens_id", "source")
    for lens_id, source in groups:
        rows = LensLoad.objects.filter(lens_id=lens_id, source=source)
        aggregates = {f"le{i}": Count("id", filter=Q(seconds__lte=b)) for i, b in enumerate(LOAD_BUCKETS)}
        result = rows.aggregate(n=Count("id"), total=Sum("seconds"), **aggregates)
        cumulative = [(float(b), result[f"le{i}"]) for i, b in enumerate(LOAD_BUCKETS)]
        histograms[lens_id, source] = Histogram(
            buckets=[*cumulative, (math.inf, result["n"])], count=result["n"], total_s=result["total"] or 0.0
        )
    return histograms
