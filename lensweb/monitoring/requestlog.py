"""The structured request log. `record(...)` writes one entry; the middleware records every state-changing
request to the submit endpoints and the API made by a logged-in user or a valid API key; `note(...)` lets
a view or service add what only it knows (a refusal's reason code, the token count) to the request being
recorded. Requests refused for want of a login or a valid key are counted for /metrics instead
(counters.py): whoever sends them cannot make the table grow.

What is stored: who (user, which API key row), what (method, path, kind, lens, whitelisted options), how
big (characters and tokens: the text itself is never stored), outcome (status, reason code), timings.
What never is: the text, API keys, passwords, the Authorization header, cookies, session ids.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import threading
import time
from dataclasses import fields as dataclass_fields

from django.conf import settings
from django.db import DatabaseError
from django.urls import NoReverseMatch, reverse

from inference.limits import DEFAULT_LIMITS
from inference.types import AnalysisOptions, GenerationOptions

from . import counters, retention
from .models import RequestLogEntry

log = logging.getLogger("lensweb.requests")

Client, Outcome = RequestLogEntry.Client, RequestLogEntry.Outcome
LOGGED_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# Options are copied only under these names, and only scalar values: nothing else of a body is kept.
OPTION_NAMES = frozenset(
    {f.name for f in dataclass_fields(AnalysisOptions)}
    | {f.name for f in dataclass_fields(GenerationOptions)}
    | {"input_format"}
)
MAX_OPTION_STRING = 100
MAX_OPTION_ITEMS = DEFAULT_LIMITS.max_chosen_positions
# retention.purge_routine runs at most this often per process, from record(); `manage.py purge` on demand.
PURGE_EVERY_SECONDS = 3600
NOTE_FIELDS = frozenset(
    {"outcome", "reason", "text_chars", "text_tokens", "lens_id", "options", "job_id", "timings"}
)

# The draft entry of the request being handled (set by the middleware, filled by note() and the job
# signals, written when the response is out of the view).
CURRENT: contextvars.ContextVar[dict | None] = contextvars.ContextVar("lensweb_request_log", default=None)

_purge_lock = threading.Lock()
_last_purge: float | None = None


# --- writing ----------------------------------------------------------------------------------------------


def storable(value, limit: int) -> str:
    """A string any database takes, cut to `limit`: a lone surrogate (valid in JSON, "\\ud800") or NUL (which
    PostgreSQL refuses) becomes U+FFFD, so that what a client sent cannot make the entry fail to save."""
    value = str(value or "")[:limit]
    if value.isascii() and "\x00" not in value:
        return value
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace").replace("\x00", "\ufffd")


def clean_options(options) -> dict:
    """The known option names with scalar values (or short lists of whole numbers); the rest is dropped."""
    if not isinstance(options, dict):
        return {}
    clean = {}
    for name, value in options.items():
        if name not in OPTION_NAMES:
            continue
        if isinstance(value, str):
            value = storable(value, MAX_OPTION_STRING)
        elif isinstance(value, float) and not math.isfinite(value):
            value = str(value)  # NaN and Infinity are no JSON: the column would refuse the entry
        elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            value = storable(value, MAX_OPTION_STRING)  # 4000 digits are for the view to refuse, not to keep
        elif isinstance(value, list):  # `positions`: kept while it is a short list of small whole numbers
            if len(value) > MAX_OPTION_ITEMS or not all(
                isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**31 for v in value
            ):
                continue
        elif not (value is None or isinstance(value, bool | int | float)):
            continue
        clean[name] = value
    return clean


def record(
    *,
    client: str,
    method: str,
    endpoint: str,
    kind: str,
    outcome: str,
    user=None,
    api_key=None,
    status_code: int | None = None,
    reason: str = "",
    text_chars: int | None = None,
    text_tokens: int | None = None,
    lens_id: str = "",
    options: dict | None = None,
    job_id: int | None = None,
    duration_ms: float | None = None,
    timings: dict | None = None,
) -> RequestLogEntry:
    """Write one entry and a structured log line (the same fields). Sizes only: pass no text."""
    authenticated = user is not None and getattr(user, "is_authenticated", False)
    entry = RequestLogEntry.objects.create(
        user=user if authenticated else None,
        username=storable(user.get_username(), 150) if authenticated else "",
        api_key=api_key,
        client=client,
        method=storable(method, 10),
        endpoint=storable(endpoint, 200),
        kind=storable(kind, 60),
        status_code=status_code,
        outcome=outcome,
        reason=storable(reason, 100),
        text_chars=text_chars,
        text_tokens=text_tokens,
        lens_id=storable(lens_id, 100),
        options=clean_options(options),
        job_id=job_id,
        duration_ms=None if duration_ms is None else round(duration_ms, 3),
        timings=timings or {},
    )
    # One line per entry, whatever a field holds: JSON with ensure_ascii escapes newlines, every control
    # character and all non-ASCII (U+2028 too), so no field can end the line and forge another.
    log.info("request %s", json.dumps(entry_fields(entry), default=str, sort_keys=True, ensure_ascii=True))
    maybe_purge()
    return entry


def entry_fields(entry: RequestLogEntry) -> dict:
    return {
        "user": entry.user_id,
        "username": entry.username,
        "api_key": entry.api_key_id,
        "client": entry.client,
        "method": entry.method,
        "endpoint": entry.endpoint,
        "kind": entry.kind,
        "status": entry.status_code,
        "outcome": entry.outcome,
        "reason": entry.reason,
        "chars": entry.text_chars,
        "tokens": entry.text_tokens,
        "lens": entry.lens_id,
        "options": entry.options,
        "job": entry.job_id,
        "ms": entry.duration_ms,
    }


def note(**facts) -> None:
    """Add what a view or service knows to the request being recorded (no-op outside one).
    E.g. `note(outcome="refused", reason="queue_full")` or `note(text_tokens=total, lens_id=spec.id)`."""
    draft = CURRENT.get()
    unknown = set(facts) - NOTE_FIELDS
    if unknown:
        raise TypeError(f"note() takes {', '.join(sorted(NOTE_FIELDS))}; not {', '.join(sorted(unknown))}")
    if draft is not None:
        draft["noted"].update(facts)


def on_request_noted(sender, signal=None, **facts) -> None:
    note(**facts)


def on_socket_request(sender, signal=None, **fields) -> None:
    record(**fields)


def job_created(sender, instance, created, **kwargs) -> None:
    """post_save of Analysis / Generation: the job this request made (its id, lens, options, positions)."""
    draft = CURRENT.get()
    if not created or draft is None:
        return
    draft["job"] = {
        "job_id": instance.pk,
        "lens_id": instance.lens_id,
        "options": instance.options,
        "text_tokens": getattr(instance, "progress_total", None) or None,
    }


# --- retention ---------------------------------------------------------------------------------------------


def maybe_purge() -> None:
    """retention.purge_routine (request log, expired sessions, old worker records), at most hourly."""
    global _last_purge
    now = time.monotonic()
    with _purge_lock:
        if _last_purge is not None and now - _last_purge < PURGE_EVERY_SECONDS:
            return
        _last_purge = now
    try:
        purged = retention.purge_routine()
    except DatabaseError:
        log.exception("retention purge failed; `manage.py purge` does it too")
        return
    if purged.request_log or purged.sessions or purged.workers:
        log.info(
            "retention: %d request log entries, %s expired sessions, %d old worker records purged",
            purged.request_log, purged.sessions or 0, purged.workers,
        )  # fmt: skip


# --- what the middleware reads from a request ------------------------------------------------------------


_submit_paths: dict[str, str] | None = None


def submit_paths() -> dict[str, str]:
    """{path: kind} of the endpoints whose body holds a text to count."""
    global _submit_paths
    if _submit_paths is None:
        paths = {}
        for name, kind in (("analyses:submit", "analysis"), ("analyses:generate", "generation"),
                           ("api:analyses", "analysis"), ("api:generations", "generation")):  # fmt: skip
            try:
                paths[reverse(name)] = kind
            except NoReverseMatch:
                continue
        _submit_paths = paths
    return _submit_paths


def is_logged(request) -> bool:
    if request.method not in LOGGED_METHODS:
        return False
    return any(request.path_info.startswith(prefix) for prefix in settings.LENSWEB_REQUEST_LOG_PREFIXES)


def client_of(request) -> str:
    api = settings.LENSWEB_REQUEST_LOG_API_PREFIX
    return Client.API if request.path_info.startswith(api) else Client.BROWSER


def _chars(text, messages) -> int | None:
    if isinstance(text, str):
        return len(text)
    if isinstance(messages, list):
        return sum(
            len(m["content"]) for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)
        )
    return None


def read_submission(request, client: str) -> dict:
    """Size, lens and options of a submission, read before the view (which reads the body again).
    A body over the API's own size limit is not read here: the view refuses it (413)."""
    if request.path_info not in submit_paths():
        return {}
    try:
        if client == Client.BROWSER:
            data = request.POST
            # The generation form's fields carry a prefix: the analysis form's travel in the same request.
            prefix = "gen-" if submit_paths()[request.path_info] == "generation" else ""
            options = {name: data.get(prefix + name) for name in OPTION_NAMES if prefix + name in data}
            if prefix and data.get("gen-mode") == "chat":
                chars = sum(len(content) for content in data.getlist("gen-content"))
            else:
                chars = _chars(data.get(prefix + ("prompt" if prefix else "text")), None)
            return {"text_chars": chars, "lens_id": data.get(prefix + "lens") or "", "options": options}
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if not 0 < declared <= settings.LENSWEB_API_MAX_BODY_BYTES:
            return {}
        body = json.loads(request.body)
    except Exception:  # a malformed upload: the view says what is wrong with it; the log needs no size
        log.debug("request log: could not read the submission's size", exc_info=True)
        return {}
    if not isinstance(body, dict):
        return {}
    lens = body.get("lens")
    return {
        "text_chars": _chars(body.get("text"), body.get("messages")),
        "lens_id": lens if isinstance(lens, str) else "",
        "options": body.get("options") if isinstance(body.get("options"), dict) else {},
    }


