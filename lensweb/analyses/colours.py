"""The one place where a number becomes a colour. Every view (table, transposed, full text, compare,
legend, chart) asks a `Scale` built here for a class name, and the CSS behind those names is generated
here too (`palette_css`), so two views of one analysis can never colour the same value differently.

Values are binned server-side into a few steps (11 for the diverging salience scale, 9 for the sequential
metric scales); the page carries class names only, which keeps a 1,000-row page light and CSP-clean.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cache

from .families import FIRST_TRAINED, LENS

# Fitted scales leave out the positions a lens was never trained on (position 0 alone is an outlier by an
# order of magnitude and would wash every other colour out).
UNTRAINED_POSITIONS = FIRST_TRAINED[LENS]

DIVERGING_STEPS = 11
SEQUENTIAL_STEPS = 9

# Palettes: diverging (negative → neutral → positive) and sequential (low → high), as hex colours.
PALETTES: dict[str, dict[str, tuple[str, ...]]] = {
    # Blue–orange (distinguishable in the common colour-vision deficiencies) and a reversed viridis.
    "safe": {
        "diverging": (
            "#1d4f91",
            "#3a76b5",
            "#6d9fd1",
            "#a8c8e8",
            "#d9e7f5",
            "#f7f7f7",
            "#fde3c8",
            "#fbbf8a",
            "#f5934b",
            "#dd6a1e",
            "#a84a0c",
        ),
        "sequential": (
            "#fde725",
            "#addc30",
            "#5ec962",
            "#28ae80",
            "#21918c",
            "#2c728e",
            "#3b528b",
            "#472d7b",
            "#440154",
        ),
    },
    # What the research site's users know: green (less important) – white – red (more important).
    "classic": {
        "diverging": (
            "#2b8a3e",
            "#51cf66",
            "#8ce99a",
            "#b2f2bb",
            "#ebfbee",
            "#ffffff",
            "#ffe3e3",
            "#ffc9c9",
            "#ff8787",
            "#fa5252",
            "#c92a2a",
        ),
        "sequential": (
            "#fff5f5",
            "#ffe3e3",
            "#ffc9c9",
            "#ffa8a8",
            "#ff8787",
            "#ff6b6b",
            "#fa5252",
            "#e03131",
            "#c92a2a",
        ),
    },
}
PALETTE_NAMES = tuple(PALETTES)
DEFAULT_PALETTE = "safe"

# A Consistency Lens' rows have mse, relative RMSE and KL; a Natural Language Autoencoder's have fve_nrm,
# cosine_similarity and mse_nrm (and KL when asked): every metric a row of either family can carry.
METRICS = ("salience", "mse", "relative_rmse", "kl", "fve_nrm", "cosine_similarity", "mse_nrm")
METRIC_LABELS = {
    "salience": "salience",
    "mse": "mse",
    "relative_rmse": "relative RMSE",
    "kl": "KL",
    "fve_nrm": "fve",
    "cosine_similarity": "cos",
    "mse_nrm": "normalised mse",
}
# Fixed domains: the same colours for the same numbers across analyses. mse and KL have no
# model-independent size, so they use wide log ranges; relative RMSE is scale-free (1 = as bad as 0).
# The NLA metrics compare directions (both vectors rescaled to sqrt(d)): mse_nrm = 2(1 - cos), 2 being
# orthogonal; fve_nrm = 1 - mse_nrm / V is 0 for the mean's prediction and 1 for a perfect one (it goes
# far below 0 for an untrained pair, which the lowest colour holds).
FIXED_DOMAINS = {
    "salience": (-0.5, 0.5),
    "mse": (0.01, 1000.0),
    "relative_rmse": (0.0, 1.5),
    "kl": (0.001, 100.0),
    "fve_nrm": (-1.0, 1.0),
    "cosine_similarity": (0.0, 1.0),
    "mse_nrm": (0.0, 2.0),
}
LOG_METRICS = {"mse", "kl"}
# Metrics where a higher value is better: their colours run the other way, so that in every palette the
# strongest colour marks the worst reconstruction, whichever family's metric is shown.
HIGHER_IS_BETTER = {"fve_nrm", "cosine_similarity"}


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: float, signed: bool = False) -> str:
    """Three significant digits, readable at a glance (legend ticks, tooltips)."""
    if not _is_number(value):
        return "–"
    if abs(value) < 1e-12:  # 0, or float noise around it (a legend's middle)
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000 or magnitude < 0.001:
        text = f"{value:.2e}"
    else:
        digits = max(0, 2 - math.floor(math.log10(magnitude)))
        text = f"{value:.{digits}f}"
    return f"+{text}" if signed and value > 0 else text


def _text_colour(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5))

    def lin(c):
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    luminance = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
    return "#000" if luminance > 0.25 else "#fff"


@dataclass(frozen=True)
class Scale:
    """Maps a metric's values to one of `steps` colour classes, over [lo, hi] (log10 when `log`)."""

    metric: str
    lo: float
    hi: float
    log: bool
    fitted: bool

    @property
    def diverging(self) -> bool:
        return self.metric == "salience"

    @property
    def steps(self) -> int:
        return DIVERGING_STEPS if self.diverging else SEQUENTIAL_STEPS

    @property
    def prefix(self) -> str:
        return "d" if self.diverging else "q"

    def _t(self, value: float) -> float:
        lo, hi, v = self.lo, self.hi, value
        if self.log:
            lo, hi, v = math.log10(lo), math.log10(hi), math.log10(max(value, self.lo))
        if hi <= lo:
            return 0.5
        return min(1.0, max(0.0, (v - lo) / (hi - lo)))

    @property
    def reversed(self) -> bool:
        return self.metric in HIGHER_IS_BETTER

    def step(self, value) -> int | None:
        if not _is_number(value):
            return None
        return min(self.steps - 1, int(self._t(value) * self.steps))

    def _colour_index(self, step: int) -> int:
        return self.steps - 1 - step if self.reversed else step

    def css_class(self, value) -> str:
        step = self.step(value)
        return "" if step is None else f"{self.prefix}{self._colour_index(step)}"

    def _ramp(self, palette: str) -> tuple[str, ...]:
        ramps = PALETTES.get(palette, PALETTES[DEFAULT_PALETTE])
        return ramps["diverging" if self.diverging else "sequential"]

    def colours(self, value, palette: str) -> tuple[str, str] | None:
        """(background, text) of `value` as hex: what its css_class stands for, for a file with no stylesheet
        (the SVG figure); None for no number."""
        step = self.step(value)
        if step is None:
            return None
        colour = self._ramp(palette)[self._colour_index(step)]
        return colour, _text_colour(colour)

    def legend_colours(self, palette: str) -> list[str]:
        """The legend's swatches as hex, lowest value first (legend()'s order)."""
        return [self._ramp(palette)[self._colour_index(i)] for i in range(self.steps)]

    def _value_at(self, t: float) -> float:
        if self.log:
            lo, hi = math.log10(self.lo), math.log10(self.hi)
            return 10 ** (lo + t * (hi - lo))
        return self.lo + t * (self.hi - self.lo)

    def legend(self) -> list[dict]:
        """One swatch per step: its class, the value range it stands for, and a label (its middle)."""
        swatches = []
        for i in range(self.steps):
            a, b = self._value_at(i / self.steps), self._value_at((i + 1) / self.steps)
            low = "≤ " if i == 0 else ""
            high = "≥ " if i == self.steps - 1 else ""
            label = f"{low}{fmt(a, self.diverging)}" if i == 0 else f"{high}{fmt(b, self.diverging)}"
            if 0 < i < self.steps - 1:
                label = fmt((a + b) / 2 if not self.log else math.sqrt(a * b), self.diverging)
            swatches.append(
                {
                    "cls": f"{self.prefix}{self._colour_index(i)}",
                    "label": label,
                    "range": f"{fmt(a, self.diverging)} to {fmt(b, self.diverging)}",
                }
            )
        return swatches

    def describe(self) -> str:
        kind = "fitted to this analysis" if self.fitted else "fixed"
        axis = "log scale" if self.log else "linear"
        better = ", higher is better" if self.reversed else ""
        return f"{METRIC_LABELS[self.metric]}: {kind}, {fmt(self.lo)} to {fmt(self.hi)} ({axis}{better})"


