"""A results view as a standalone figure: one HTML file that opens anywhere with no server, carrying the
site's own stylesheets and colour palettes (so it looks as the page does, hover boxes included), for a
paper's supplement or a slide."""

from __future__ import annotations

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
