"""Which lens family a result is of, decided one way everywhere (cards, results pages, summaries, exports,
imports): its metadata's `kind` (the engine's, kept by exports and imports), else its rows (an NLA's carry
metrics a Consistency Lens' never have; both carry cosine_similarity)."""

from __future__ import annotations

from inference import rows

LENS, NLA = "lens", "nla"
NLA_ONLY_FIELDS = rows.fields_in(rows.NLA_METRIC)  # mse_nrm, fve_nrm
# The first position each family was trained on: the Consistency Lenses never on 0–5
# (shared/spec/lens-inference.md §3), the reference NLAs on 50 and later only (shared/spec/nla.md §5). Earlier
# rows are shown de-emphasised, left out of fitted colour scales and of summaries' means.
FIRST_TRAINED = {LENS: 6, NLA: 50}


def family_of(metadata: dict | None, rows=()) -> str:
    if (metadata or {}).get("kind") == NLA:
        return NLA
    if any(isinstance(row, dict) and any(k in row for k in NLA_ONLY_FIELDS) for row in rows):
        return NLA
    return LENS


def is_nla(metadata: dict | None, rows=()) -> bool:
    return family_of(metadata, rows) == NLA
