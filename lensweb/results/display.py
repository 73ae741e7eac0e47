"""From stored rows to what the results views show: the viewer's display state (view, sort, filter,
colours, columns), row view-models with their colour classes, and the metadata box. Colours come only
from `colours.py`; this module just asks its scales."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from lensweb.analyses import colours
from lensweb.analyses.colours import UNTRAINED_POSITIONS, ColourScheme, build_scale
from lensweb.analyses.families import FIRST_TRAINED, LENS, NLA, family_of  # noqa: F401  (family_of: API)
from lensweb.analyses.rowtext import logit_lens_text, number, visible  # noqa: F401  (this module's API too)
from lensweb.analyses.rowview import (  # noqa: F401  (this module's API too)
    NORM_OUTLIER_NOTE,
    GlyphPart,
    RowView,
    ShownToken,
    glyph_parts,
    norm_text,
    num,
    row_view,
    shown_token,
    words_html,
)
from lensweb.analyses.summaries import summarize_rows, summary_rows

from .models import ResultsPreference

VIEWS = ("table", "transposed", "fulltext")
VIEW_LABELS = {"table": "Table", "transposed": "Transposed", "fulltext": "Full text"}

# The two lens families and the numeric columns their rows carry, in the order the table shows them. An NLA
# row also has the raw mse and relative RMSE (exports keep them), but it is judged by direction: fve, cos,
# mse_nrm. Every row of either family has cos(A, Â) and ‖A‖ (rows stored before they existed have neither:
# empty cells).
FAMILY_METRICS = {
    LENS: ("mse", "relative_rmse", "cosine_similarity", "kl", "activation_norm"),
    NLA: ("fve_nrm", "cosine_similarity", "mse_nrm", "kl", "activation_norm"),
}
NLA_METRICS = ("fve_nrm", "cosine_similarity", "mse_nrm")
METRICS = ("mse", "relative_rmse", "kl", *NLA_METRICS)
# Columns shown as plain numbers, without a colour scale (so not a full-text metric): ‖A‖ is the activation's
# size, not the reconstruction's quality. The table shows it after the metrics, with the outlier flag.
PLAIN_COLUMNS = ("activation_norm",)
# Columns shown only when some row has the value (KL when asked for; fve when the NLA has its variance).
SPARSE_METRICS = ("kl", "fve_nrm")
SORTS = ("position", *METRICS)
FULLTEXT_METRICS = METRICS
COLUMN_LABELS = {
    "mse": "mse",
    "relative_rmse": "relative RMSE",
    "kl": "KL",
    "logit_lens": "logit lens",
    "fve_nrm": "fve",
    "cosine_similarity": "cos",
    "mse_nrm": "normalised mse",
    "activation_norm": "‖A‖",
}
HEADER_LABELS = {**COLUMN_LABELS, "relative_rmse": "rel. RMSE", "mse_nrm": "mse_nrm"}
COLUMN_TITLES = {
    "mse": "mean squared error of the reconstructed activation (lower is better)",
    "relative_rmse": "‖A − Â‖ / ‖A‖ (0 is perfect, 1 is as bad as predicting zero)",
    "kl": "KL(P‖Q) of the next-token distribution with the reconstruction patched in",
    "fve_nrm": "fraction of variance explained, 1 − mse_nrm / V (1 is perfect, 0 is the mean's; higher is "
    "better)",
    "cosine_similarity": "cosine of the reconstruction and the activation (1 is perfect; higher is better)",
    "mse_nrm": "mse of the reconstruction and the activation, both rescaled to norm √d: 2(1 − cos) "
    "(lower is better)",
    "activation_norm": "‖A‖, the activation's L2 norm; ⚑ far outside the lens' usual range (position 0, attention "
    "sinks), where the mse is large because A is",
}
# What a best-of-k candidate is ranked by, per family (the engine keeps the lowest).
CANDIDATE_METRIC = {LENS: "mse", NLA: "mse_nrm"}
# The optional table columns of both families (position, token and explanation are always shown).
OPTIONAL_COLUMNS = tuple(dict.fromkeys((*FAMILY_METRICS[LENS], *NLA_METRICS, "logit_lens")))
# What a page offered before it said so (a column form without cols_offered): the first Consistency Lens
# columns.
LEGACY_OFFERED = ("mse", "relative_rmse", "kl", "logit_lens")
# In a saved column preference: the NLA columns were chosen on an NLA page (before that they are all on).
NLA_COLUMNS_SAVED = "nla"
# Columns added after preferences were first saved, each with the marker a preference gets once a page has
# offered them: a preference without it says nothing about them, so they are on.
LATER_COLUMNS = {NLA_COLUMNS_SAVED: NLA_METRICS, "norm": PLAIN_COLUMNS}
EARLY_POSITIONS = FIRST_TRAINED  # rows before these are shown, de-emphasised
UNTRAINED_NOTE = "The lenses were never trained on positions 0–5: read these rows with care."
UNTRAINED_NOTES = {
    LENS: UNTRAINED_NOTE,
    NLA: "The autoencoder was trained on positions 50 and later only: read earlier rows with care.",
}
# A lens that was never trained at all (the demo lens): the first positions are greyed as a trained lens'
# would be (position 0 and the attention sinks there mislead it the same way), said without "trained".
# It follows "Positions 0–5 are greyed:" and stands alone as an early row's tooltip, so it names no range.
NEVER_TRAINED_NOTE = (
    "This lens was not trained at all; a trained one never learns these first positions, so read these rows "
    "with care."
)


def untrained_note(family: str, metadata: dict | None) -> str:
    """What the greyed first positions mean for this analysis' lens."""
    if (metadata or {}).get("untrained"):
        return NEVER_TRAINED_NOTE
    return UNTRAINED_NOTES[family]


