"""Reading the research site's file format (and ours, `export.py`) back into analyses. Pure functions:

    parse_import(content, filename) -> list[ImportedTranscript]

Import converts a row back into our row shape; whatever it cannot derive exactly (a research file's own
`logit_lens_top` string, fields we do not know) is kept in `imported_fields` and written back as it came, so
export -> import -> export gives the same bytes. An import holds only what can be stored and shown again
(MAX_* below): anything else is refused with where and what, never stored and never a 500.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from inference.errors import OptionError
from inference.options import options_of
from inference.types import AnalysisOptions

from .export import (
    ENVELOPE_KEYS,
    EXPORT_FIELDS,
    NLA_EXTRA_FIELDS,
    NLA_METRIC_FIELDS,
    current_token_suffix,
    is_nla,
    research_row,
)

DEFAULT_MAX_IMPORT_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_TRANSCRIPTS = 100
DEFAULT_MAX_ROWS = 1_024  # rows per transcript: the service passes the token bound (LENSWEB_MAX_TOKENS)
DEFAULT_MAX_TOTAL_ROWS = 10_000  # rows per file, all transcripts together
DEFAULT_MAX_CANDIDATES = 64  # best-of-k candidates kept per row
DEFAULT_MAX_TEXT_CHARS = 20_000
# What an import may hold, so that nothing stored can fail later: the database's integer columns and
# JSON (PostgreSQL's jsonb refuses NaN and lone surrogates), float arithmetic on the results pages (sums
# and squares of metrics stay finite), and json's recursion (our own files nest 6 levels deep).
MAX_INT = 2**63 - 1
MAX_POSITION = 2**31 - 1  # AnalysisRow.position: a PositiveIntegerField (int4 on PostgreSQL)
MAX_TOKEN_ID = 2**31 - 1
MAX_MAGNITUDE = 1e15  # metrics: a lens' mse is nowhere near this; squares and sums of it stay finite
MAX_NESTING = 32
# An NLA's metrics compare directions: cos lies in [-1, 1], mse_nrm = 2(1 - cos) is a mean of squares and
# fve_nrm = 1 - mse_nrm / V is at most 1. float32 rounding takes them a hair past their bounds.
NLA_TOLERANCE = 1e-3


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
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


class _NotANumber:
    """What json reads NaN, Infinity and -Infinity as here (it accepts them by default): the value check
    finds it and names where it is."""

    def __init__(self, name: str):
        self.name = name


_WHITESPACE = re.compile(r"[ \t\r\n]*")


def _documents(text: str, where: str, max_documents: int) -> list[Any]:
    """Every JSON value in the file: one document, JSON Lines, or objects written one after another.
    Each holds at least one transcript, so more than `max_documents` are refused as soon as they are
    seen (20 MB of `[] ` would otherwise be six million values parsed before one is checked)."""
    decoder = json.JSONDecoder(parse_constant=_NotANumber)
    values, i, n = [], 0, len(text)
    while True:
        i = _WHITESPACE.match(text, i).end()
        if i >= n:
            return values
        if len(values) == max_documents:
            raise ImportFormatError(
                f"{where} holds more than {max_documents} transcripts; the limit is {max_documents} per file"
            )
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
        except ValueError:  # int(): a whole number of thousands of digits
            raise ImportFormatError(f"{where} holds a whole number too long to read") from None
        values.append(value)


# A lone UTF-16 surrogate can only come from a \uD800-\uDFFF escape (UTF-8 cannot encode one), and a NUL
# (which PostgreSQL's text and jsonb refuse) from \u0000 (JSON takes no raw control character): look for them
# in the strings only when the text has such an escape.
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")


def _bad_value(value: Any, surrogates: bool) -> bool:
    """Whether anything in `value` cannot be stored and shown: too deep, NaN/Infinity, a number beyond 64
    bits (json reads 1e400 as inf; jsonb would give 1e300 back as a whole number), a lone surrogate. One loop over
    the scalars of each container (a 10,000-row file has a million): this runs in the one database
    thread, so it must cost no more than the parse."""
    lo, hi = -MAX_INT - 1, MAX_INT
    containers = [(value, 0)] if isinstance(value, dict | list) else [([value], -1)]
    while containers:
        container, depth = containers.pop()
        if depth >= MAX_NESTING:
            return True
        if type(container) is dict:
            if surrogates and any(_unstorable_text(k) for k in container):
                return True
            container = container.values()
        for x in container:
            kind = type(x)
            if kind is float:
                if not lo <= x <= hi:  # inf and NaN too
                    return True
            elif kind is str:
                if surrogates and _unstorable_text(x):
                    return True
            elif kind is int:
                if not lo <= x <= hi:
                    return True
            elif kind is list or kind is dict:
                containers.append((x, depth + 1))
            elif kind is _NotANumber:
                return True
    return False


def _unstorable_text(text: str) -> bool:
    """A lone surrogate or a NUL: text no database stores."""
    if "\x00" in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _value_problem(v: Any, surrogates: bool, depth: int) -> str | None:
    if isinstance(v, dict | list) and depth >= MAX_NESTING:
        return f"is nested more than {MAX_NESTING} levels deep (an analysis export nests 6)"
    if isinstance(v, str) and surrogates and "\x00" in v:
        return "holds a NUL character (\\u0000), which no database stores as text"
    if isinstance(v, str) and surrogates and _unstorable_text(v):
        return "holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape, half a character): not text"
    if isinstance(v, _NotANumber):
        return f"is {v.name}: JSON has no NaN or Infinity (write null for a value that was not computed)"
    if isinstance(v, float) and not math.isfinite(v):
        return "is a number beyond the range of a float (about 1.8e308)"
    if isinstance(v, float) and not -MAX_INT - 1 <= v <= MAX_INT:
        # PostgreSQL's jsonb gives 1e300 back as a 301-digit whole number: numbers must fit in 64 bits
        return "is a number beyond ±9.2e18 (numbers must fit in 64 bits)"
    if isinstance(v, int) and not isinstance(v, bool) and not -MAX_INT - 1 <= v <= MAX_INT:
        return "is a whole number beyond 64 bits (±9.2e18)"
    return None


def _locate(value: Any, surrogates: bool, path: str = "", depth: int = 0) -> tuple[str, str] | None:
    """(path, problem) of the first value `_bad_value` objects to; depth-bounded, so recursion is safe."""
    problem = _value_problem(value, surrogates, depth)
    if problem is not None:
        return path, problem
    if isinstance(value, dict):
        for key, item in value.items():
            shown = key if key.isidentifier() else ascii(key)[:40]
            if surrogates and "\x00" in key:
                return path, f"has a key with a NUL character ({shown}), which no database stores as text"
            if surrogates and _unstorable_text(key):
                return path, f"has a key with a lone UTF-16 surrogate ({shown}): not text"
            found = _locate(item, surrogates, f"{path}.{shown}".lstrip("."), depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _locate(item, surrogates, f"{path}[{index}]", depth + 1)
            if found:
                return found
    return None


def _check_values(value: Any, where: str, surrogates: bool) -> None:
    if not _bad_value(value, surrogates):
        return
    path, problem = _locate(value, surrogates) or ("", "cannot be stored")
    raise ImportFormatError(f"{where}: {f'the value at {path}' if path else 'the document'} {problem}")


def _columns_to_rows(columns: dict, where: str) -> list:
    """The research site's column-oriented data: {"position": {"0": 0, ...}, "mse": {...}, ...}."""
    keys = list(columns["position"])
    rows = []
    for key in keys:
        rows.append({name: col.get(key) for name, col in columns.items() if isinstance(col, dict)})
    return rows