def _values(rows: list[dict], metric: str, early: int = UNTRAINED_POSITIONS) -> list[float]:
    # ‖A‖ outliers (the engine's flag: attention sinks) out too: their mse would wash every other colour out
    trained = [
        r for r in rows if r.get("position", 0) >= early and r.get("activation_norm_outlier") is not True
    ] or rows
    if metric == "salience":
        return [abs(s) for r in trained for s in (r.get("token_salience") or []) if _is_number(s)]
    return [r[metric] for r in trained if _is_number(r.get(metric))]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def build_scale(metric: str, rows: list[dict], fitted: bool, early: int = UNTRAINED_POSITIONS) -> Scale:
    """A fixed scale, or one fitted to `rows` (trained positions, `early` and later, only; salience
    symmetric around 0 at the 98th percentile of |salience|, so one extreme word does not wash the rest
    out)."""
    lo, hi = FIXED_DOMAINS[metric]
    log = metric in LOG_METRICS
    values = _values(rows, metric, early) if fitted else []
    if values:
        if metric == "salience":
            m = _percentile(values, 0.98) or max(values) or 1.0
            lo, hi = -m, m
        else:
            lo, hi = min(values), max(values)
            if log and lo <= 0:
                positive = [v for v in values if v > 0]
                lo = min(positive) if positive else FIXED_DOMAINS[metric][0]
            if hi <= lo:
                hi = lo * 1.01 + 1e-9 if lo > 0 else lo + 1.0
    return Scale(metric=metric, lo=lo, hi=hi, log=log, fitted=bool(values))


@dataclass(frozen=True)
class ColourScheme:
    """The scales of one page (every metric) and its palette."""

    palette: str
    scales: dict[str, Scale]

    def __getitem__(self, metric: str) -> Scale:
        return self.scales[metric]


def build_scheme(
    rows: list[dict], scale: str = "fitted", palette: str = DEFAULT_PALETTE, early: int = UNTRAINED_POSITIONS
) -> ColourScheme:
    """`early`: the first position the lens was trained on (fitted scales leave the ones before it out)."""
    fitted = scale != "fixed"
    palette = palette if palette in PALETTES else DEFAULT_PALETTE
    return ColourScheme(palette, {m: build_scale(m, rows, fitted, early) for m in METRICS})


@cache
def palette_css() -> str:
    """The CSS behind every class a Scale hands out, for every palette (served by views.colours_css)."""
    lines = ["/* generated by lensweb.analyses.colours: do not edit */"]
    for name, ramps in PALETTES.items():
        for kind, prefix in (("diverging", "d"), ("sequential", "q")):
            for i, colour in enumerate(ramps[kind]):
                lines.append(f".pal-{name} .{prefix}{i}{{background:{colour};color:{_text_colour(colour)}}}")
                lines.append(f".pal-{name} .{prefix}{i}-stroke{{stroke:{colour};fill:{colour}}}")
    return "\n".join(lines) + "\n"


@cache
def palette_version() -> str:
    return hashlib.sha256(palette_css().encode()).hexdigest()[:12]