SALIENCE_NOTES = {
    LENS: "Salience = relative increase of the mse when that explanation token is replaced by a space: "
    "positive (orange in the safe palette) carries information.",
    NLA: "Salience = relative increase of the normalised mse when that explanation word is left out of "
    "the reconstructor's input: positive (orange in the safe palette) carries information.",
}
FAMILY_NAMES = {LENS: "Consistency Lens", NLA: "Natural Language Autoencoder"}


def metrics_of(family: str, rows: list[dict]) -> tuple[str, ...]:
    """The family's metrics that this analysis has (colour-scaled, sortable, full-text ones: not PLAIN_COLUMNS):
    the sparse ones only where some row has a value."""
    return tuple(
        m
        for m in FAMILY_METRICS[family]
        if m not in PLAIN_COLUMNS
        and (m not in SPARSE_METRICS or any(num(r.get(m)) is not None for r in rows))
    )


def column_choices(family: str, rows: list[dict], metrics: tuple[str, ...], has_logit_lens: bool) -> list:
    """The Columns panel: (column, label, computed) for every column the family has; a column this analysis
    did not compute (KL not asked for, rows stored before ‖A‖ was) is offered unticked and disabled, so the
    viewer's preference for it stays for the analyses that have it."""
    computed = set(metrics) | {"logit_lens"} if has_logit_lens else set(metrics)
    computed |= {m for m in PLAIN_COLUMNS if any(num(r.get(m)) is not None for r in rows)}
    return [(c, COLUMN_LABELS[c], c in computed) for c in (*FAMILY_METRICS[family], "logit_lens")]


def compare_metrics(family: str, rows: list[dict]) -> tuple[str, ...]:
    """A side's columns on the compare page: a Consistency Lens' mse; an NLA's fve, cos and mse_nrm."""
    if family == NLA:
        return tuple(m for m in metrics_of(NLA, rows) if m in NLA_METRICS)
    return ("mse",)


def early_range(family: str) -> str:
    return f"Positions 0–{EARLY_POSITIONS[family] - 1}"


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
    columns: tuple[str, ...] = OPTIONAL_COLUMNS

    @property
    def show_norm(self) -> bool:
        """The table's ‖A‖ column (a plain column after the metrics: views count only the metrics)."""
        return "activation_norm" in self.columns

    @property
    def n_plain(self) -> int:
        return sum(c in self.columns for c in PLAIN_COLUMNS)

    @property
    def norm_header(self) -> dict[str, str]:
        return {"label": HEADER_LABELS["activation_norm"], "title": COLUMN_TITLES["activation_norm"]}

    @classmethod
    def from_request(
        cls, params, preference: ResultsPreference | None, metrics: tuple[str, ...] = FAMILY_METRICS[LENS]
    ) -> Display:
        """`metrics`: the ones this analysis has (metrics_of), which sorting and the full text may use."""
        base = replace(cls(), metric=metrics[0] if metrics else "mse")
        if preference is not None:
            base = replace(
                base,
                scale=preference.scale,
                palette=preference.palette,
                columns=saved_columns(preference.columns) if preference.columns else base.columns,
            )
        pick = {
            "view": _choice(params.get("view"), VIEWS, base.view),
            "sort": _choice(params.get("sort"), ("position", *metrics, *PLAIN_COLUMNS), base.sort),
            "desc": params.get("dir") == "desc",
            "q": (params.get("q") or "")[:100],
            "metric": _choice(params.get("metric"), metrics, base.metric),
            "scale": _choice(params.get("scale"), tuple(ResultsPreference.Scale.values), base.scale),
            "palette": _choice(params.get("palette"), colours.PALETTE_NAMES, base.palette),
        }
        if params.get("cols_sent"):  # the form says which columns are on, none included
            pick["columns"] = tuple(c for c in OPTIONAL_COLUMNS if c in params.getlist("cols"))
        return replace(base, **pick)


