"""Which lens family a result is of, decided one way everywhere (cards, results pages, summaries, exports,
imports): its metadata's `kind` (the engine's, kept by exports and imports), else its rows (an NLA's carry
metrics a Consistency Lens' never have; both carry cosine_similarity)."""

from __future__ import annotations

from inference import rows

LENS, NLA = "lens", "nla"
NLA_ONLY_FIELDS = rows.fields_in(rows.NLA_METRIC)  # mse_nrm, fve_nrm


def family_of(metadata: dict | None, rows=()) -> str:
    if (metadata or {}).get("kind") == NLA:
        return NLA
    if any(isinstance(row, dict) and any(k in row for k in NLA_ONLY_FIELDS) for row in rows):
        return NLA
    return LENS


def is_nla(metadata: dict | None, rows=()) -> bool:
    return family_of(metadata, rows) == NLA
