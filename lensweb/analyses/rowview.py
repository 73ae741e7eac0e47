"""One analysed row as every page shows it, live cards and results pages alike: the numbers kept as numbers
(sorting, colour scales), their text (rowtext), the explanation's words with their salience, the ‖A‖ flag.
A card and a results page differ only in what they add: a card its metric cells and the words' classes on
the fixed salience scale; a results page its colour classes per metric and the words as one HTML string."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .colours import Scale, fmt
from .rowtext import logit_lens_text, number, visible

NORM_OUTLIER_NOTE = (
    "‖A‖ is far outside this lens' usual range (position 0 or an attention sink): its mse is large because "
    "A is, not because the explanation is worse"
)


def num(value) -> float | None:
    """A stored metric as a number, or None (absent, null, or not a number)."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def norm_text(value) -> str:
    """‖A‖ to about four significant digits: norms run from under 1 to tens of thousands across models."""
    if num(value) is None or not math.isfinite(value):
        return ""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


# A stored analysis' metadata["glyphs"] is read with care (an imported file may hold anything): spans of at most
# GLYPH_MAX_TOKENS tokens (the engine's own are 16 at most) and texts of at most GLYPH_MAX_CHARS characters.
GLYPH_MAX_TOKENS = 16
GLYPH_MAX_CHARS = 32


@dataclass(frozen=True)
class GlyphPart:
    """A token that is one of the few a glyph's bytes were split over (the engine's metadata["glyphs"]: a
    byte-level tokenizer splits "é" or "😀" into tokens that decode alone to U+FFFD). The row keeps its own
    token; pages show the glyph, and which part of it this token is."""

    text: str  # the glyph, visible (with the space before it where the tokens hold one)
    part: int  # this token's place in it, from 1
    parts: int
    start: int  # the glyph's first position
    raw: str = ""  # this token alone, visible (its row's `token`)

    @property
    def mark(self) -> str:
        return f"{self.part}/{self.parts}"

    @property
    def first(self) -> bool:
        return self.part == 1

    @property
    def note(self) -> str:
        glyph = self.text.strip() or self.text
        alone = f"; this token alone decodes to {self.raw}" if self.raw else ""
        return f"bytes of {glyph} split over positions {self.start}–{self.start + self.parts - 1}{alone}"


def glyph_parts(metadata: dict | None) -> dict[int, GlyphPart]:
    """Position → its GlyphPart, from an analysis' metadata["glyphs"] ([[start, end, text], …]); {} for an
    analysis without split glyphs (or stored before they were recorded). Malformed spans are left out."""
    spans = (metadata or {}).get("glyphs")
    parts: dict[int, GlyphPart] = {}
    if not isinstance(spans, list):
        return parts
    for span in spans:
        if not _is_span(span):
            continue
        start, end, text = span
        if any(p in parts for p in range(start, end)):
            continue  # overlapping spans: the first one holds
        shown = visible(text)
        for p in range(start, end):
            parts[p] = GlyphPart(shown, p - start + 1, end - start, start)
    return parts


def _is_span(span) -> bool:
    """[start, end, text]: positions from 0, two to GLYPH_MAX_TOKENS of them, a short text."""
    if not (isinstance(span, list | tuple) and len(span) == 3):
        return False
    start, end, text = span
    positions = all(isinstance(p, int) and not isinstance(p, bool) for p in (start, end))
    return (
        positions
        and start >= 0
        and 2 <= end - start <= GLYPH_MAX_TOKENS
        and isinstance(text, str)
        and 0 < len(text) <= GLYPH_MAX_CHARS
    )


class ShownToken:
    """How a token is shown, the same on every page (a RowView's, a full-text token without a row): `token`
    its text (a split glyph's whole text), `glyph` its GlyphPart or None."""

    token: str
    glyph: GlyphPart | None

    @property
    def token_html(self) -> SafeString:
        """A table cell's or a column head's token: the glyph with the part this token is ("1/2")."""
        if self.glyph is None:
            return escape(self.token)
        return mark_safe(f'{escape(self.token)}<span class="gpart">{self.glyph.mark}</span>')

    @property
    def token_title(self) -> str:
        return self.glyph.note if self.glyph else ""

    @property
    def fulltext_text(self) -> str:
        """The full text's token: a glyph once, on its first part (the later parts are narrow joined boxes)."""
        return "" if self.glyph and not self.glyph.first else self.token

    @property
    def glyph_cls(self) -> str:
        """The full text's classes for a glyph's parts, which join into one box."""
        if self.glyph is None:
            return ""
        return " glyph gfirst" if self.glyph.first else " glyph gjoin"


def shown_token(token: str | None, glyph: GlyphPart | None) -> tuple[str, GlyphPart | None]:
    """(the text a token shows, its GlyphPart with the token's own text): the glyph for a split glyph's part."""
    raw = visible(token or "")
    if glyph is None:
        return raw, None
    return glyph.text, replace(glyph, raw=raw)


@dataclass(frozen=True)
class Word:
    """One explanation token (a Natural Language Autoencoder's: one word), visible, with its salience."""

    text: str
    salience: float | None = None
    token_id: int | None = None
    cls: str = ""  # its colour class on a salience scale

    @property
    def salience_text(self) -> str:
        return number(self.salience, 3)


