"""The per-token chart, drawn here as SVG: no charting library, no CDN, and the same numbers as the table
because it reads the same rows. A Consistency Lens' mse (and KL, when computed) by default; an NLA's fve
(or cos without a variance constant) and KL. Every point's tooltip has cos(A, Â) and ‖A‖ where the row has
them, and positions whose ‖A‖ lies far outside the lens' usual range (the engine's flag: position 0 and
attention sinks, where the mse is large because A is) are marked along the top edge."""

from __future__ import annotations

import math

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from lensweb.analyses.colours import METRIC_LABELS, UNTRAINED_POSITIONS, fmt

from .display import visible

WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 64, 18, 46
MSE_COLOUR, KL_COLOUR = "#1d4f91", "#dd6a1e"  # the blue and orange ends of the safe palette
FLAG_COLOUR = "#b3261e"  # the results table's outlier red
MAX_MARKERS = 400  # above this, a line only (markers would cost more than they show)


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class _Axis:
    def __init__(self, values: list[float], y0: float, y1: float):
        lo, hi = min(values), max(values)
        self.log = lo > 0 and hi / lo > 30
        if self.log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi <= lo:
            hi = lo + 1
        self.lo, self.hi, self.y0, self.y1 = lo, hi, y0, y1

    def y(self, value: float) -> float:
        v = math.log10(value) if self.log else value
        return self.y0 - (v - self.lo) / (self.hi - self.lo) * (self.y0 - self.y1)

    def ticks(self) -> list[float]:
        if self.log:
            return [10**e for e in range(math.ceil(self.lo), math.floor(self.hi) + 1)] or [10**self.lo]
        step = 10 ** math.floor(math.log10((self.hi - self.lo) / 4 or 1))
        for mult in (1, 2, 5, 10):
            if (self.hi - self.lo) / (step * mult) <= 6:
                step *= mult
                break
        first = math.ceil(self.lo / step) * step
        return [first + i * step for i in range(int((self.hi - first) / step) + 1)]


def _fidelity_tip(row: dict, metric: str) -> str:
    """cos(A, Â) (unless it is the charted metric) and ‖A‖, flagged when outside the lens' usual range."""
    tip = ""
    if metric != "cosine_similarity" and _finite(row.get("cosine_similarity")):
        tip += f", cos {fmt(row['cosine_similarity'])}"
    if _finite(row.get("activation_norm")):
        tip += f", ‖A‖ {fmt(row['activation_norm'])}"
        if row.get("activation_norm_outlier") is True:
            tip += " (outlier)"
    return tip


def mse_chart(rows: list[dict]) -> SafeString:
    """A Consistency Lens' chart: mse (left axis) and KL (right axis) when any row has it."""
    return metric_chart(rows)


# The shaded first positions' label and tooltip: a trained lens was never trained on them; of a lens never
# trained at all, only that a trained one would not have learned them either.
EARLY_BANDS = {
    False: ("untrained", "the lens was never trained on them"),
    True: ("early", "a trained lens never learns them"),
}