def saved_columns(saved: list) -> tuple[str, ...]:
    """The columns a saved preference turns on. One saved before NLAs (or ‖A‖) existed, or only ever on pages
    that did not offer them, says nothing about those columns: they stay on (LATER_COLUMNS)."""
    columns = [c for c in OPTIONAL_COLUMNS if c in saved]
    for marker, later in LATER_COLUMNS.items():
        if marker not in saved:
            columns += [c for c in later if c not in columns]
    return tuple(c for c in OPTIONAL_COLUMNS if c in columns)


def columns_to_save(saved: list | None, posted: list[str], offered: list[str]) -> list[str]:
    """A preference after a page's column form: the columns it offered as posted, the others as they were
    saved (a Consistency Lens page does not turn the NLA-only columns off, nor the other way round; cos is
    one column on both)."""
    before = saved_columns(saved) if saved else OPTIONAL_COLUMNS
    offered = [c for c in offered if c in OPTIONAL_COLUMNS] or list(LEGACY_OFFERED)
    on = [c for c in OPTIONAL_COLUMNS if (c in posted if c in offered else c in before)]
    markers = [
        marker
        for marker, later in LATER_COLUMNS.items()
        if any(c in offered for c in later) or marker in (saved or [])
    ]
    # a group never chosen is left out: saved_columns keeps it on
    unchosen = {c for marker, later in LATER_COLUMNS.items() if marker not in markers for c in later}
    return [*(c for c in on if c not in unchosen), *markers]


def _choice(value, allowed, default):
    return value if value in allowed else default


def candidates(data: dict, family: str = LENS) -> list[dict] | None:
    """A row's best-of-k candidates, best first (loaded on demand: they weigh as much as the rest), by the
    metric the engine chose by (mse for a Consistency Lens, mse_nrm for an NLA)."""
    found = data.get("candidates")
    if not isinstance(found, list) or not found:
        return None
    key = CANDIDATE_METRIC[family]
    ordered = sorted(
        (c for c in found if isinstance(c, dict)),
        key=lambda c: c.get(key) if num(c.get(key)) is not None else math.inf,
    )
    return [
        {
            "explanation": visible(c.get("explanation", "")),
            "mse": number(c.get(key)),
            "chosen": c.get("chosen"),
        }
        for c in ordered
    ]


def row_views(
    rows: list[dict],
    scheme: ColourScheme,
    add_current: bool,
    early: int = UNTRAINED_POSITIONS,
    glyphs: dict[int, GlyphPart] | None = None,
) -> list[RowView]:
    """The rows as the results pages show them: each with its words coloured by salience and its colour
    class per metric on the page's scheme; `glyphs`: the analysis' split glyphs (glyph_parts)."""
    views = []
    for data in rows:
        view = row_view(data, early, glyphs)
        view.words_html = words_html(view, scheme["salience"], add_current)
        view.classes = {m: scheme[m].css_class(getattr(view, m)) for m in FULLTEXT_METRICS}
        views.append(view)
    return views


@dataclass
class PendingToken(ShownToken):
    """A token of the full text without a row: `queued` (the analysis computes it now) or `unanalysed`
    (its owner may click it to add it)."""

    position: int
    token: str
    state: str
    glyph: GlyphPart | None = None


def fulltext_cells(
    views: list[RowView],
    tokens: list[str] | None,
    computing: set[int],
    glyphs: dict[int, GlyphPart] | None = None,
) -> list:
    """Every token of the input in order: its row view where it has one, else a PendingToken (a split
    glyph's part shown as its rows are: `glyphs`). Without the input's tokens (an imported analysis of a lens
    not served here) the rows alone."""
    if tokens is None:
        return list(views)
    by_position = {v.position: v for v in views}
    glyphs = glyphs or {}

    def pending(p: int, token: str) -> PendingToken:
        text, glyph = shown_token(token, glyphs.get(p))
        return PendingToken(p, text, "queued" if p in computing else "unanalysed", glyph)

    return [by_position.get(p) or pending(p, t) for p, t in enumerate(tokens)]


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


