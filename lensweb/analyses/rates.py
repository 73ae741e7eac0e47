"""Measured times: seconds per position, measured on finished analyses and kept per lens and option set, for
the ETA of jobs that have no row yet; each lens' last load time, from the workers' records; and the
attachment of both to jobs before their cards render (rendering reads no database)."""

from __future__ import annotations

from collections.abc import Iterable

from django.utils import timezone

from .models import Analysis, PositionRate, WorkerRecord

# What a queued job whose lens no live worker serves says, on its card and in the API's status_detail.
UNSERVED_NOTE = "waiting for a worker that serves lens {lens}: none is running now; it starts when one does"
# A new measurement's weight in the kept rate: recent jobs count most (a lens moved to a GPU, a busy CPU).
WEIGHT = 0.3


def options_key(options: dict) -> str:
    """The options that change the work per position (k and the optional passes); not the seed, nor the
    temperature (sampling costs the same)."""
    options = options or {}
    parts = [f"k={int(options.get('best_of_k') or 1)}"]
    parts += [name for name in ("salience", "kl", "logit_lens", "keep_candidates") if options.get(name)]
    return ",".join(parts)


def record(job: Analysis) -> None:
    """A finished analysis' measured seconds per position, folded into its lens and option set's rate."""
    timings = job.timings or {}
    positions = job.progress_done - job.attempt_base
    # work_s: a job that shared its batches with others is charged its share of their time, not the wall time
    work = timings.get("work_s") or (timings.get("attempt_s") or 0) - (timings.get("load_s") or 0)
    if positions <= 0 or work <= 0 or (job.metadata or {}).get("cached"):
        return
    measured = work / positions
    key = options_key(job.options)
    kept, created = PositionRate.objects.get_or_create(
        lens_id=job.lens_id, options_key=key, defaults={"seconds_per_position": measured, "jobs": 1}
    )
    if not created:
        kept.seconds_per_position = (1 - WEIGHT) * kept.seconds_per_position + WEIGHT * measured
        kept.jobs += 1
        kept.save(update_fields=["seconds_per_position", "jobs", "updated_at"])


def attach(jobs: Iterable) -> None:
    """Set `expected_rate` (and, while loading, `expected_load_left`) on running analyses, for
    Job.eta_seconds, and `waiting_note` on queued jobs of any kind whose lens no live worker serves (they wait
    for one: LENSWEB_WORKER_LENSES); a few queries for any number of jobs."""
    jobs = list(jobs)
    queued = [job for job in jobs if job.status == Analysis.Status.QUEUED]
    served = served_lenses() if queued else set()
    for job in queued:
        job.waiting_note = "" if job.lens_id in served else UNSERVED_NOTE.format(lens=job.lens_id)
    running = [job for job in jobs if job.kind == Analysis.kind and job.status == Analysis.Status.RUNNING]
    if not running:
        return
    rates = {
        (r.lens_id, r.options_key): r.seconds_per_position
        for r in PositionRate.objects.filter(lens_id__in={job.lens_id for job in running})
    }
    loading = {job.lens_id for job in running if job.phase == "loading"}
    load_left = {lens_id: _load_left(lens_id) for lens_id in loading}
    for job in running:
        job.expected_rate = rates.get((job.lens_id, options_key(job.options)))
        job.expected_load_left = load_left.get(job.lens_id)


def served_lenses() -> set[str]:
    """The ids of the lenses some live worker serves."""
    return {lens for lenses in WorkerRecord.live().values_list("lenses", flat=True) for lens in lenses or []}


def last_load_seconds(lens_id: str) -> float | None:
    """The most recent load time any worker measured for the lens (stopped ones' records included)."""
    for seconds in (
        WorkerRecord.objects.filter(load_seconds__has_key=lens_id)
        .order_by("-last_heartbeat")
        .values_list("load_seconds", flat=True)[:1]
    ):
        return seconds.get(lens_id)
    return None


def load_left(load_seconds: float | None, loading_since, now) -> float | None:
    """About how long a load that started at `loading_since` has left, from the lens' last measured load
    time; None before any load was measured."""
    if load_seconds is None:
        return None
    elapsed = (now - loading_since).total_seconds() if loading_since else 0.0
    return max(0.0, load_seconds - elapsed)


def _load_left(lens_id: str) -> float | None:
    """The load of `lens_id` started last, from the workers' records."""
    since = (
        WorkerRecord.objects.filter(loading_lens=lens_id, loading_since__isnull=False)
        .order_by("-loading_since")
        .values_list("loading_since", flat=True)
        .first()
    )
    return load_left(last_load_seconds(lens_id), since, timezone.now())