def start(request) -> dict | None:
    """The draft entry of a request to log, or None for one not logged."""
    if not is_logged(request):
        return None
    client = client_of(request)
    return {
        "started": time.monotonic(),
        "client": client,
        "submission": read_submission(request, client),
        "noted": {},
        "job": None,
    }


def _error_code(response) -> str:
    """The API's `{"error": {"code": ...}}`, if that is what the response is."""
    if getattr(response, "streaming", False) or "json" not in response.get("Content-Type", ""):
        return ""
    try:
        code = json.loads(response.content).get("error", {}).get("code", "")
    except (ValueError, AttributeError):
        return ""
    return code if isinstance(code, str) else ""


def _kind(request) -> str:
    match = getattr(request, "resolver_match", None)
    view = match.view_name if match else ""
    if request.path_info in submit_paths():
        return submit_paths()[request.path_info]
    if request.method == "DELETE" and view in ("api:analysis", "api:generation"):
        return "cancel"
    if view == "analyses:cancel":
        return "cancel"
    return (view.split(":")[-1] if view else "unknown") or "unknown"


def is_authenticated(request, client: str) -> bool:
    """API: a valid key (a session cookie beside a bad key does not count); browser: a logged-in user."""
    if client == Client.API:
        return getattr(request, "api_key", None) is not None
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated)


