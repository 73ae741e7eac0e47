"""A results view as a standalone figure, for a paper's supplement or a slide: one HTML file that opens
anywhere with no server, carrying the site's own stylesheets and colour palettes (so it looks as the page does,
hover boxes included), or one SVG image of the full text coloured by the same scale."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from django.contrib.staticfiles import finders
from django.utils.html import escape

from lensweb.analyses import colours

STYLESHEETS = ("css/app.css", "results/results.css")
# The figure is a document on paper: the light palette whatever the reader's system says, no page chrome.
FIGURE_CSS = """
:root { color-scheme: light; }
main.figure { max-width: 1100px; margin: 1.5rem auto; padding: 0 1.25rem; }
.figure-head h1 small { font-size: .95rem; font-weight: 500; }
"""


def _stylesheet(name: str) -> str:
    found = finders.find(name)
    return Path(found).read_text(encoding="utf-8") if found else ""


def standalone(title: str, body: str) -> bytes:
    """An HTML document around `body` with the stylesheets inlined (a file has no server to fetch them)."""
    css = "\n".join([*(_stylesheet(name) for name in STYLESHEETS), colours.palette_css(), FIGURE_CSS])
    css = css.replace("@media (prefers-color-scheme: dark)", "@media not all")  # a figure stays light
    document = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>\n{css}\n</style>\n</head>\n"
        f'<body>\n<main class="figure">\n{body}\n</main>\n</body>\n</html>\n'
    )
    return document.encode("utf-8")


# --- the full text as one SVG image ----------------------------------------------------------------------

SVG_WIDTH = 900
SVG_MARGIN = 16
FONT_SIZE = 13
CHAR_WIDTH = 0.62 * FONT_SIZE  # a monospace glyph's advance, about; wide (East Asian) glyphs count twice
TOKEN_PAD = 4
TOKEN_GAP = 3
LINE_HEIGHT = 24
BOX_HEIGHT = 19
LINE_COLOUR = "#c8ccd2"
FLAG_COLOUR = "#b42318"
MUTED = "#5f6670"
MONOSPACE = "ui-monospace, Menlo, Consolas, monospace"
# XML 1.0 refuses most control characters: a byte-level token may hold one, and the file must still parse.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
NEWLINE_MARK = "↵"  # what rowtext.visible() makes of a newline: the line breaks after it


def _xml(text: str) -> str:
    return escape(_NOT_XML.sub("\ufffd", text or ""))


def _text_width(text: str) -> float:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text) * CHAR_WIDTH


@dataclass
class _Box:
    x: float
    y: float
    width: float
    cell: object


def _layout(cells: list, left: float, top: float, right: float) -> tuple[list[_Box], float]:
    """Tokens placed left to right, wrapped at token boundaries and after newlines; (boxes, bottom)."""
    boxes, x, y = [], left, top
    for cell in cells:
        shown = cell.fulltext_text  # a split glyph once, on its first part: the later parts are narrow boxes
        width = _text_width(shown) + 2 * TOKEN_PAD if shown else TOKEN_PAD
        if x > left and x + width > right:
            x, y = left, y + LINE_HEIGHT
        boxes.append(_Box(x, y, width, cell))
        x += width + TOKEN_GAP
        if NEWLINE_MARK in (cell.token or ""):
            x, y = left, y + LINE_HEIGHT
    bottom = (boxes[-1].y if boxes else top) + LINE_HEIGHT
    return boxes, bottom


def _token_svg(box: _Box, metric: str, scale: colours.Scale, palette: str) -> str:
    cell = box.cell
    glyph = f" ({cell.token_title})" if cell.token_title else ""
    state = getattr(cell, "state", "")  # a PendingToken: a token without a row
    if state:
        fill, ink, stroke, extra = "none", MUTED, LINE_COLOUR, ' stroke-dasharray="3 2"'
        tip = f"#{cell.position} · {cell.token}{glyph}: {'being computed' if state == 'queued' else 'not analysed'}"
    else:
        fill, ink = scale.colours(getattr(cell, metric), palette) or ("none", "#000")
        stroke, extra = (FLAG_COLOUR, ' stroke-width="2"') if cell.norm_outlier else (LINE_COLOUR, "")
        value = cell.text(metric) or "–"
        flag = (
            f" · ‖A‖ {cell.activation_norm_text}: far outside the lens' usual range"
            if cell.norm_outlier
            else ""
        )
        label = colours.METRIC_LABELS[metric]
        tip = f"#{cell.position} · {cell.token}{glyph} · {label} {value}{flag}\n{cell.explanation}"
    faded = ' opacity="0.5"' if getattr(cell, "early", False) else ""
    text_y = box.y + BOX_HEIGHT / 2 + 0.35 * FONT_SIZE  # a baseline that centres the glyphs in the box
    return (
        f'<g class="token" data-position="{cell.position}"{faded}><title>{_xml(tip)}</title>'
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" height="{BOX_HEIGHT}" rx="3" '
        f'fill="{fill}" stroke="{stroke}"{extra}/>'
        f'<text x="{box.x + TOKEN_PAD:.1f}" y="{text_y:.1f}" fill="{ink}" font-family="{MONOSPACE}" '
        f'font-size="{FONT_SIZE}" xml:space="preserve">{_xml(cell.fulltext_text)}</text></g>'
    )


def _legend_svg(scale: colours.Scale, palette: str, y: float) -> tuple[str, float]:
    """The scale's description, then its swatches between its two end labels; (SVG, bottom)."""
    swatches, ends = scale.legend_colours(palette), scale.legend()
    parts = [f'<text x="{SVG_MARGIN}" y="{y + 12:.1f}" >{_xml(scale.describe())}</text>']
    y += 20
    low = _xml(ends[0]["label"])
    parts.append(f'<text x="{SVG_MARGIN}" y="{y + 11:.1f}" fill="{MUTED}">{low}</text>')
    x = SVG_MARGIN + _text_width(ends[0]["label"]) + 8
    for colour, swatch in zip(swatches, ends, strict=True):
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="28" height="14" fill="{colour}" stroke="{LINE_COLOUR}">'
            f"<title>{_xml(swatch['range'])}</title></rect>"
        )
        x += 28
    parts.append(f'<text x="{x + 8:.1f}" y="{y + 11:.1f}" fill="{MUTED}">{_xml(ends[-1]["label"])}</text>')
    return "\n".join(parts), y + 14


