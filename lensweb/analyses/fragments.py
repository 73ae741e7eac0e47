"""HTML fragments, each from the partial named after the element id it replaces. The page and the socket
render the same partials, so a reload and a live update can never disagree."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.template.loader import render_to_string

from lensweb.analyses.colours import build_scale

from . import rowview
from .families import FIRST_TRAINED, LENS, NLA, family_of
from .models import Analysis, Generation
from .rowview import RowView

CARD_SALIENCE_SCALE = build_scale("salience", [], fitted=False)


# A card's metric columns per lens family: a Consistency Lens' mse, relative RMSE and KL; a Natural Language
# Autoencoder's fve, cos, mse_nrm and KL (shown where the other shows mse; its raw mse is in the export).
CARD_COLUMNS = {
    "lens": (
        ("mse", "mse", "mean squared error of the reconstructed activation (lower is better)"),
        ("relative_rmse", "rel. RMSE", "RMSE relative to the activation's norm"),
        ("kl", "KL", "KL divergence of the next-token distribution with the reconstruction patched in"),
    ),
    "nla": (
        ("fve_nrm", "fve", "fraction of variance explained, 1 − mse_nrm / V (higher is better)"),
        ("cosine_similarity", "cos", "cosine of the reconstruction and the activation (higher is better)"),
        ("mse_nrm", "mse_nrm", "mse of the two rescaled to norm √d: 2(1 − cos) (lower is better)"),
        ("kl", "KL", "KL divergence of the next-token distribution with the reconstruction patched in"),
    ),
}


def row_family(data: dict) -> str:
    return family_of(None, [data])


def job_family(job: Analysis) -> str:
    """The card's columns: the lens' kind, from the metadata a worker recorded, else from the registry (a
    queued card has no metadata yet, and its header must match the rows it will get)."""
    kind = (job.metadata or {}).get("kind")
    if kind is None:
        try:
            from .engine import get_engine

            kind = getattr(get_engine().get_spec(job.lens_id), "kind", "lens")
        except Exception:  # a lens gone from the registry, or an engine without kinds: the classic columns
            kind = "lens"
    return family_of({"kind": kind})


def asked_columns(job: Analysis, family: str | None = None) -> tuple[tuple, bool]:
    """The card's metric columns and whether it has the logit-lens column: KL and the logit lens only when
    the job asked for them (a column of blanks says nothing)."""
    options = job.options or {}
    columns = tuple(c for c in CARD_COLUMNS[family or job_family(job)] if c[0] != "kl" or options.get("kl"))
    return columns, bool(options.get("logit_lens"))


EARLY_NOTES = {
    LENS: "the lenses were never trained on positions 0–5",
    NLA: "the autoencoder was trained on positions 50 and later only",
}


def row_view(data: dict, columns: tuple | None = None, glyphs: dict | None = None) -> RowView:
    """A card's row (rowview.RowView, as the results pages have it) with its words on the fixed salience
    scale and its card's metric cells; `columns`: those cells (by default every column of the row's family);
    `glyphs`: its analysis' split glyphs (rowview.glyph_parts)."""
    family = row_family(data)
    view = rowview.row_view(data, FIRST_TRAINED[family], glyphs).coloured(CARD_SALIENCE_SCALE)
    view.cells = [view.text(key) for key, _, _ in (columns or CARD_COLUMNS[family])]
    return view


def render_row(job: Analysis, data: dict) -> str:
    family = row_family(data)
    columns, logit_lens = asked_columns(job, family)
    return render_to_string(
        "analyses/partials/row.html",
        {
            "job": job,
            "row": row_view(data, columns, rowview.glyph_parts(job.metadata)),
            "logit_lens": logit_lens,
            "early_note": EARLY_NOTES[family],
        },
    )


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


def render_queue(job, position: int | None) -> str:
    """Either kind's queue line (the queue holds both; notify.queue_moved sends them together)."""
    if job.kind == Generation.kind:
        return render_to_string("analyses/partials/gen-queue.html", {"gen": job, "position": position})
    return render_to_string("analyses/partials/job-queue.html", {"job": job, "position": position})


def render_state(job: Analysis, position: int | None) -> str:
    """Everything about a job but its rows: status and cancel button, queue, progress, summary."""
    context = {"job": job, "position": position}
    return "".join(
        render_to_string(f"analyses/partials/{name}.html", context)
        for name in ("job-status", "job-queue", "job-progress", "job-summary")
    )


def card_context(job: Analysis, position: int | None, rows: list | None = None) -> dict:
    """A card's context: its first rows as HTML, and how many more the results page has (every row of an
    analysis is counted in progress_done)."""
    rows = job.card_rows if rows is None else rows  # loaded with the job (cards.py)
    columns, logit_lens = asked_columns(job)
    row_html = [render_row(job, r.data) for r in rows]
    return {
        "job": job,
        "position": position,
        "rows": row_html,
        "more": max(0, job.progress_done - len(rows)),
        "columns": columns,
        "logit_lens": logit_lens,
        # No table for a job that ended without a row (cancelled while queued): an empty table says nothing.
        # Decided on all its card rows, not on those a socket message has room for (fit_card).
        "table": bool(rows) or not job.is_final,
    }


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
    kind: str = Analysis.kind
    replaced: bool = False  # a generation whose card became its follow-up analysis' card


def _shown(context: dict, rows: list) -> Shown:
    job = context["job"]
    return Shown(job.pk, {r.position for r in rows}, job.progress_done, job.is_final, context["more"])


def _position(positions: dict, job) -> int | None:
    return positions.get((job.kind, job.pk))


