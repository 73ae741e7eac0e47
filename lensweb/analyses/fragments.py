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


# --- socket messages that fit -------------------------------------------------------------------------------

# Bytes per socket message: a page swaps small pieces as they come, and every message stays far below the
# 64 KiB that `manage.py serve` allows a client's messages (a server's are not limited; see serve.py).
SEND_BUDGET = 16 * 1024
# A card is sent inside an out-of-band wrapper (`<div hx-swap-oob="…">`): room for it.
_CARD_BUDGET = SEND_BUDGET - 100


def size(html: str) -> int:
    return len(html.encode("utf-8", "surrogatepass"))


def chunked(pieces: list[str], budget: int) -> list[list[str]]:
    """`pieces` in order, grouped so that each group's total size stays within `budget` (a piece larger
    than that alone makes a group of its own)."""
    groups: list[list[str]] = []
    room = 0
    for piece in pieces:
        n = size(piece)
        if not groups or n > room:
            groups.append([])
            room = budget
        groups[-1].append(piece)
        room -= n
    return groups


def pack(fragments: list[str], budget: int = SEND_BUDGET) -> list[str]:
    """Self-contained fragments (each a top-level element the ws extension swaps), as few messages as
    fit the budget. Order is kept: a card always comes before the rows appended to it."""
    return ["".join(group) for group in chunked(fragments, budget)]


def wrap_rows(job_id: int, row_html: list[str]) -> str:
    """Rows appended out of band to the job's table body."""
    return f'<tbody hx-swap-oob="beforeend:#rows-{job_id}">{"".join(row_html)}</tbody>'


def wrap_rows_chunks(job_id: int, row_html: list[str], budget: int = SEND_BUDGET) -> list[str]:
    """Rows appended out of band, as fragments of at most `budget` bytes each (a large batch is split)."""
    overhead = size(wrap_rows(job_id, []))
    return [wrap_rows(job_id, group) for group in chunked(row_html, budget - overhead)]


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


def live_card_rows() -> int:
    return max(0, settings.LENSWEB_LIVE_CARD_ROWS)


def _card_rows(job: Analysis) -> list:
    """The first LENSWEB_LIVE_CARD_ROWS rows by position (prefetched by recent_jobs, else one query)."""
    if hasattr(job, "card_rows"):
        return job.card_rows
    return list(job.rows.order_by("position")[: live_card_rows()])


def card_context(job: Analysis, position: int | None, rows: list | None = None) -> dict:
    """A card's context: its first rows as HTML, and how many more the results page has (every row of an
    analysis is counted in progress_done)."""
    rows = _card_rows(job) if rows is None else rows
    row_html = [render_row(job, r.data) for r in rows]
    return {"job": job, "position": position, "rows": row_html, "more": max(0, job.progress_done - len(rows))}


def render_more(job_id: int, more: int) -> str:
    return render_to_string("analyses/partials/job-more.html", {"job": {"pk": job_id}, "more": more})


def _render_card(context: dict) -> str:
    return render_to_string("analyses/partials/job-card.html", context)


def fit_card(context: dict, budget: int = _CARD_BUDGET) -> tuple[dict, list[str]]:
    """A card for the socket: its context with as many rows as fit `budget`, and the rest of its rows as
    appended fragments that fit."""
    rows = context["rows"]
    room = budget - size(_render_card({**context, "rows": []}))
    inline = 0
    for html in rows:
        room -= size(html)
        if room < 0:
            break
        inline += 1
    rest = wrap_rows_chunks(context["job"].pk, rows[inline:]) if inline < len(rows) else []
    return {**context, "rows": rows[:inline]}, rest


@dataclass
class Shown:
    """What a socket has put on its page for one job: the replay filter in the consumer uses it."""

    job_id: int
    positions: set[int] = field(default_factory=set)  # the rows on the card (at most the cap)
    done: int = 0
    final: bool = False
    more: int = 0  # rows the card leaves to the results page


def _shown(context: dict, rows: list) -> Shown:
    job = context["job"]
    return Shown(job.pk, {r.position for r in rows}, job.progress_done, job.is_final, context["more"])


def recent_jobs(user) -> list[Analysis]:
    """Every unfinished job of the user, then the most recent finished ones; newest first. Each with its
    first rows only: a card never loads an import's 20,000."""
    qs = Analysis.objects.filter(owner=user).prefetch_related(
        Prefetch(
            "rows",
            queryset=AnalysisRow.objects.order_by("position")[: live_card_rows()],
            to_attr="card_rows",
        )
    )
    unfinished = qs.filter(status__in=UNFINISHED)
    finished = qs.exclude(status__in=UNFINISHED)[: settings.LENSWEB_RECENT_JOBS]
    return sorted([*unfinished, *finished], key=lambda j: (j.created_at, j.pk), reverse=True)


def jobs_context(user) -> tuple[dict, list[Analysis]]:
    jobs = recent_jobs(user)
    positions = queue_positions()
    return {"cards": [card_context(job, positions.get(job.pk)) for job in jobs]}, jobs


def load_replay(user) -> tuple[list[Analysis], dict[int, int]]:
    """What a replay shows, read on the database thread: the recent jobs with their first rows, and the
    queue. Rendering them (render_replay) reads nothing more, so it can run on any thread."""
    return recent_jobs(user), queue_positions()


def render_replay(jobs: list[Analysis], positions: dict[int, int]) -> tuple[list[str], list[Shown]]:
    """The replay on (re)connect, as messages that fit: the #jobs list as the database has it now, with the
    leading cards that fit inline, then each further card inserted before the list's end, each card
    followed by the rows that did not fit in it."""
    room = SEND_BUDGET - size(render_to_string("analyses/partials/jobs.html", {"cards": []}))
    inline, rest, shown = [], [], []
    for job in jobs:
        rows = _card_rows(job)
        context = card_context(job, positions.get(job.pk), rows)
        shown.append(_shown(context, rows))
        fitted, more_rows = fit_card(context)
        card = _render_card(fitted)
        if len(inline) == len(shown) - 1 and size(card) <= room:  # every card before it is inline too
            inline.append(fitted)
            room -= size(card)
        else:
            rest.append(f'<div hx-swap-oob="beforebegin:#jobs-end">{card}</div>')
        rest.extend(more_rows)
    first = render_to_string("analyses/partials/jobs.html", {"cards": inline})
    return [first, *pack(rest)], shown


def load_card(user, job_id: int) -> tuple[Analysis | None, int | None]:
    """A job of `user` with its first rows, and its queue position, for render_new_card."""
    job = Analysis.objects.filter(pk=job_id, owner=user).first()
    if job is None:
        return None, None
    job.card_rows = _card_rows(job)
    return job, queue_position(job)


def render_new_card(job: Analysis, position: int | None) -> tuple[list[str], Shown]:
    """A card for the top of #jobs (a job submitted after the socket connected), with its first rows, as
    messages that fit."""
    rows = _card_rows(job)
    context = card_context(job, position, rows)
    fitted, more_rows = fit_card(context)
    card = f'<div hx-swap-oob="afterbegin:#jobs">{_render_card(fitted)}</div>'
    return pack([card, *more_rows]), _shown(context, rows)


def render_socket_message(text: str, level: str = "error") -> str:
    return render_to_string("analyses/partials/socket-message.html", {"text": text, "level": level})
