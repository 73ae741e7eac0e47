"""The research site's file format, written: pure functions (no requests, no database) so that the web views
and the JSON API expose the same bytes. Reading it back is `imports.py`.

    export_json(analysis, rows) -> bytes       {"metadata": {...}, "data": [row, ...]}
    export_json(analysis, rows, research=True) the research site's shape, its conventions kept
    export_csv(analysis, rows, raw=False)      one line per position, spreadsheet-safe unless raw

A row has `position, token, explanation, explanation_structured, token_salience, mse, relative_rmse,
kl_divergence` (golden README §5), then our own fields under names that do not clash. Our files write what was
computed and nothing else: `explanation` is the explanation, `kl_divergence` null where KL was not computed.
The research-shape file keeps the research site's conventions (CONVENTIONS): "[token]" after the explanation
(and as the last of `explanation_structured`) when the lens adds the current token, and -1.0 for a KL not
computed; each file's metadata says which it is (`research_shape`) and what its conventions are.

Every row then has its fidelity columns (FIDELITY_FIELDS): `cosine_similarity` (cos of A and Â),
`activation_norm` (‖A‖₂) and `activation_norm_outlier` (‖A‖ far outside the lens' usual range: position 0,
attention sinks); null (an empty CSV cell) in a row stored before the engine computed them.

A Natural Language Autoencoder's analysis (metadata kind "nla") adds its metrics to every row (NLA_FIELDS:
`mse_nrm`, `cosine_similarity` (its own: of the two vectors rescaled), `fve_nrm`, null without a variance
constant) and, where the engine gave them, the verbaliser's raw output (`av_text`, `av_stop`,
`explanation_parsed`); its `mse` is the raw mse. Its norm fields follow those.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from inference import rows
from lensweb.analyses.families import NLA_ONLY_FIELDS, is_nla  # noqa: F401  (is_nla: this module's API)

FORMAT = "lensweb-analysis"
FORMAT_VERSION = 1
KL_NOT_COMPUTED = -1.0  # the research site's "not computed"
# What each shape writes where the research format forces a convention (metadata "conventions"; README).
CONVENTIONS = {
    False: {
        "explanation": "the explanation alone (add_current_token says whether the lens also reads the token)",
        "kl_divergence": "null where KL was not computed",
    },
    True: {
        "explanation": (
            'the explanation followed by "[token]" where the lens adds the current token, and "[token]" the '
            "last item of explanation_structured: the research site's convention"
        ),
        "kl_divergence": "-1.0 where KL was not computed: the research site's convention",
    },
}

# Research row fields first (their order), then ours.
RESEARCH_FIELDS = (
    "position",
    "token",
    "explanation",
    "explanation_structured",
    "token_salience",
    "mse",
    "relative_rmse",
    "kl_divergence",
)
OUR_FIELDS = (
    "token_id",
    "explanation_token_ids",
    "explanation_tokens",
    "logit_lens_top",  # the research site's string (tokens joined), "" when not computed
    "logit_lens_tokens",  # ours: the list of top tokens, null when not computed
    "candidates",
)
FIDELITY_FIELDS = rows.fields_in(rows.FIDELITY)  # cos(A, Â), then the norm fields
NORM_FIELDS = FIDELITY_FIELDS[1:]
# An import keeps a field of these that its row shape cannot rebuild (imported_fields), to write it back.
EXPORT_FIELDS = RESEARCH_FIELDS + OUR_FIELDS + FIDELITY_FIELDS
# An NLA's rows: its metrics always, then the verbaliser's raw output when the row has it.
NLA_METRIC_FIELDS = ("mse_nrm", "cosine_similarity", "fve_nrm")  # the research export's order
# Fields only an NLA's rows have: what tells a file's rows apart by family (cos is on every row now).
NLA_EXTRA_FIELDS = rows.fields_in(rows.NLA_EXTRA)
NLA_FIELDS = NLA_METRIC_FIELDS + NLA_EXTRA_FIELDS
CSV_FIELDS = (
    "position",
    "token",
    "explanation",
    "explanation_structured",
    "token_salience",
    "mse",
    "relative_rmse",
    "kl_divergence",
    "token_id",
    "explanation_token_ids",
    "logit_lens_top",
)
NLA_CSV_FIELDS = NLA_METRIC_FIELDS
# After CSV_FIELDS: a Consistency Lens' cos and the norm columns; an NLA's metrics (its cos among them) and
# the norm columns.
LENS_CSV_EXTRA = FIDELITY_FIELDS
NLA_CSV_EXTRA = NLA_CSV_FIELDS + NORM_FIELDS
# Metadata keys that become Analysis fields on import (and are rebuilt from them on export).
ENVELOPE_KEYS = (
    "format",
    "format_version",
    "research_shape",
    "conventions",
    "analysis_id",
    "status",
    "input",
    "options",
    "timings",
)


# --- export ----------------------------------------------------------------------------------------


def current_token_suffix(row: dict, add_current_token: bool) -> str | None:
    return f"[{row.get('token', '')}]" if add_current_token else None


def research_row(
    row: dict, add_current_token: bool, nla: bool = False, research: bool = True
) -> dict[str, Any]:
    """One of our rows in the research site's field order (+ our fields), in EXPORT_FIELDS order, then an NLA's
    fields when `nla`; with the research site's conventions where `research` (CONVENTIONS)."""
    suffix = current_token_suffix(row, add_current_token) if research else None
    tokens = row.get("explanation_tokens")
    structured = list(tokens) if isinstance(tokens, list) else None
    if structured is not None and suffix is not None:
        structured.append(suffix)
    kl = row.get("kl")
    top = row.get("logit_lens_top")
    out = {
        "position": row.get("position"),
        "token": row.get("token"),
        "explanation": (row.get("explanation") or "") + (suffix or ""),
        "explanation_structured": structured,
        "token_salience": row.get("token_salience"),
        "mse": row.get("mse"),
        "relative_rmse": row.get("relative_rmse"),
        "kl_divergence": KL_NOT_COMPUTED if kl is None and research else kl,
        "token_id": row.get("token_id"),
        "explanation_token_ids": row.get("explanation_token_ids"),
        "explanation_tokens": tokens,
        "logit_lens_top": "".join(t or "" for t in top) if isinstance(top, list) else "",
        "logit_lens_tokens": top,
        "candidates": row.get("candidates"),
    }
    if nla:
        out.update({key: row.get(key) for key in NLA_METRIC_FIELDS})
        out.update({key: row[key] for key in NLA_EXTRA_FIELDS if key in row})
    else:
        out["cosine_similarity"] = row.get("cosine_similarity")
    out.update({key: row.get(key) for key in NORM_FIELDS})
    imported = row.get("imported_fields") or {}
    for key, value in imported.items():
        out[key] = value  # a research file's own value (or unknown field), written back as it came
    return out