def _printable(text: str) -> str:
    """Text for an error message: a lone surrogate (a key of a damaged file) as its escape, which a page can
    encode."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
                    f"found keys {_printable(', '.join(sorted(value)[:8])) or 'none'}"
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


def _check_number(raw: dict, where: str, key: str, *, required: bool = False, label: str = "") -> None:
    value, name = raw.get(key), label or key
    if value is None and not required:
        return
    _check(_is_number(value), where, name, "a number" if required else "a number or null", value)
    _check(
        abs(value) <= MAX_MAGNITUDE, where, name, f"between -{MAX_MAGNITUDE:g} and {MAX_MAGNITUDE:g}", value
    )


def _check_token_ids(raw: dict, where: str, name: str) -> None:
    value = raw.get(name)
    if value is not None:
        _check(_int_list(value), where, name, "a list of whole numbers or null", value)
        _check(
            all(0 <= v <= MAX_TOKEN_ID for v in value),
            where,
            name,
            f"token ids from 0 to {MAX_TOKEN_ID:,}",
            value,
        )


def _check_candidates(candidates: Any, where: str, max_candidates: int) -> None:
    """The best-of-k explanations kept for a row (the candidates view shows them)."""
    _check(
        isinstance(candidates, list) and all(isinstance(c, dict) for c in candidates),
        where,
        "candidates",
        "a list of objects or null",
        candidates,
    )
    if len(candidates) > max_candidates:
        raise ImportFormatError(
            f'{where}: "candidates" has {len(candidates):,} entries; the limit is {max_candidates} (best of k)'
        )
    for c in candidates:
        _check_number(c, where, "mse", required=True, label="candidates[].mse")
        for name in NLA_METRIC_FIELDS:
            if c.get(name) is not None:
                _check_nla_metric(c, where, name, f"candidates[].{name}")
        _check(
            isinstance(c.get("explanation"), str | None),
            where,
            "candidates[].explanation",
            "a string",
            c.get("explanation"),
        )
        _check(
            isinstance(c.get("chosen"), bool | None),
            where,
            "candidates[].chosen",
            "true/false",
            c.get("chosen"),
        )
        _check_token_ids(c, where, "explanation_token_ids")


def _check_nla_metric(raw: dict, where: str, name: str, label: str = "") -> None:
    """An NLA metric: a number within the other metrics' bounds, and within its own range."""
    _check_number(raw, where, name, required=True, label=label)
    value, tol = raw[name], NLA_TOLERANCE
    if name == "cosine_similarity":
        _check(-1 - tol <= value <= 1 + tol, where, label or name, "a cosine, between -1 and 1", value)
    elif name == "mse_nrm":
        _check(value >= -tol, where, label or name, "a mean of squares, 0 or more", value)
    else:
        _check(value <= 1 + tol, where, label or name, "a fraction of variance explained, at most 1", value)


