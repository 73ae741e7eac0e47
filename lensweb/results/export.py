"""The research site's file format, both ways. Pure functions (no requests, no database writes) so that
the web views and the JSON API expose the same bytes:

    export_json(analysis, rows) -> bytes       {"metadata": {...}, "data": [row, ...]}
    export_csv(analysis, rows) -> bytes        one line per position
    parse_import(content, filename) -> list[ImportedTranscript]

A research row has `position, token, explanation, explanation_structured, token_salience, mse,
relative_rmse, kl_divergence` (golden README §5): `explanation` is the decoded explanation plus
"[token]" when the lens adds the current token, `explanation_structured` the per-token decodes (plus
"[token]"), `kl_divergence` -1.0 when not computed. Our own fields follow under names that do not clash.
Import converts a row back into our row shape; whatever it cannot derive exactly (a research file's
own `logit_lens_top` string, fields we do not know) is kept in `imported_fields` and written back as it
came, so export -> import -> export gives the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

FORMAT = "lensweb-analysis"
FORMAT_VERSION = 1
KL_NOT_COMPUTED = -1.0
DEFAULT_MAX_IMPORT_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_TRANSCRIPTS = 100
DEFAULT_MAX_ROWS = 20_000

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
EXPORT_FIELDS = RESEARCH_FIELDS + OUR_FIELDS
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
# Metadata keys that become Analysis fields on import (and are rebuilt from them on export).
ENVELOPE_KEYS = ("format", "format_version", "analysis_id", "status", "input", "options", "timings")


def size_text(n: int) -> str:
    """Bytes as people read them (MB = 2**20 bytes, as the limit is set)."""
    if n >= 2**20:
        return f"{n / 2**20:.1f} MB".replace(".0 MB", " MB")
    return f"{n / 1024:.0f} KB" if n >= 1024 else f"{n} bytes"


class ImportFormatError(ValueError):
    """A file we refuse, with a message that says where and what to fix."""


@dataclass
class ImportedTranscript:
    """One analysis read from a file: what an Analysis row needs, rows in our row shape."""

    lens_id: str
    input: dict[str, Any]
    options: dict[str, Any]
    metadata: dict[str, Any]
    timings: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


# --- export ----------------------------------------------------------------------------------------


def _current_token_suffix(row: dict, add_current_token: bool) -> str | None:
    return f"[{row.get('token', '')}]" if add_current_token else None


def research_row(row: dict, add_current_token: bool) -> dict[str, Any]:
    """One of our rows in the research site's shape (+ our fields), in EXPORT_FIELDS order."""
    suffix = _current_token_suffix(row, add_current_token)
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
        "kl_divergence": kl if kl is not None else KL_NOT_COMPUTED,
        "token_id": row.get("token_id"),
        "explanation_token_ids": row.get("explanation_token_ids"),
        "explanation_tokens": tokens,
        "logit_lens_top": "".join(t or "" for t in top) if isinstance(top, list) else "",
        "logit_lens_tokens": top,
        "candidates": row.get("candidates"),
    }
    imported = row.get("imported_fields") or {}
    for key, value in imported.items():
        out[key] = value  # a research file's own value (or unknown field), written back as it came
    return out


def export_metadata(analysis) -> dict[str, Any]:
    """The analysis' engine metadata plus its envelope (input, options, timings, status)."""
    meta = dict(analysis.metadata or {})
    options = analysis.options or {}
    envelope = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
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