def metric_chart(
    rows: list[dict],
    metric: str = "mse",
    second: str = "kl",
    early: int = UNTRAINED_POSITIONS,
    untrained: bool = False,
) -> SafeString:
    """SVG: `metric` per position (left axis), `second` (right axis) when any row has it, positions before
    `early` (never trained on) shaded; for a lens never trained at all (`untrained`) the band is only early."""
    name, second_name = METRIC_LABELS[metric], METRIC_LABELS[second]
    rows = [r for r in rows if _finite(r.get(metric))]
    if not rows:
        return mark_safe(f'<p class="muted">No {escape(name)} values to chart yet.</p>')
    rows = sorted(rows, key=lambda r: r["position"])
    kl_rows = [r for r in rows if _finite(r.get(second))]
    first, last = rows[0]["position"], rows[-1]["position"]
    span = max(1, last - first)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP

    def x(position: int) -> float:
        return x0 + (position - first) / span * (x1 - x0) if last > first else (x0 + x1) / 2

    mse_axis = _Axis([r[metric] for r in rows], y0, y1)
    label = f"{name} and {second_name}" if kl_rows else name
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{label} per token, positions {first} to {last}" '
        'xmlns="http://www.w3.org/2000/svg" font-size="11" font-family="system-ui, sans-serif">'
    ]
    if first < early:
        band, why = EARLY_BANDS[untrained]
        edge = x(min(last, early - 1)) + (x(1) - x(0)) / 2 if last > first else x1
        out.append(
            f'<rect x="{x0}" y="{y1}" width="{max(0, min(edge, x1) - x0):.1f}" height="{y0 - y1}" '
            f'fill="#f1ece6"><title>positions 0–{early - 1}: {why}</title>'
            "</rect>"
            f'<text x="{x0 + 4}" y="{y1 + 12}" fill="#8a7a6e">{band} 0–{early - 1}</text>'
        )
    for tick in mse_axis.ticks():
        ty = mse_axis.y(tick)
        out.append(
            f'<line x1="{x0}" x2="{x1}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#e8e0d6"/>'
            f'<text x="{x0 - 6}" y="{ty + 4:.1f}" text-anchor="end" fill="{MSE_COLOUR}">{fmt(tick)}</text>'
        )
    out.append(
        f'<text x="14" y="{(y0 + y1) / 2:.0f}" fill="{MSE_COLOUR}" transform="rotate(-90 14 {(y0 + y1) / 2:.0f})"'
        f' text-anchor="middle">{name}{" (log)" if mse_axis.log else ""}</text>'
    )
    # x axis: token labels when they fit, position numbers otherwise
    out.append(f'<line x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}" stroke="#8a7a6e"/>')
    if len(rows) <= 60:
        for r in rows:
            tx = x(r["position"])
            label = escape(visible(r.get("token", ""))[:12])
            out.append(
                f'<text x="{tx:.1f}" y="{y0 + 12}" transform="rotate(-40 {tx:.1f} {y0 + 12})" '
                f'text-anchor="end" fill="#3b2a20">{label}</text>'
            )
    else:
        step = max(1, round(span / 10 / 10) * 10) if span > 20 else 1
        for p in range(math.ceil(first / step) * step, last + 1, step):
            out.append(f'<text x="{x(p):.1f}" y="{y0 + 14}" text-anchor="middle" fill="#8a7a6e">{p}</text>')
        out.append(
            f'<text x="{(x0 + x1) / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle" fill="#8a7a6e">position</text>'
        )
    points = " ".join(f"{x(r['position']):.1f},{mse_axis.y(r[metric]):.1f}" for r in rows)
    out.append(f'<polyline points="{points}" fill="none" stroke="{MSE_COLOUR}" stroke-width="1.5"/>')
    if kl_rows:
        kl_axis = _Axis([r[second] for r in kl_rows], y0, y1)
        for tick in kl_axis.ticks():
            out.append(
                f'<text x="{x1 + 6}" y="{kl_axis.y(tick) + 4:.1f}" fill="{KL_COLOUR}">{fmt(tick)}</text>'
            )
        kl_points = " ".join(f"{x(r['position']):.1f},{kl_axis.y(r[second]):.1f}" for r in kl_rows)
        out.append(
            f'<polyline points="{kl_points}" fill="none" stroke="{KL_COLOUR}" stroke-width="1.5" '
            'stroke-dasharray="5 3"/>'
            f'<text x="{WIDTH - 14}" y="{(y0 + y1) / 2:.0f}" fill="{KL_COLOUR}" '
            f'transform="rotate(90 {WIDTH - 14} {(y0 + y1) / 2:.0f})" text-anchor="middle">'
            f"{second_name}{' (log)' if kl_axis.log else ''}</text>"
        )
    if len(rows) <= MAX_MARKERS:
        for r in rows:
            tip = f"{r['position']} “{visible(r.get('token', ''))}”: {name} {fmt(r[metric])}"
            if _finite(r.get(second)):
                tip += f", {second_name} {fmt(r[second])}"
            tip += _fidelity_tip(r, metric)
            out.append(
                f'<circle cx="{x(r["position"]):.1f}" cy="{mse_axis.y(r[metric]):.1f}" r="3" '
                f'fill="{MSE_COLOUR}"><title>{escape(tip)}</title></circle>'
            )
    flagged = [r for r in rows if r.get("activation_norm_outlier") is True]
    for r in flagged:  # drawn whatever the row count: there are few, and they explain the spikes
        fx = x(r["position"])
        tip = f"{r['position']} “{visible(r.get('token', ''))}”: ‖A‖ {fmt(r.get('activation_norm'))}, far outside "
        tip += f"the lens' usual range: its {name} is large because A is"
        out.append(
            f'<path class="norm-flag" d="M{fx - 4:.1f},{y1 - 9} L{fx + 4:.1f},{y1 - 9} L{fx:.1f},{y1 - 2} Z" '
            f'fill="{FLAG_COLOUR}"><title>{escape(tip)}</title></path>'
        )
    legend = f'<text x="{x1 - 4}" y="{y1 + 12}" text-anchor="end"><tspan fill="{MSE_COLOUR}">— {name}</tspan>'
    if kl_rows:
        legend += f'<tspan fill="{KL_COLOUR}">   - - {second_name}</tspan>'
    if flagged:
        legend += f'<tspan fill="{FLAG_COLOUR}">   ▼ ‖A‖ outlier</tspan>'
    out.append(legend + "</text></svg>")
    return mark_safe("".join(out))