def export_metadata(analysis, research: bool = False) -> dict[str, Any]:
    """The analysis' engine metadata plus its envelope (input, options, timings, status, the file's shape)."""
    meta = dict(analysis.metadata or {})
    options = analysis.options or {}
    envelope = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "research_shape": research,
        "conventions": CONVENTIONS[research],
        "analysis_id": analysis.pk,
        "status": analysis.status,
        "input": analysis.input,
        "options": options,
        "timings": analysis.timings or {},
    }
    # The research site's metadata box reads these names.
    research = {
        "model_name": meta.get("name") or analysis.lens_id,
        "model_id": analysis.lens_id,
        "best_of_k": options.get("best_of_k"),
        "temperature": options.get("temperature"),
    }
    return {**envelope, **research, **{k: v for k, v in meta.items() if k not in envelope}}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def export_json(analysis, rows: list[dict], user_scores: list[dict] = (), *, research: bool = False) -> bytes:
    """`{"metadata": {...}, "data": [...]}`, one row per line (diffable; a 1,000-row file stays readable);
    then, where its owner scored explanations of their own (analyses.probes), `"user_scores": [...]`.
    `research`: the research site's shape, its conventions kept (CONVENTIONS)."""
    add_current = bool((analysis.metadata or {}).get("add_current_token"))
    nla = is_nla(analysis.metadata, rows)
    lines = [f'{{"metadata": {_dumps(export_metadata(analysis, research))},', ' "data": [']
    ordered = sorted(rows, key=lambda r: r["position"])
    body = [_dumps(research_row(r, add_current, nla, research)) for r in ordered]
    lines.append(",\n".join(body))
    if user_scores:
        lines.append('], "user_scores": [')
        lines.append(",\n".join(_dumps(score) for score in user_scores))
    lines.append("]}")
    return ("\n".join(lines) + "\n").encode("utf-8")


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...) or a DDE call
# opened from a shared link), so the default CSV prefixes such a text cell with "'" (OWASP, "CSV
# Injection"). Only text cells: a number we write as a number (-0.5, a negative score) is read
# as a number, cannot be a formula, and must stay numeric for whoever sums the column. List cells are
# JSON and start with "[" or "{". `raw=True` writes every cell unchanged (the JSON export is always exact).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: Any) -> Any:
    """A text cell that a spreadsheet would read as a formula, behind a leading "'"; anything else as is."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        return _dumps(value)
    return "" if value is None else value


def export_csv(analysis, rows: list[dict], *, raw: bool = False) -> bytes:
    """One line per position (then cos, ‖A‖ and its outlier flag; an NLA's three metrics and the norm ones);
    empty cells where a row stored before lacks them; list-valued cells are JSON. UTF-8, no BOM,
    RFC 4180 line ends (CRLF: the writer then quotes a cell holding a CR, as it does one holding a LF; with "\n" alone a token "\r"
    would end the line for a reader). Text cells that a spreadsheet would run as formulas get a leading
    "'" unless `raw` (then a token such as "=" stays "=")."""
    add_current = bool((analysis.metadata or {}).get("add_current_token"))
    nla = is_nla(analysis.metadata, rows)
    fields = CSV_FIELDS + (NLA_CSV_EXTRA if nla else LENS_CSV_EXTRA)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(fields)
    for row in sorted(rows, key=lambda r: r["position"]):
        out = research_row(row, add_current, nla, research=False)
        cells = [_csv_cell(out[k]) for k in fields]
        writer.writerow(cells if raw else [spreadsheet_safe(c) for c in cells])
    return buffer.getvalue().encode("utf-8")


# --- generations -----------------------------------------------------------------------------------------

GENERATION_FORMAT = "lensweb-generation"
GENERATION_CSV_FIELDS = ("sample", "text", "finished", "new_tokens", "token_ids")


def generation_json(generation) -> bytes:
    """`{"metadata": {...}, "samples": [...]}`: the input and options that made the samples, the prompt as
    the model saw it, and each sample (text, token ids, whether it stopped at end-of-turn), one per line."""
    result = generation.result or {}
    metadata = {
        "format": GENERATION_FORMAT,
        "format_version": FORMAT_VERSION,
        "generation_id": generation.pk,
        "status": generation.status,
        "lens": generation.lens_id,
        "input": generation.input,
        "options": generation.options,
        "prompt": result.get("prompt"),
        "prompt_token_ids": result.get("prompt_token_ids"),
        "analysis_id": generation.follow_up_id,
        "timings": generation.timings or {},
        "created_at": generation.created_at.isoformat() if generation.created_at else None,
        "finished_at": generation.finished_at.isoformat() if generation.finished_at else None,
    }
    samples = [_dumps(sample) for sample in generation.samples]
    lines = [f'{{"metadata": {_dumps(metadata)},', ' "samples": [', ",\n".join(samples), "]}"]
    return ("\n".join(lines) + "\n").encode("utf-8")


def generation_csv(generation, *, raw: bool = False) -> bytes:
    """One line per sample; the token ids as a JSON list. Spreadsheet-safe unless `raw` (as analyses)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(GENERATION_CSV_FIELDS)
    for index, sample in enumerate(generation.samples):
        token_ids = sample.get("token_ids") or []
        cells = [
            index,
            sample.get("text", ""),
            bool(sample.get("finished")),
            len(token_ids),
            _dumps(token_ids),
        ]
        writer.writerow(cells if raw else [spreadsheet_safe(c) for c in cells])
    return buffer.getvalue().encode("utf-8")