@dataclass
class RowView(ShownToken):
    position: int
    token: str  # as shown: the token, or the glyph whose bytes it holds part of (`glyph`)
    token_id: int | None
    early: bool  # before the first position the lens was trained on (families.FIRST_TRAINED)
    explanation: str
    words: list[Word]
    mse: float | None
    relative_rmse: float | None
    kl: float | None
    logit_lens: str
    candidates: int  # how many were kept (0: none); the list itself is fetched when a row unfolds
    fve_nrm: float | None = None
    cosine_similarity: float | None = None
    mse_nrm: float | None = None
    activation_norm: float | None = None
    norm_outlier: bool = False  # ‖A‖ far outside the lens' usual range (the engine's flag)
    cells: list[str] = field(default_factory=list)  # the page's metric cells, in its column order
    classes: dict[str, str] = field(default_factory=dict)  # a results page's colour class per metric
    words_html: SafeString = mark_safe("")  # a results page's words, built at once (words_html())
    glyph: GlyphPart | None = None  # the split glyph this token holds part of (glyph_parts)
    raw_token: str = ""  # the row's own token, visible (what `token` shows unless it is part of a glyph)

    def text(self, name: str) -> str:
        if name == "activation_norm":
            return norm_text(self.activation_norm)
        return number(getattr(self, name))

    def coloured(self, scale: Scale) -> RowView:
        """The same row with its words' classes on `scale`."""
        return replace(self, words=[replace(w, cls=scale.css_class(w.salience)) for w in self.words])

    @property
    def activation_norm_text(self) -> str:
        return norm_text(self.activation_norm)

    @property
    def norm_note(self) -> str:
        """The flag's explanation (a tooltip), or "" for a row within the usual range."""
        return NORM_OUTLIER_NOTE if self.norm_outlier else ""

    @property
    def mse_text(self) -> str:
        return number(self.mse)

    @property
    def relative_rmse_text(self) -> str:
        return number(self.relative_rmse)

    @property
    def kl_text(self) -> str:
        return number(self.kl)


def _words(data: dict) -> list[Word]:
    words = data.get("explanation_tokens")
    if not isinstance(words, list):
        words = [data.get("explanation") or ""]
    salience = data.get("token_salience")
    ids = data.get("explanation_token_ids")
    if not isinstance(salience, list) or len(salience) != len(words):
        salience = [None] * len(words)
    if not isinstance(ids, list) or len(ids) != len(words):
        ids = [None] * len(words)
    return [
        Word(visible(w), num(s), None if num(tid) is None else int(tid))
        for w, s, tid in zip(words, salience, ids, strict=True)
    ]


def row_view(data: dict, first_trained: int, glyphs: dict[int, GlyphPart] | None = None) -> RowView:
    """A stored row (the engine's Row.to_dict(), or an imported one) as pages show it; `glyphs`: its
    analysis' glyph_parts, where a token shows the glyph it is part of."""
    token, glyph = shown_token(data.get("token", ""), (glyphs or {}).get(data["position"]))
    return RowView(
        position=data["position"],
        token=token,
        glyph=glyph,
        raw_token=visible(data.get("token", "")),
        token_id=data.get("token_id"),
        early=data["position"] < first_trained,
        explanation=visible(data.get("explanation", "")),
        words=_words(data),
        mse=num(data.get("mse")),
        relative_rmse=num(data.get("relative_rmse")),
        kl=num(data.get("kl")),
        logit_lens=logit_lens_text(data.get("logit_lens_top")),
        candidates=len(data["candidates"]) if isinstance(data.get("candidates"), list) else 0,
        fve_nrm=num(data.get("fve_nrm")),
        cosine_similarity=num(data.get("cosine_similarity")),
        mse_nrm=num(data.get("mse_nrm")),
        activation_norm=num(data.get("activation_norm")),
        norm_outlier=data.get("activation_norm_outlier") is True,
    )


def words_html(view: RowView, scale: Scale, current_token: bool) -> SafeString:
    """The explanation, one span per word coloured by its salience on `scale` (and the analysed token after
    it, when the lens was trained with it). Built here, not in a template loop: a 1,000-row page has 8,000+
    of these and template loops are the page's slow part."""
    parts = []
    for word in view.words:
        attrs, said = "", [f"“{word.text.strip() or word.text}”"]
        if word.salience is not None:
            attrs, said = (
                f' data-s="{fmt(word.salience, True)}"',
                [*said, f"salience {fmt(word.salience, True)}"],
            )
        if word.token_id is not None:
            attrs += f' data-i="{int(word.token_id)}"'
            said.append(f"token id {int(word.token_id)}")
        # focusable from its row (←/→ in results.js), its value in its accessible name
        attrs += f' tabindex="-1" aria-label="{escape(", ".join(said))}"'
        parts.append(f'<span class="w {scale.css_class(word.salience)}"{attrs}>{escape(word.text)}</span>')
    if current_token:  # the token the lens added: the row's own, a glyph's part as it is
        token = view.raw_token if view.glyph else view.token
        label = escape(f"[{token}], the current token, added by the lens")
        parts.append(
            f'<span class="w cur" data-c="1" tabindex="-1" aria-label="{label}">[{escape(token)}]</span>'
        )
    return mark_safe("".join(parts))