def fulltext_svg(
    cells: list, *, metric: str, scale: colours.Scale, palette: str, title: str, caption: str, note: str = ""
) -> bytes:
    """The full-text view as one standalone SVG: each token a box coloured by `metric` on `scale` (the page's
    colours), its position, value and explanation in its <title>; the caption above, the legend below."""
    y = SVG_MARGIN
    head = [f'<text x="{SVG_MARGIN}" y="{y + 14}" font-size="15" font-weight="600">{_xml(caption)}</text>']
    y += 22
    if note:
        head.append(f'<text x="{SVG_MARGIN}" y="{y + 11}" fill="{MUTED}">{_xml(note)}</text>')
        y += 18
    boxes, bottom = _layout(cells, SVG_MARGIN, y + 6, SVG_WIDTH - SVG_MARGIN)
    tokens = [_token_svg(box, metric, scale, palette) for box in boxes]
    legend, bottom = _legend_svg(scale, palette, bottom + 8)
    height = round(bottom + SVG_MARGIN)
    document = "\n".join(
        [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{height}" '
            f'viewBox="0 0 {SVG_WIDTH} {height}" role="img" font-family="system-ui, sans-serif" font-size="12">',
            f"<title>{_xml(title)}</title>",
            f"<desc>{_xml(scale.describe())}</desc>",
            f'<rect width="{SVG_WIDTH}" height="{height}" fill="#fff"/>',
            *head,
            '<g class="tokens">',
            *tokens,
            "</g>",
            f'<g class="legend">{legend}</g>',
            "</svg>",
        ]
    )
    return (document + "\n").encode("utf-8")