def summary_items(family: str, rows: list[dict], untrained: bool = False) -> list[tuple[str, str]]:
    """Means in the family's own metrics (compare's headline numbers) over the rows the history's and the
    cards' summary is over (analyses.services.summary_rows: trained positions, ‖A‖ outliers left out); last,
    with an empty label, the note that says which positions those are."""
    rows = [r for r in rows if isinstance(r.get("position"), int) and num(r.get("mse")) is not None]
    if not rows:
        return []
    used, _left = summary_rows(rows, family == NLA)
    items = []
    for metric in metrics_of(family, rows):
        values = [r[metric] for r in used if num(r.get(metric)) is not None and math.isfinite(r[metric])]
        if values and metric != "kl":
            label = (
                f"mean {COLUMN_LABELS[metric]}" if len(used) > 1 else COLUMN_LABELS[metric]
            )  # one: no mean
            items.append((label, number(sum(values) / len(values))))
    if items:
        items.append(("", summarize_rows(rows, nla=family == NLA, untrained=untrained)["note"]))
    return items


def metadata_items(analysis) -> list[tuple[str, str]]:
    """The metadata box: what a reader needs to interpret (and reproduce) the numbers."""
    meta = analysis.metadata or {}
    options = analysis.options or {}
    timings = analysis.timings or {}

    def show(value):
        return "–" if value in (None, "") else str(value)

    if family_of(meta) == NLA:
        variance = meta.get("fve_variance")
        items = [
            ("lens", f"{meta.get('name') or analysis.lens_id} ({analysis.lens_id})"),
            ("kind", "Natural Language Autoencoder (verbaliser AV + reconstructor AR)"),
            ("base model", show(meta.get("base_model"))),
            ("AV", show(meta.get("av"))),
            ("AR", show(meta.get("ar"))),
            ("layer K", show(meta.get("layer"))),
            ("max explanation tokens", show(meta.get("max_new_tokens", meta.get("t_text")))),
            ("injection scale", show(meta.get("injection_scale"))),
            (
                "fve variance V",
                f"{variance} ({meta.get('fve_variance_source') or 'given'})"
                if variance is not None
                else "none: fve is not reported",
            ),
            ("best of k", show(options.get("best_of_k"))),
            ("temperature", show(options.get("temperature"))),
            ("seed", show(options.get("seed"))),
        ]
    else:
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
    usual = meta.get("activation_norm_range")
    if isinstance(usual, dict) and all(num(usual.get(k)) is not None for k in ("median", "low", "high")):
        items.append(
            (
                "usual ‖A‖",
                f"{norm_text(usual['median'])} (flagged outside {norm_text(usual['low'])}–"
                f"{norm_text(usual['high'])})",
            )
        )
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


@dataclass
class ScoreView:
    """One of the owner's scores under a row: its numbers beside the lens' own, its words by salience."""

    id: int
    status: str
    error: str
    explanation: str = ""
    words_html: str = ""
    numbers: list[tuple[str, str]] = field(default_factory=list)  # (label, text) of each metric it has
    delta: str = ""  # its mse minus the lens' own row's, signed
    better: bool | None = None


SCORE_METRICS = ("mse", "relative_rmse", "cosine_similarity", "fve_nrm", "kl")
SCORE_SALIENCE_SCALE = build_scale("salience", [], fitted=False)  # the cards' fixed scale: one colour a value


def score_view(probe, own_row: dict) -> ScoreView:
    view = ScoreView(probe.pk, probe.status, probe.error or "")
    result = probe.result or {}
    row = result.get("row")
    if not row:
        view.explanation = visible(probe.request.get("explanation") or "")
        return view
    scored = row_view(row, 0)
    view.explanation = scored.explanation
    view.words_html = words_html(scored, SCORE_SALIENCE_SCALE, False)
    view.numbers = [(COLUMN_LABELS.get(m, m), scored.text(m)) for m in SCORE_METRICS if scored.text(m)]
    delta = result.get("delta_mse")
    if num(delta) is not None:
        view.delta = f"{delta:+.4f}"
        view.better = delta < 0
    return view


@dataclass
class DifferenceView:
    """A comparison's "explain the difference" panel: a − b explained, with ‖a − b‖ beside ‖a‖ and ‖b‖."""

    id: int
    status: str
    error: str
    sides: str  # "#12 position 3 − #14 position 5"
    words_html: str = ""
    numbers: list[tuple[str, str]] = field(default_factory=list)


def difference_view(probe) -> DifferenceView:
    a, b = probe.request["a"], probe.request["b"]
    view = DifferenceView(
        probe.pk,
        probe.status,
        probe.error or "",
        f"#{a.get('analysis_id')} position {a.get('position')} − #{b.get('analysis_id')} position {b.get('position')}",
    )
    result = probe.result or {}
    if result.get("row"):
        described = row_view(result["row"], 0)
        view.words_html = words_html(described, SCORE_SALIENCE_SCALE, False)
        norms = result.get("norms") or [None, None]
        view.numbers = [
            ("‖a − b‖", norm_text(result.get("diff_norm"))),
            ("‖a‖", norm_text(norms[0])),
            ("‖b‖", norm_text(norms[1])),
            ("mse", described.text("mse")),
        ]
    return view