def refused_unauthenticated_api_call(request, response) -> bool:
    """An API request the log does not record (a read) turned away for want of a valid key: a 401, or the
    429 of the limiter of failed authentications. Reads no session: safe on the event loop."""
    return (
        client_of(request) == Client.API
        and getattr(request, "api_key", None) is None
        and response.status_code in (401, 429)
    )


def count_unauthenticated(request) -> None:
    """Count a refusal the log does not record (a read) for /metrics."""
    counters.count_unauthenticated(client_of(request), "read")


def _outcome(request, response, draft, client, kind) -> tuple[str, str]:
    status = response.status_code  # (a redirect to the login page is not recorded: finish counts it)
    if status >= 400:
        reason = _error_code(response) or getattr(response, "reason_phrase", "") or str(status)
        return Outcome.REFUSED, reason.lower().replace(" ", "_")
    if client == Client.BROWSER and kind in ("analysis", "generation") and draft["job"] is None:
        # The form answers 200 (htmx swaps only 2xx) with its errors; no job made means refused.
        return Outcome.REFUSED, "form_error"
    return Outcome.ACCEPTED, ""


def finish(request, response, draft: dict) -> RequestLogEntry | None:
    """Write the entry of a request the middleware started, if someone authenticated made it (else count
    it). Never raises: the log must not break a request."""
    try:
        elapsed_ms = (time.monotonic() - draft["started"]) * 1000
        client = draft["client"]
        kind = _kind(request)
        if not is_authenticated(request, client):
            counters.count_unauthenticated(client, kind)
            return None
        outcome, reason = _outcome(request, response, draft, client, kind)
        facts = {**draft["submission"], **{k: v for k, v in (draft["job"] or {}).items() if v is not None}}
        facts.update(draft["noted"])
        match = getattr(request, "resolver_match", None)
        if "job_id" not in facts and match is not None:  # a cancel or another action on one job
            ids = [v for k, v in match.kwargs.items() if k in ("job_id", "analysis_id", "generation_id")]
            facts["job_id"] = ids[0] if ids else None
        user = getattr(request, "user", None)
        return record(
            client=client,
            method=request.method,
            endpoint=request.path_info,
            kind=kind,
            outcome=facts.pop("outcome", outcome),
            reason=facts.pop("reason", reason),
            user=user,
            api_key=getattr(request, "api_key", None),
            status_code=response.status_code,
            duration_ms=elapsed_ms,
            **facts,
        )
    except Exception:
        # %r: a path may hold a newline (%0A), which must not start a line of its own
        log.exception("could not write the request log entry of %r %r", request.method, request.path_info)
        return None