def export_json(analysis, rows: list[dict]) -> bytes:
    """`{"metadata": {...}, "data": [...]}`, one row per line (diffable; a 1,000-row file stays readable)."""
    add_current = bool((analysis.metadata or {}).get("add_current_token"))
    lines = [f'{{"metadata": {_dumps(export_metadata(analysis))},', ' "data": [']
    body = [_dumps(research_row(r, add_current)) for r in sorted(rows, key=lambda r: r["position"])]
    lines.append(",\n".join(body))
    lines.append("]}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def export_csv(analysis, rows: list[dict]) -> bytes:
    """One line per position; list-valued cells are JSON. UTF-8, no BOM; values are written as they are
    (a token such as "=" stays "="; open the file as data, not as a spreadsheet formula sheet)."""
    add_current = bool((analysis.metadata or {}).get("add_current_token"))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in sorted(rows, key=lambda r: r["position"]):
        out = research_row(row, add_current)
        writer.writerow(
            [
                _dumps(out[k]) if isinstance(out[k], list | dict) else ("" if out[k] is None else out[k])
                for k in CSV_FIELDS
            ]
        )
    return buffer.getvalue().encode("utf-8")


# --- import ----------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "true/false",
        int: "a whole number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _documents(text: str, where: str) -> list[Any]:
    """Every JSON value in the file: one document, JSON Lines, or objects written one after another."""
    decoder = json.JSONDecoder()
    values, i, n = [], 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            return values
        try:
            value, i = decoder.raw_decode(text, i)
        except RecursionError:
            raise ImportFormatError(f"{where} is nested too deeply to be an analysis export") from None
        except json.JSONDecodeError as exc:
            cut = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated")
            what = "is cut off (truncated)" if cut else "is not valid JSON"
            raise ImportFormatError(
                f"{where} {what} at line {exc.lineno}, column {exc.colno}: {exc.msg}. "
                "Export the file again, or check that it was saved completely."
            ) from None
        values.append(value)


def _columns_to_rows(columns: dict, where: str) -> list:
    """The research site's column-oriented data: {"position": {"0": 0, ...}, "mse": {...}, ...}."""
    keys = list(columns["position"])
    rows = []
    for key in keys:
        rows.append({name: col.get(key) for name, col in columns.items() if isinstance(col, dict)})
    return rows


def _transcripts(values: list[Any], where: str, label: str = "document") -> list[tuple[dict, list, str]]:
    """(metadata, rows, where) per transcript, whatever wrapping the file used."""
    found = []
    for index, value in enumerate(values):
        here = f"{where}, {label} {index + 1}" if len(values) > 1 else where
        if isinstance(value, list):
            if value and all(isinstance(v, dict) and ("data" in v or "rows" in v) for v in value):
                found.extend(_transcripts(value, here, "transcript"))
                continue
            found.append(({}, value, here))
        elif isinstance(value, dict):
            data = value.get("data", value.get("rows"))
            if data is None:
                raise ImportFormatError(
                    f'{here}: expected an object with "metadata" and "data" (the research site\'s export), '
                    f"found keys {', '.join(sorted(value)[:8]) or 'none'}"
                )
            metadata = value.get("metadata")
            if metadata is None:
                metadata = {}
            if not isinstance(metadata, dict):
                raise ImportFormatError(f'{here}: "metadata" must be an object, got {_kind(metadata)}')
            if isinstance(data, dict) and isinstance(data.get("position"), dict):
                data = _columns_to_rows(data, here)
            if not isinstance(data, list):
                raise ImportFormatError(f'{here}: "data" must be a list of rows, got {_kind(data)}')
            found.append((metadata, data, here))
        else:
            raise ImportFormatError(f"{here}: expected an object or a list, got {_kind(value)}")
    return found


def _check(cond: bool, where: str, name: str, expected: str, value: Any) -> None:
    if not cond:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ImportFormatError(f'{where}: "{name}" must be {expected}, got {_kind(value)} {shown}')


def _number_list(value) -> bool:
    return isinstance(value, list) and all(_is_number(v) for v in value)


def _str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _int_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _detect_add_current(metadata: dict, rows: list[dict]) -> bool:
    if isinstance(metadata.get("add_current_token"), bool):
        return metadata["add_current_token"]
    structured = [r.get("explanation_structured") for r in rows]
    return bool(rows) and all(
        isinstance(s, list) and s and s[-1] == f"[{r.get('token')}]"
        for s, r in zip(structured, rows, strict=True)
    )


def _our_row(raw: dict, where: str, add_current: bool) -> dict[str, Any]:
    _check(isinstance(raw, dict), where, "row", "an object", raw)
    for name in ("position", "token", "mse"):
        if name not in raw:
            raise ImportFormatError(
                f'{where}: the row has no "{name}" (every row needs position, token, mse)'
            )
    position, token = raw["position"], raw["token"]
    _check(
        isinstance(position, int) and not isinstance(position, bool) and position >= 0,
        where,
        "position",
        "a whole number ≥ 0",
        position,
    )
    _check(isinstance(token, str), where, "token", "a string", token)
    _check(_is_number(raw["mse"]), where, "mse", "a number", raw["mse"])
    for name in ("relative_rmse", "kl_divergence", "kl"):
        if raw.get(name) is not None:
            _check(_is_number(raw[name]), where, name, "a number or null", raw[name])
    salience = raw.get("token_salience")
    if salience is not None:
        _check(_number_list(salience), where, "token_salience", "a list of numbers or null", salience)
    structured = raw.get("explanation_structured")
    if structured is not None:
        _check(_str_list(structured), where, "explanation_structured", "a list of strings", structured)
    explanation = raw.get("explanation")
    if explanation is not None:
        _check(isinstance(explanation, str), where, "explanation", "a string", explanation)
    if explanation is None and structured is None:
        raise ImportFormatError(f'{where}: the row has neither "explanation" nor "explanation_structured"')
    for name in ("token_id",):
        if raw.get(name) is not None:
            _check(
                isinstance(raw[name], int) and not isinstance(raw[name], bool),
                where,
                name,
                "a whole number or null",
                raw[name],
            )
    if raw.get("explanation_token_ids") is not None:
        _check(
            _int_list(raw["explanation_token_ids"]),
            where,
            "explanation_token_ids",
            "a list of whole numbers or null",
            raw["explanation_token_ids"],
        )
    if raw.get("explanation_tokens") is not None:
        _check(
            _str_list(raw["explanation_tokens"]),
            where,
            "explanation_tokens",
            "a list of strings",
            raw["explanation_tokens"],
        )
    for name in ("logit_lens_tokens",):
        if raw.get(name) is not None:
            _check(
                isinstance(raw[name], list) and all(isinstance(v, str | None) for v in raw[name]),
                where,
                name,
                "a list of strings or null",
                raw[name],
            )
    if raw.get("logit_lens_top") is not None:
        _check(
            isinstance(raw["logit_lens_top"], str | list),
            where,
            "logit_lens_top",
            "a string",
            raw["logit_lens_top"],
        )
    candidates = raw.get("candidates")
    if candidates is not None:
        _check(
            isinstance(candidates, list) and all(isinstance(c, dict) for c in candidates),
            where,
            "candidates",
            "a list of objects or null",
            candidates,
        )
        for c in candidates:
            _check(_is_number(c.get("mse")), where, "candidates[].mse", "a number", c.get("mse"))

    suffix = _current_token_suffix(raw, add_current)
    tokens = raw.get("explanation_tokens")
    if tokens is None and structured is not None:
        tokens = (
            structured[:-1] if suffix is not None and structured and structured[-1] == suffix else structured
        )
    if explanation is None:
        explanation = "".join(structured or [])
    if suffix is not None and explanation.endswith(suffix):
        explanation = explanation[: -len(suffix)]
    kl = raw.get("kl", raw.get("kl_divergence"))
    if kl is not None and kl < 0:
        kl = None  # -1.0: not computed
    top = raw.get("logit_lens_tokens")
    if top is None and isinstance(raw.get("logit_lens_top"), list):
        top = raw["logit_lens_top"]
    row = {
        "position": position,
        "token": token,
        "token_id": raw.get("token_id"),
        "explanation": explanation,
        "explanation_tokens": tokens,
        "explanation_token_ids": raw.get("explanation_token_ids"),
        "token_salience": salience,
        "mse": raw["mse"],
        "relative_rmse": raw.get("relative_rmse"),
        "kl": kl,
        "logit_lens_top": top,
        "candidates": candidates,
    }
    # Whatever our shape cannot reproduce exactly is kept as it came, to be written back on export.
    rebuilt = research_row(row, add_current)
    kept = {k: v for k, v in raw.items() if k not in rebuilt or (k in EXPORT_FIELDS and rebuilt[k] != v)}
    kept.pop("kl", None)
    if kept:
        row["imported_fields"] = kept
    return row


def _input_from(metadata: dict, rows: list[dict]) -> dict[str, Any]:
    given = metadata.get("input")
    if isinstance(given, dict):
        if isinstance(given.get("text"), str):
            return {"text": given["text"]}
        messages = given.get("messages")
        if (
            isinstance(messages, list)
            and messages
            and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages
            )
        ):
            return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
    for key in ("rendered_text", "text", "input_text"):
        if isinstance(metadata.get(key), str):
            return {"text": metadata[key]}
    return {"text": "".join(r["token"] for r in rows)}