def _context(job, position: int | None) -> dict:
    if job.kind == Generation.kind:
        return generation_context(job, position)
    return card_context(job, position)


def jobs_context(jobs: list, positions: dict) -> dict:
    """The #jobs list's context: `jobs` and their queue `positions` as cards.load_replay reads them."""
    return {"cards": [_context(job, _position(positions, job)) for job in jobs]}


def render_replay(jobs: list, positions: dict) -> tuple[list[str], list[Shown]]:
    """The replay on (re)connect, as messages that fit: the #jobs list as the database has it now, with the
    leading cards that fit inline, then each further card inserted before the list's end, each card
    followed by the rows that did not fit in it."""
    room = SEND_BUDGET - size(render_to_string("analyses/partials/jobs.html", {"cards": []}))
    # A card fits inside the list as well as inside an out-of-band wrapper: the first one is always inline.
    card_budget = min(_CARD_BUDGET, room)
    inline, rest, shown = [], [], []
    for job in jobs:
        if job.kind == Generation.kind:
            fitted = generation_context(job, _position(positions, job))
            card, more_rows = _render_generation_card(fitted), []
            shown.append(Shown(job.pk, final=job.is_final, kind=Generation.kind))
        else:
            rows = job.card_rows
            context = card_context(job, _position(positions, job), rows)
            shown.append(_shown(context, rows))
            fitted, more_rows = fit_card(context, card_budget)
            card = _render_card(fitted)
        if len(inline) == len(shown) - 1 and size(card) <= room:  # every card before it is inline too
            inline.append(fitted)
            room -= size(card)
        else:
            rest.append(f'<div hx-swap-oob="beforebegin:#jobs-end">{card}</div>')
        rest.extend(more_rows)
    first = render_to_string("analyses/partials/jobs.html", {"cards": inline})
    return [first, *pack(rest)], shown


def render_new_card(
    job: Analysis, position: int | None, replace: int | None = None
) -> tuple[list[str], Shown]:
    """A card for the top of #jobs (a job submitted after the socket connected), with its first rows, as
    messages that fit. `replace`: the generation whose card this one takes the place of (its follow-up)."""
    rows = job.card_rows
    context = card_context(job, position, rows)
    fitted, more_rows = fit_card(context)
    if replace is not None:
        card = _render_card({**fitted, "oob": f"outerHTML:#gen-{replace}"})
    else:
        card = f'<div hx-swap-oob="afterbegin:#jobs">{_render_card(fitted)}</div>'
    return pack([card, *more_rows]), _shown(context, rows)


# --- generations -----------------------------------------------------------------------------------------

# How much of a plain prompt a card shows: its end, where the generated text carries on.
PROMPT_TAIL_CHARS = 400
TURN_PREVIEW_CHARS = 300


def _prompt_view(gen: Generation) -> dict:
    if gen.is_chat:
        turns = [
            {"role": str(m.get("role", "")), "content": _cut(str(m.get("content", "")), TURN_PREVIEW_CHARS)}
            for m in gen.input.get("messages") or []
        ]
        return {"turns": turns, "text": ""}
    text = gen.input.get("text") or ""
    cut = len(text) > PROMPT_TAIL_CHARS
    return {"turns": [], "text": text[-PROMPT_TAIL_CHARS:], "cut": cut}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sample_views(gen: Generation) -> list[dict]:
    return [
        {
            "index": i,
            "text": str(sample.get("text") or ""),
            "tokens": len(sample.get("token_ids") or []),
            "finished": bool(sample.get("finished")),
        }
        for i, sample in enumerate(gen.samples)
    ]


def _usable(gen: Generation) -> bool:
    """Whether its samples can be used and analysed: ended with text (a cancelled one keeps its part)."""
    return gen.is_final and gen.status != Generation.Status.FAILED and not (gen.result or {}).get("partial")


def _settled(gen: Generation) -> bool:
    """Whether its card is as it stays: ended, and not about to become its follow-up analysis' card (the
    page's script must not drop a card that the socket will replace)."""
    follow_up_coming = (
        gen.status == Generation.Status.DONE
        and gen.analysis_options is not None
        and bool(gen.samples)
        and not gen.follow_up_error
    )
    return gen.is_final and not follow_up_coming


def generation_context(gen: Generation, position: int | None, *, read_only: bool = False) -> dict:
    """A generation card's context. `read_only`: staff looking at another user's card (no buttons)."""
    return {
        "gen": gen,
        "position": position,
        "prompt": _prompt_view(gen),
        "samples": sample_views(gen),
        "usable": _usable(gen),
        "read_only": read_only,
        "settled": _settled(gen),
    }


def _render_generation_card(context: dict) -> str:
    return render_to_string("analyses/partials/gen-card.html", context)


def render_generation_card(gen: Generation, position: int | None) -> str:
    """The whole card (a generation.state event swaps it by its id, gen-<pk>)."""
    return _render_generation_card(generation_context(gen, position))


def render_generation_samples(gen: Generation) -> str:
    """The samples so far and the progress in tokens (a generation.tokens event; both swapped by id)."""
    context = generation_context(gen, None)
    return render_to_string("analyses/partials/gen-samples.html", context) + render_to_string(
        "analyses/partials/gen-progress.html", context
    )


def render_new_generation_card(gen: Generation, position: int | None) -> tuple[list[str], Shown]:
    card = f'<div hx-swap-oob="afterbegin:#jobs">{render_generation_card(gen, position)}</div>'
    return pack([card]), Shown(gen.pk, final=gen.is_final, kind=Generation.kind)


def render_socket_message(text: str, level: str = "error") -> str:
    return render_to_string("analyses/partials/socket-message.html", {"text": text, "level": level})
