"""HTML fragments, each from the partial named after the element id it replaces. The page and the socket
render the same partials, so a reload and a live update can never disagree."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Prefetch
from django.template.loader import render_to_string

from lensweb.results.colours import build_scale

from .models import Analysis, AnalysisRow
from .queue import queue_position, queue_positions

UNFINISHED = (Analysis.Status.QUEUED, Analysis.Status.RUNNING)

# The lenses were never trained on positions 0–5: their rows are shown, but de-emphasised.
UNTRAINED_POSITIONS = 6


def _visible(token: str) -> str:
    return token.replace("\n", "↵").replace("\t", "⇥") if token else token


CARD_SALIENCE_SCALE = build_scale("salience", [], fitted=False)


def _number(value, digits=4):
    if isinstance(value, int | float) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return ""


def _salience_classes(saliences, n):
    """The results pages' own colour classes on their fixed salience scale: a card grows batch by batch, so
    only a fixed scale keeps a word's colour from changing as rows arrive, and it agrees with every view."""
    if not saliences or len(saliences) != n:
        return [""] * n
    return [CARD_SALIENCE_SCALE.css_class(s) for s in saliences]


def _logit_lens(top) -> str:
    if not top:
        return ""
    items = []
    for item in top[:5]:
        if isinstance(item, dict):
            item = item.get("token", "")
        elif isinstance(item, list | tuple):
            item = item[0] if item else ""
        items.append(_visible(str(item)))
    return " · ".join(items)


def row_view(data: dict) -> dict:
    words = data.get("explanation_tokens") or [data.get("explanation", "")]
    return {
        "position": data["position"],
        "token": _visible(data.get("token", "")),
        "early": data["position"] < UNTRAINED_POSITIONS,
        "words": [
            {"text": _visible(w), "cls": c, "salience": _number(s, 3)}
            for w, c, s in zip(
                words,
                _salience_classes(data.get("token_salience"), len(words)),
                data.get("token_salience") or [None] * len(words),
                strict=True,
            )
        ],
        "explanation": data.get("explanation", ""),
        "mse": _number(data.get("mse")),
        "relative_rmse": _number(data.get("relative_rmse")),
        "kl": _number(data.get("kl")),
        "logit_lens": _logit_lens(data.get("logit_lens_top")),
    }


def render_row(job: Analysis, data: dict) -> str:
    return render_to_string("analyses/partials/row.html", {"job": job, "row": row_view(data)})


def wrap_rows(job_id: int, row_html: list[str]) -> str:
    """Rows appended out of band to the job's table body: one small fragment per batch."""
    return f'<tbody hx-swap-oob="beforeend:#rows-{job_id}">{"".join(row_html)}</tbody>'


def render_progress(job: Analysis) -> str:
    return render_to_string("analyses/partials/job-progress.html", {"job": job})


def render_queue(job: Analysis, position: int | None) -> str:
    return render_to_string("analyses/partials/job-queue.html", {"job": job, "position": position})


def render_state(job: Analysis, position: int | None) -> str:
    """Everything about a job but its rows: status and cancel button, queue, progress, summary."""
    context = {"job": job, "position": position}
    return "".join(
        render_to_string(f"analyses/partials/{name}.html", context)
        for name in ("job-status", "job-queue", "job-progress", "job-summary")
    )


def card_context(job: Analysis, position: int | None) -> dict:
    rows = [row_view(r.data) for r in job.rows.all()]
    return {"job": job, "position": position, "rows": rows}


@dataclass
class Shown:
    """What a socket has put on its page for one job: the replay filter in the consumer uses it."""

    job_id: int
    positions: set[int] = field(default_factory=set)
    done: int = 0
    final: bool = False


def _shown(job: Analysis) -> Shown:
    return Shown(job.pk, {r.position for r in job.rows.all()}, job.progress_done, job.is_final)


def recent_jobs(user) -> list[Analysis]:
    """Every unfinished job of the user, then the most recent finished ones; newest first."""
    qs = Analysis.objects.filter(owner=user).prefetch_related(
        Prefetch("rows", queryset=AnalysisRow.objects.order_by("position"))
    )
    unfinished = qs.filter(status__in=UNFINISHED)
    finished = qs.exclude(status__in=UNFINISHED)[: settings.LENSWEB_RECENT_JOBS]
    return sorted([*unfinished, *finished], key=lambda j: (j.created_at, j.pk), reverse=True)


def jobs_context(user) -> tuple[dict, list[Analysis]]:
    jobs = recent_jobs(user)
    positions = queue_positions()
    return {"cards": [card_context(job, positions.get(job.pk)) for job in jobs]}, jobs


def render_jobs(user) -> tuple[str, list[Shown]]:
    """The replay on (re)connect: the whole #jobs list as the database has it now."""
    context, jobs = jobs_context(user)
    return render_to_string("analyses/partials/jobs.html", context), [_shown(job) for job in jobs]


def render_new_card(user, job_id: int) -> tuple[str, Shown | None]:
    """A card for the top of #jobs (a job submitted after the socket connected), with its rows so far."""
    job = (
        Analysis.objects.filter(pk=job_id, owner=user)
        .prefetch_related(Prefetch("rows", queryset=AnalysisRow.objects.order_by("position")))
        .first()
    )
    if job is None:
        return "", None
    card = render_to_string("analyses/partials/job-card.html", card_context(job, queue_position(job)))
    return f'<div hx-swap-oob="afterbegin:#jobs">{card}</div>', _shown(job)


def render_socket_message(text: str, level: str = "error") -> str:
    return render_to_string("analyses/partials/socket-message.html", {"text": text, "level": level})
