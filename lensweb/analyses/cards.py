"""What the live page shows, read from the database: the user's recent jobs with their first rows, one
job's card, the queue positions. fragments.py renders what this reads and queries nothing itself, so its
rendering can run on any thread (the consumer reads here on the database thread)."""

from __future__ import annotations

from django.conf import settings
from django.db.models import F, Prefetch

from . import rates
from .models import Analysis, AnalysisRow, Generation
from .queue import queue_position, queue_positions

UNFINISHED = (Analysis.Status.QUEUED, Analysis.Status.RUNNING)


def live_card_rows() -> int:
    return max(0, settings.LENSWEB_LIVE_CARD_ROWS)


def card_rows(job: Analysis) -> list:
    """The first LENSWEB_LIVE_CARD_ROWS rows by position (prefetched by recent_jobs, else one query)."""
    if hasattr(job, "card_rows"):
        return job.card_rows
    return list(job.rows.order_by("position")[: live_card_rows()])


def _newest_first(jobs: list) -> list:
    return sorted(jobs, key=lambda j: (j.created_at, j.kind, j.pk), reverse=True)


def recent_count() -> int:
    """How many finished cards the analysis page shows (the rest are in History); the page's script keeps
    to it as jobs finish while it is open."""
    return max(0, settings.LENSWEB_RECENT_JOBS)


def _last_finished(queryset, n: int) -> list:
    return list(queryset.order_by(F("finished_at").desc(nulls_last=True), "-created_at", "-id")[:n])


def _finished_order(job) -> tuple:
    return (job.finished_at or job.created_at, job.created_at, job.pk)


def recent_jobs(user) -> list[Analysis | Generation]:
    """Every unfinished job of the user (of either kind), and the last few to finish (recent_count());
    newest first. An analysis with its first rows only (a card never loads an import's 20,000). A generation
    that was followed by its analysis is that analysis' card, so it is left out."""
    analyses = (
        Analysis.objects.filter(owner=user)
        .select_related("source_generation")
        .prefetch_related(
            Prefetch(
                "rows",
                queryset=AnalysisRow.objects.order_by("position")[: live_card_rows()],
                to_attr="card_rows",
            )
        )
    )
    generations = Generation.objects.filter(owner=user, follow_up__isnull=True)
    recent = recent_count()
    unfinished = [*analyses.filter(status__in=UNFINISHED), *generations.filter(status__in=UNFINISHED)]
    finished = sorted(
        [
            *_last_finished(analyses.exclude(status__in=UNFINISHED), recent),
            *_last_finished(generations.exclude(status__in=UNFINISHED), recent),
        ],
        key=_finished_order,
        reverse=True,
    )[:recent]
    rates.attach(unfinished)  # the running ones' ETA
    return _newest_first([*unfinished, *finished])


def load_replay(user) -> tuple[list, dict]:
    """What a replay shows, read on the database thread: the recent jobs with their first rows, and the
    queue. Rendering them (render_replay) reads nothing more, so it can run on any thread."""
    return recent_jobs(user), queue_positions()


def load_card(user, job_id: int) -> tuple[Analysis | None, int | None]:
    """A job of `user` with its first rows, and its queue position, for render_new_card."""
    job = Analysis.objects.filter(pk=job_id, owner=user).select_related("source_generation").first()
    if job is None:
        return None, None
    job.card_rows = card_rows(job)
    rates.attach([job])
    return job, queue_position(job)


def source_generation_id(job: Analysis) -> int | None:
    """The generation this analysis follows up (`source_generation` loaded with the job), else None."""
    try:
        return job.source_generation.pk
    except Generation.DoesNotExist:
        return None


def load_generation_card(user, generation_id: int) -> tuple[Generation | None, int | None]:
    """A generation of `user` and its queue position, for render_new_generation_card; None for one that is
    not theirs, or that was followed by its analysis (that analysis' card stands for it)."""
    gen = Generation.objects.filter(pk=generation_id, owner=user, follow_up__isnull=True).first()
    if gen is None:
        return None, None
    rates.attach([gen])
    return gen, queue_position(gen)
