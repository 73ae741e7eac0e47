"""From stored rows to what the results views show: the viewer's display state (view, sort, filter,
colours, columns), row view-models with their colour classes, and the metadata box. Colours come only
from `colours.py`; this module just asks its scales."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from lensweb.analyses import colours
from lensweb.analyses.colours import UNTRAINED_POSITIONS, ColourScheme, fmt

from .models import DEFAULT_COLUMNS, OPTIONAL_COLUMNS, ResultsPreference

VIEWS = ("table", "transposed", "fulltext")
VIEW_LABELS = {"table": "Table", "transposed": "Transposed", "fulltext": "Full text"}
SORTS = ("position", "mse", "relative_rmse", "kl")
FULLTEXT_METRICS = ("mse", "relative_rmse", "kl")
COLUMN_LABELS = {"mse": "mse", "relative_rmse": "relative RMSE", "kl": "KL", "logit_lens": "logit lens"}
UNTRAINED_NOTE = "The lenses were never trained on positions 0–5: read these rows with care."


@dataclass(frozen=True)
class Display:
    """What the viewer asked to see. Comes from the query string, falling back on saved preferences."""

    view: str = "table"
    sort: str = "position"
    desc: bool = False
    q: str = ""
    metric: str = "mse"
    scale: str = ResultsPreference.Scale.FITTED
    palette: str = colours.DEFAULT_PALETTE
    columns: tuple[str, ...] = tuple(DEFAULT_COLUMNS)

    @classmethod
    def from_request(cls, params, preference: ResultsPreference | None) -> Display:
        base = cls()
        if preference is not None:
            base = replace(
                base,
                scale=preference.scale,
                palette=preference.palette,
                columns=tuple(c for c in preference.columns if c in OPTIONAL_COLUMNS)
                if preference.columns
                else base.columns,
            )
        pick = {
            "view": _choice(params.get("view"), VIEWS, base.view),
            "sort": _choice(params.get("sort"), SORTS, base.sort),
            "desc": params.get("dir") == "desc",
            "q": (params.get("q") or "")[:100],
            "metric": _choice(params.get("metric"), FULLTEXT_METRICS, base.metric),
            "scale": _choice(params.get("scale"), tuple(ResultsPreference.Scale.values), base.scale),
            "palette": _choice(params.get("palette"), colours.PALETTE_NAMES, base.palette),
        }
        if params.get("cols_sent"):  # the form says which columns are on, none included
            pick["columns"] = tuple(c for c in OPTIONAL_COLUMNS if c in params.getlist("cols"))
        return replace(base, **pick)


def _choice(value, allowed, default):
    return value if value in allowed else default


def visible(token: str | None) -> str:
    """Whitespace a reader can see: newlines and tabs as arrows (spaces stay, shown with white-space: pre)."""
    if not token:
        return token or ""
    if not token.strip(" "):
        return token.replace(" ", "␣")  # a token of spaces only would otherwise show as nothing
    return token.replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")


def number(value, digits: int = 4) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return ""


def _words_html(data: dict, scheme: ColourScheme, add_current: bool) -> SafeString:
    """The explanation, one span per explanation token, coloured by its salience. Built here, not in a
    template loop: a 1,000-row page has 8,000+ of these and template loops are the page's slow part."""
    words = data.get("explanation_tokens")
    if not isinstance(words, list):
        words = [data.get("explanation") or ""]
    salience = data.get("token_salience")
    ids = data.get("explanation_token_ids")
    if not isinstance(salience, list) or len(salience) != len(words):
        salience = [None] * len(words)
    if not isinstance(ids, list) or len(ids) != len(words):
        ids = [None] * len(words)
    scale = scheme["salience"]
    parts = []
    for word, s, tid in zip(words, salience, ids, strict=True):
        attrs = f' data-s="{fmt(s, True)}"' if s is not None else ""
        if tid is not None:
            attrs += f' data-i="{int(tid)}"'
        parts.append(f'<span class="w {scale.css_class(s)}"{attrs}>{escape(visible(word))}</span>')
    if add_current:
        parts.append(f'<span class="w cur" data-c="1">[{escape(visible(data.get("token", "")))}]</span>')
    return mark_safe("".join(parts))


def candidates(data: dict) -> list[dict] | None:
    """A row's best-of-k candidates, lowest mse first (loaded on demand: they weigh as much as the rest)."""
    found = data.get("candidates")
    if not isinstance(found, list) or not found:
        return None
    ordered = sorted(
        (c for c in found if isinstance(c, dict)),
        key=lambda c: c.get("mse") if isinstance(c.get("mse"), int | float) else math.inf,
    )
    return [
        {
            "explanation": visible(c.get("explanation", "")),
            "mse": number(c.get("mse")),
            "chosen": c.get("chosen"),
        }
        for c in ordered
    ]