def _nla_fields(raw: dict, where: str) -> dict[str, Any]:
    """An NLA row's own fields: mse_nrm and cosine_similarity (always computed), fve_nrm (null without the
    lens' variance constant), and the verbaliser's raw output where the file has it."""
    for name in ("mse_nrm", "cosine_similarity"):
        if raw.get(name) is None:
            raise ImportFormatError(
                f'{where}: the row has no "{name}" (every row of a Natural Language Autoencoder\'s '
                "analysis needs mse_nrm and cosine_similarity)"
            )
    for name in NLA_METRIC_FIELDS:
        if raw.get(name) is not None:
            _check_nla_metric(raw, where, name)
    for name, kind, expected in (
        ("av_text", str, "a string or null"),
        ("av_stop", str, "a string or null"),
        ("explanation_parsed", bool, "true/false or null"),
    ):
        _check(raw.get(name) is None or isinstance(raw[name], kind), where, name, expected, raw.get(name))
    fields = {name: raw.get(name) for name in NLA_METRIC_FIELDS}
    fields.update({name: raw[name] for name in NLA_EXTRA_FIELDS if name in raw})
    return fields


def _fidelity_fields(raw: dict, where: str, nla: bool) -> dict[str, Any]:
    """cos(A, Â), ‖A‖ and its outlier flag where the file has them (export.FIDELITY_FIELDS; a file written
    before they existed has none). An NLA's cos is one of its own fields (_nla_fields)."""
    fields = {}
    if not nla and raw.get("cosine_similarity") is not None:
        _check_nla_metric(raw, where, "cosine_similarity")
        fields["cosine_similarity"] = raw["cosine_similarity"]
    if raw.get("activation_norm") is not None:
        _check_number(raw, where, "activation_norm")
        value = raw["activation_norm"]
        _check(value >= 0, where, "activation_norm", "a norm, 0 or more", value)
        fields["activation_norm"] = value
    flag = raw.get("activation_norm_outlier")
    if flag is not None:
        _check(isinstance(flag, bool), where, "activation_norm_outlier", "true/false or null", flag)
        fields["activation_norm_outlier"] = flag
    return fields


