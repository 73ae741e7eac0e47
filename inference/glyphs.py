"""Glyphs split over tokens. A byte-level BPE tokenizer (GPT-2's, SmolLM2's; a byte-fallback one alike) may
split a character of two to four UTF-8 bytes ("é", "—", "😀", a CJK glyph) over several tokens, each of which
decodes alone to U+FFFD. Rows keep one token each, its own decode (research-identical); these spans tell the
pages which tokens to show as the glyph they make together.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"  # what decoding an incomplete UTF-8 sequence gives
# Tokens one span may run over: a glyph has at most 4 bytes, but a token that holds the end of one glyph and
# the start of the next chains them into one span.
MAX_SPAN = 16

Span = tuple[int, int, str]  # (start, end, text): ids[start:end] decode together to text


def glyph_spans(tokenizer, ids, tokens: list[str] | None = None) -> list[Span]:
    """Each shortest run ids[start:end] of two or more tokens that decode alone with U+FFFD and together to
    `text` without one, in order; [] for a text without split glyphs. A run of CJK glyphs gives one span per
    glyph (or per few, where a token straddles two). A token whose U+FFFD is the text's own never joins one.
    `tokens`: each id's decode alone, where the caller has them."""
    ids = list(ids)
    tokens = [tokenizer.decode([i]) for i in ids] if tokens is None else tokens
    broken = [REPLACEMENT in t for t in tokens]
    spans: list[Span] = []
    start, n = 0, len(ids)
    while start < n:
        span = _span_at(tokenizer, ids, broken, start) if broken[start] else None
        if span is None:
            start += 1
            continue
        spans.append(span)
        start = span[1]
    return spans


def _span_at(tokenizer, ids: list[int], broken: list[bool], start: int) -> Span | None:
    end = start + 1
    while end < len(ids) and broken[end] and end - start < MAX_SPAN:
        end += 1
        text = tokenizer.decode(ids[start:end])
        if REPLACEMENT not in text:
            return start, end, text
    return None


def glyph_metadata(spans: list[Span]) -> dict:
    """What an analysis' metadata says of them: {"glyphs": [[start, end, text], …]}, or {} without any."""
    return {"glyphs": [[start, end, text] for start, end, text in spans]} if spans else {}