@dataclass
class RowView:
    position: int
    token: str
    token_id: int | None
    early: bool
    words: SafeString
    explanation: str
    mse: float | None
    relative_rmse: float | None
    kl: float | None
    logit_lens: str
    candidates: int  # how many were kept (0: none); the list itself is fetched when a row unfolds
    classes: dict[str, str] = field(default_factory=dict)

    def text(self, name: str) -> str:
        return number(getattr(self, name))

    @property
    def mse_text(self) -> str:
        return number(self.mse)

    @property
    def relative_rmse_text(self) -> str:
        return number(self.relative_rmse)

    @property
    def kl_text(self) -> str:
        return number(self.kl)


def _logit_lens(top) -> str:
    if not isinstance(top, list) or not top:
        return ""
    return " · ".join(visible(str(t)) for t in top[:6] if t is not None)


def _num(value):
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def row_views(rows: list[dict], scheme: ColourScheme, add_current: bool) -> list[RowView]:
    views = []
    for data in rows:
        view = RowView(
            position=data["position"],
            token=visible(data.get("token", "")),
            token_id=data.get("token_id"),
            early=data["position"] < UNTRAINED_POSITIONS,
            words=_words_html(data, scheme, add_current),
            explanation=visible(data.get("explanation", "")),
            mse=_num(data.get("mse")),
            relative_rmse=_num(data.get("relative_rmse")),
            kl=_num(data.get("kl")),
            logit_lens=_logit_lens(data.get("logit_lens_top")),
            candidates=len(data["candidates"]) if isinstance(data.get("candidates"), list) else 0,
        )
        view.classes = {m: scheme[m].css_class(getattr(view, m)) for m in FULLTEXT_METRICS}
        views.append(view)
    return views


def sort_and_filter(views: list[RowView], display: Display) -> list[RowView]:
    chosen = views
    if display.q:
        needle = display.q.casefold()
        chosen = [v for v in chosen if needle in v.token.casefold()]
    if display.sort != "position":
        present = [v for v in chosen if getattr(v, display.sort) is not None]
        missing = [v for v in chosen if getattr(v, display.sort) is None]
        present.sort(key=lambda v: getattr(v, display.sort), reverse=display.desc)
        return present + missing  # rows without the metric last, whatever the direction
    return sorted(chosen, key=lambda v: v.position, reverse=display.desc)


def metadata_items(analysis) -> list[tuple[str, str]]:
    """The metadata box: what a reader needs to interpret (and reproduce) the numbers."""
    meta = analysis.metadata or {}
    options = analysis.options or {}
    timings = analysis.timings or {}

    def show(value):
        return "–" if value in (None, "") else str(value)

    items = [
        ("lens", f"{meta.get('name') or analysis.lens_id} ({analysis.lens_id})"),
        ("base model", show(meta.get("base_model"))),
        ("donor model", show(meta.get("donor_model") or "none (the base model)")),
        ("layer", show(meta.get("layer"))),
        ("T (explanation tokens)", show(meta.get("t_text"))),
        ("best of k", show(options.get("best_of_k"))),
        ("temperature", show(options.get("temperature"))),
        ("seed", show(options.get("seed"))),
    ]
    if timings:
        total = timings.get("total")
        parts = [f"{k} {v:.2f} s" for k, v in timings.items() if k != "total" and isinstance(v, int | float)]
        text = (f"{total:.2f} s total" if isinstance(total, int | float) else "") + (
            f" ({', '.join(parts)})" if parts else ""
        )
        items.append(("timings", text.strip() or "–"))
    else:
        items.append(("timings", "–"))
    cached = meta.get("cached")
    items.append(
        ("cached", "yes (served from the result cache)" if cached else ("no" if cached is False else "–"))
    )
    items.append(("engine version", show(meta.get("engine_version"))))
    if meta.get("device"):
        items.append(("device", f"{meta.get('device')} · {meta.get('dtype', '')}".strip(" ·")))
    if meta.get("checkpoint_sha256"):
        items.append(("checkpoint sha256", str(meta["checkpoint_sha256"])[:16] + "…"))
    if meta.get("imported"):
        items.append(("imported", f"from {meta.get('imported_from') or 'a file'} (read-only)"))
    return items