def _our_row(
    raw: dict,
    where: str,
    add_current: bool,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    nla: bool = False,
    research: bool = True,
) -> dict[str, Any]:
    """A file's row as ours; `research`: the file is in the research site's shape ("[token]" after the
    explanation, -1.0 for a KL not computed: export.CONVENTIONS), which is undone here."""
    _check(isinstance(raw, dict), where, "row", "an object", raw)
    for name in ("position", "token", "mse"):
        if name not in raw:
            raise ImportFormatError(
                f'{where}: the row has no "{name}" (every row needs position, token, mse)'
            )
    position, token = raw["position"], raw["token"]
    _check(
        isinstance(position, int) and not isinstance(position, bool) and 0 <= position <= MAX_POSITION,
        where,
        "position",
        f"a whole number from 0 to {MAX_POSITION:,}",
        position,
    )
    _check(isinstance(token, str), where, "token", "a string", token)
    _check_number(raw, where, "mse", required=True)
    for name in ("relative_rmse", "kl_divergence", "kl"):
        _check_number(raw, where, name)
    salience = raw.get("token_salience")
    if salience is not None:
        _check(_number_list(salience), where, "token_salience", "a list of numbers or null", salience)
        _check(
            all(abs(v) <= MAX_MAGNITUDE for v in salience),
            where,
            "token_salience",
            f"numbers between -{MAX_MAGNITUDE:g} and {MAX_MAGNITUDE:g}",
            salience,
        )
    structured = raw.get("explanation_structured")
    if structured is not None:
        _check(_str_list(structured), where, "explanation_structured", "a list of strings", structured)
    explanation = raw.get("explanation")
    if explanation is not None:
        _check(isinstance(explanation, str), where, "explanation", "a string", explanation)
    if explanation is None and structured is None:
        raise ImportFormatError(f'{where}: the row has neither "explanation" nor "explanation_structured"')
    token_id = raw.get("token_id")
    if token_id is not None:
        _check(
            isinstance(token_id, int) and not isinstance(token_id, bool) and 0 <= token_id <= MAX_TOKEN_ID,
            where,
            "token_id",
            f"a whole number from 0 to {MAX_TOKEN_ID:,}, or null",
            token_id,
        )
    _check_token_ids(raw, where, "explanation_token_ids")
    if raw.get("explanation_tokens") is not None:
        _check(
            _str_list(raw["explanation_tokens"]),
            where,
            "explanation_tokens",
            "a list of strings",
            raw["explanation_tokens"],
        )
    for name in ("logit_lens_tokens", "logit_lens_top"):
        value = raw.get(name)
        if isinstance(value, list) or (name == "logit_lens_tokens" and value is not None):
            _check(
                isinstance(value, list) and all(isinstance(v, str | None) for v in value),
                where,
                name,
                "a list of strings or null",
                value,
            )
        elif value is not None:
            _check(isinstance(value, str), where, name, "a string or a list of strings", value)
    candidates = raw.get("candidates")
    if candidates is not None:
        _check_candidates(candidates, where, max_candidates)
    nla_fields = _nla_fields(raw, where) if nla else {}
    fidelity = _fidelity_fields(raw, where, nla)

    suffix = current_token_suffix(raw, add_current) if research else None  # our own files add none
    tokens = raw.get("explanation_tokens")
    if tokens is None and structured is not None:
        tokens = (
            structured[:-1] if suffix is not None and structured and structured[-1] == suffix else structured
        )
    if salience is not None and tokens is not None and len(salience) != len(tokens):
        # the results pages colour explanation token i by salience i: they must pair up
        raise ImportFormatError(
            f'{where}: "token_salience" has {len(salience)} values but the explanation has {len(tokens)} '
            "tokens; they must be as many (one salience per explanation token)"
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
        **nla_fields,
        **fidelity,
    }
    # Whatever our shape cannot reproduce exactly is kept as it came, to be written back on export.
    rebuilt = research_row(row, add_current, nla, research)
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
    """The declared options (inference.options): the defaults, what the rows show was computed, the
    research format's top-level k, temperature and seed, then the file's own options where each is a value
    of the option's type (bounds are the engine's to enforce on new work, not on what was computed)."""
    given = metadata.get("options") if isinstance(metadata.get("options"), dict) else {}
    options = AnalysisOptions().to_dict()
    shown = {
        "salience": "token_salience",
        "kl": "kl",
        "logit_lens": "logit_lens_top",
        "keep_candidates": "candidates",
    }
    for name, column in shown.items():
        options[name] = any(r[column] is not None for r in rows)
    for key in ("best_of_k", "temperature", "seed"):
        if _is_number(metadata.get(key)):
            options[key] = metadata[key]
    for opt in options_of(AnalysisOptions):
        if opt.name in given:
            try:
                value = opt.check(given[opt.name], limits=None)
            except OptionError:
                continue
            options[opt.name] = list(value) if isinstance(value, tuple) else value
    return options