def _options_from(metadata: dict, rows: list[dict]) -> dict[str, Any]:
    given = metadata.get("options") if isinstance(metadata.get("options"), dict) else {}
    options = {
        "best_of_k": 1,
        "temperature": 1.0,
        "seed": 42,
        "salience": any(r["token_salience"] is not None for r in rows),
        "kl": any(r["kl"] is not None for r in rows),
        "logit_lens": any(r["logit_lens_top"] is not None for r in rows),
        "keep_candidates": any(r["candidates"] is not None for r in rows),
        "last_n_messages": None,
    }
    for key in ("best_of_k", "temperature", "seed"):
        if _is_number(metadata.get(key)):
            options[key] = metadata[key]
    for key, value in given.items():  # a file's own options, where their type is the one we use
        default = options.get(key)
        if key not in options:
            continue
        if key == "last_n_messages":
            if value is None or (isinstance(value, int) and not isinstance(value, bool)):
                options[key] = value
        elif isinstance(default, bool):
            if isinstance(value, bool):
                options[key] = value
        elif key == "temperature":
            if _is_number(value):
                options[key] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            options[key] = value
    return options


def parse_import(
    content: bytes,
    filename: str = "upload.json",
    *,
    max_bytes: int = DEFAULT_MAX_IMPORT_BYTES,
    max_transcripts: int = DEFAULT_MAX_TRANSCRIPTS,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> list[ImportedTranscript]:
    """Read a research-site JSON / JSONL file (one or several transcripts). Raises ImportFormatError."""
    where = filename or "the file"
    if len(content) > max_bytes:
        raise ImportFormatError(
            f"{where} is {size_text(len(content))}; the limit is {size_text(max_bytes)}. "
            "Split it into several files."
        )
    if filename.lower().endswith(".csv"):
        raise ImportFormatError(
            f"{where}: CSV files carry no metadata and cannot be imported; use the JSON export"
        )
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{where} is not UTF-8 text (byte {exc.start}); is it a JSON file?") from None
    values = _documents(text, where)
    if not values:
        raise ImportFormatError(f"{where} is empty")
    found = _transcripts(values, where)
    if len(found) > max_transcripts:
        raise ImportFormatError(
            f"{where} holds {len(found)} transcripts; the limit is {max_transcripts} per file"
        )
    transcripts = []
    for metadata, raw_rows, here in found:
        if not raw_rows:
            raise ImportFormatError(f'{here}: "data" has no rows')
        if len(raw_rows) > max_rows:
            raise ImportFormatError(f"{here}: {len(raw_rows)} rows; the limit is {max_rows}")
        for j, raw in enumerate(raw_rows):
            _check(isinstance(raw, dict), f"{here}, row {j + 1}", "row", "an object", raw)
        add_current = _detect_add_current(metadata, raw_rows)
        rows, seen = [], set()
        for j, raw in enumerate(raw_rows):
            row = _our_row(raw, f"{here}, row {j + 1}", add_current)
            if row["position"] in seen:
                raise ImportFormatError(f"{here}, row {j + 1}: position {row['position']} appears twice")
            seen.add(row["position"])
            rows.append(row)
        rows.sort(key=lambda r: r["position"])
        engine_meta = {k: v for k, v in metadata.items() if k not in ENVELOPE_KEYS}
        engine_meta["add_current_token"] = add_current
        lens_id = str(
            metadata.get("lens_id") or metadata.get("model_id") or metadata.get("model_name") or "imported"
        )[:100]
        timings = metadata.get("timings") if isinstance(metadata.get("timings"), dict) else {}
        transcripts.append(
            ImportedTranscript(
                lens_id=lens_id,
                input=_input_from(metadata, rows),
                options=_options_from(metadata, rows),
                metadata=engine_meta,
                timings=timings,
                rows=rows,
            )
        )
    return transcripts
