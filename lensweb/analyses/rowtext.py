"""How a row's text and numbers are written, the same on live cards (analyses.fragments) and results pages
(results.display): one place, so that the two never quietly differ."""

from __future__ import annotations

import math

LOGIT_LENS_SHOWN = 5  # the logit lens' top tokens a row shows


def visible(token: str | None) -> str:
    """Whitespace a reader can see: newlines, tabs and returns as arrows; a token of spaces only as ␣ (it
    would otherwise show as nothing; spaces inside a token stay, shown with white-space: pre)."""
    if not token:
        return token or ""
    if not token.strip(" "):
        return token.replace(" ", "␣")
    return token.replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")


def number(value, digits: int = 4) -> str:
    """A finite number to `digits` places; anything else (None, NaN, a flag) as nothing."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return ""


def logit_lens_text(top) -> str:
    """The logit lens' top tokens, "a · b · c": from the engine's list of strings, or an import's list of
    {token, …} objects or [token, probability] pairs."""
    if not isinstance(top, list) or not top:
        return ""
    items = []
    for item in top[:LOGIT_LENS_SHOWN]:
        if isinstance(item, dict):
            item = item.get("token", "")
        elif isinstance(item, list | tuple):
            item = item[0] if item else ""
        if item is not None:
            items.append(visible(str(item)))
    return " · ".join(items)