def _input_chars(given: dict[str, Any]) -> int:
    if "messages" in given:
        return sum(len(m["content"]) for m in given["messages"])
    return len(given["text"])


def parse_import(
    content: bytes,
    filename: str = "upload.json",
    *,
    max_bytes: int = DEFAULT_MAX_IMPORT_BYTES,
    max_transcripts: int = DEFAULT_MAX_TRANSCRIPTS,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_total_rows: int = DEFAULT_MAX_TOTAL_ROWS,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> list[ImportedTranscript]:
    """Read a research-site JSON / JSONL file (one or several transcripts). Raises ImportFormatError.
    `max_rows` bounds each transcript (an analysis has one row per token), `max_total_rows` the file."""
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
    values = _documents(text, where, max_transcripts)
    if not values:
        raise ImportFormatError(f"{where} is empty")
    found = _transcripts(values, where)
    if len(found) > max_transcripts:
        raise ImportFormatError(
            f"{where} holds {len(found)} transcripts; the limit is {max_transcripts} per file"
        )
    total = sum(len(raw_rows) for _, raw_rows, _ in found)
    if total > max_total_rows:
        raise ImportFormatError(
            f"{where} holds {total:,} rows in all; the limit is {max_total_rows:,} rows per file. "
            "Split it into several files."
        )
    surrogates = _UNSTORABLE_ESCAPE.search(text) is not None
    for index, value in enumerate(values):
        _check_values(value, f"{where}, document {index + 1}" if len(values) > 1 else where, surrogates)
    transcripts = []
    for metadata, raw_rows, here in found:
        if not raw_rows:
            raise ImportFormatError(f'{here}: "data" has no rows')
        if len(raw_rows) > max_rows:
            # refused, not cut: a transcript is imported whole or not at all
            raise ImportFormatError(
                f"{here}: {len(raw_rows):,} rows; the limit is {max_rows:,} rows per transcript (one row per "
                f"token, and an analysis has at most {max_rows:,} tokens)"
            )
        for j, raw in enumerate(raw_rows):
            _check(isinstance(raw, dict), f"{here}, row {j + 1}", "row", "an object", raw)
        add_current = _detect_add_current(metadata, raw_rows)
        nla = is_nla(metadata, raw_rows)
        research = metadata.get("research_shape") is not False  # the research site's files, our older ones
        rows, seen = [], set()
        for j, raw in enumerate(raw_rows):
            row = _our_row(raw, f"{here}, row {j + 1}", add_current, max_candidates, nla, research)
            if row["position"] in seen:
                raise ImportFormatError(f"{here}, row {j + 1}: position {row['position']} appears twice")
            seen.add(row["position"])
            rows.append(row)
        rows.sort(key=lambda r: r["position"])
        given = _input_from(metadata, rows)
        if _input_chars(given) > max_text_chars:
            raise ImportFormatError(
                f"{here}: the input has {_input_chars(given):,} characters; the limit is {max_text_chars:,}"
            )
        # "cached" marks a copy answered from the result cache, which the daily quota does not count: an
        # imported file does not get to say so.
        engine_meta = {k: v for k, v in metadata.items() if k not in ENVELOPE_KEYS and k != "cached"}
        engine_meta["add_current_token"] = add_current
        if nla:  # a file from elsewhere may say so by its rows alone: the pages read the kind
            engine_meta["kind"] = "nla"
        lens_id = str(
            metadata.get("lens_id") or metadata.get("model_id") or metadata.get("model_name") or "imported"
        )[:100]
        timings = metadata.get("timings") if isinstance(metadata.get("timings"), dict) else {}
        transcripts.append(
            ImportedTranscript(
                lens_id=lens_id,
                input=given,
                options=_options_from(metadata, rows),
                metadata=engine_meta,
                timings=timings,
                rows=rows,
            )
        )
    return transcripts
