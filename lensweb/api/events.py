"""GET /api/v1/analyses/{id}/events: an analysis as Server-Sent Events, for programs.

The database row is the job of record; the owner's channel-layer group (the one the browser's socket
joins) only rings a doorbell: on a message about this analysis the stream reads the new rows and the status
from the database, and it reads them every few seconds anyway, since group messages are at-most-once.

Each stream holds one of its API key's slots in the shared cache (Redis when configured, so every process
counts the same streams). A slot is a cache key of its own with a TTL a little longer than the stream's
time bound: released in the generator's `finally`, and expiring by itself if a process dies first (or if
the client leaves before the response starts, so that the generator never runs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import caches
from django.core.serializers.json import DjangoJSONEncoder
from django.http import StreamingHttpResponse
from ninja import Query, Router

from lensweb.accounts.keys import still_valid
from lensweb.analyses import services as analyses
from lensweb.analyses.models import Analysis, AnalysisRow
from lensweb.analyses.notify import user_group

from . import schemas as s
from . import serializers
from .errors import ApiError, bad_request, not_found

log = logging.getLogger(__name__)

router = Router()

# Defaults of the settings read at request time (getattr: the settings module need not name them).
MAX_SECONDS = 600  # LENSWEB_API_EVENTS_MAX_SECONDS: a stream ends after this long; the client resumes
PER_KEY = 4  # LENSWEB_API_EVENTS_PER_KEY: open streams per API key (0: no bound)
POLL_SECONDS = 5.0  # LENSWEB_API_EVENTS_POLL_SECONDS: read the database this often without a doorbell
KEEPALIVE_SECONDS = 15.0  # LENSWEB_API_EVENTS_KEEPALIVE_SECONDS: a comment after this long without a write
# LENSWEB_API_EVENTS_RECHECK_SECONDS: a revoked key or a deactivated user ends its streams within this long.
RECHECK_SECONDS = 5.0

RECONNECT_MS = 2000  # the `retry:` a client's EventSource waits before reconnecting
ROWS_PER_EVENT = 100  # rows per `rows` event: a finished job's thousands of rows are not one read
SLOT_MARGIN = 60  # seconds a slot outlives its stream's time bound (the TTL safety net)
SLOT_RETRY_AFTER = 5  # Retry-After of a refused stream: another of the key's streams may end any moment
FINAL_EVENTS = {
    Analysis.Status.DONE: "done",
    Analysis.Status.FAILED: "failed",
    Analysis.Status.CANCELLED: "cancelled",
}
# Group messages that may concern a job without naming it: the queue moved.
QUEUE_MESSAGES = {"analysis.queue"}
POSITION = re.compile(r"-?\d{1,10}")
MAX_POSITION = 2**31 - 1


def _setting(name: str, default):
    return getattr(settings, name, default)


# --- the stream's slot --------------------------------------------------------------------------------


def _slots_cache():
    # The limiter's cache: Redis (shared by every process) when configured, else this process' memory.
    return caches[settings.RATELIMIT_USE_CACHE]


def acquire_slot(key_id: int) -> tuple[str, str] | None:
    """(cache key, token) of a free slot of this API key, now ours; None when all are taken. cache.add is
    atomic (SET NX in Redis), so two requests racing for the last slot cannot both win."""
    limit = int(_setting("LENSWEB_API_EVENTS_PER_KEY", PER_KEY))
    if limit <= 0:
        return ("", "")
    cache = _slots_cache()
    token = secrets.token_hex(8)
    ttl = int(float(_setting("LENSWEB_API_EVENTS_MAX_SECONDS", MAX_SECONDS))) + SLOT_MARGIN
    for index in range(limit):
        name = f"lensweb:api-events:{key_id}:{index}"
        if cache.add(name, token, ttl):
            return name, token
    return None


def release_slot(slot: tuple[str, str]) -> None:
    name, token = slot
    if not name:
        return
    cache = _slots_cache()
    # Only our own: had the slot expired and been taken by another stream, that one keeps it.
    if cache.get(name) == token:
        cache.delete(name)


# --- reading the job of record ------------------------------------------------------------------------


@dataclass
class Snapshot:
    status: dict  # the `status` event's data
    final: dict | None  # the final event's data (the Analysis without rows) once the job is final
    event: str | None  # done / failed / cancelled


def read_job(request, job_id: int) -> Snapshot | None:
    """The job's status now (None if it was deleted meanwhile). Read BEFORE its rows: a job seen final has
    all its rows committed, so the rows read next are complete."""
    job = Analysis.objects.filter(pk=job_id).first()
    if job is None:
        return None
    status = {
        "id": job.pk,
        "status": job.status,
        **serializers.queue_fields(job),
        "progress": {"done": job.progress_done, "total": job.progress_total},
    }
    event = FINAL_EVENTS.get(job.status)
    final = None
    if event:
        final = as_answered(s.Analysis, serializers.analysis_json(request, job, include_rows=False))
        final.pop("rows", None)
    return Snapshot(status, final, event)


def read_rows(job_id: int, after: int) -> list[tuple[int, dict]]:
    rows = AnalysisRow.objects.filter(analysis_id=job_id, position__gt=after).order_by("position")
    return [
        # as GET sends a row: the fields it has (one family's are absent from another's rows, not null)
        (position, s.AnalysisRow.model_validate(data).model_dump(exclude_unset=True))
        for position, data in rows.values_list("position", "data")[:ROWS_PER_EVENT]
    ]


def as_answered(schema, data: dict) -> dict:
    """`data` as the JSON operations answer it: through its response schema, as ninja does, so that the
    same fields (defaults included) and the same datetime format reach a stream as reach GET."""
    return schema.model_validate(data).model_dump()


# --- the wire format ----------------------------------------------------------------------------------


def sse(event: str, data, event_id: int | None = None) -> str:
    # json.dumps escapes newlines inside strings: the data is always one `data:` line.
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, cls=DjangoJSONEncoder)}\n\n"


# --- the doorbell -------------------------------------------------------------------------------------


class Doorbell:
    """The owner's group on the channel layer, joined for this stream. If the layer fails (Redis away),
    the stream goes on polling the database."""

    def __init__(self, group: str, job_id: int):
        self.group, self.job_id = group, job_id
        self.layer = get_channel_layer()
        self.channel = None

    async def join(self) -> None:
        if self.layer is None:
            return
        try:
            self.channel = await self.layer.new_channel()
            await self.layer.group_add(self.group, self.channel)
        except Exception:
            log.warning("event stream: cannot join %s; polling the database only", self.group, exc_info=True)
            self.channel = None

    async def leave(self) -> None:
        if self.channel is None:
            return
        try:
            await self.layer.group_discard(self.group, self.channel)
        except Exception:
            log.warning("event stream: cannot leave %s", self.group, exc_info=True)
        self.channel = None

    def concerns_us(self, message: dict) -> bool:
        kind = message.get("type", "")
        # Generations are another table: their ids may equal ours.
        return kind in QUEUE_MESSAGES or (kind.startswith("analysis.") and message.get("job") == self.job_id)

    async def wait(self, seconds: float) -> None:
        """Until a message about this analysis arrives, or `seconds` pass."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            if self.channel is None:
                await asyncio.sleep(left)
                return
            try:
                message = await asyncio.wait_for(self.layer.receive(self.channel), left)
            except TimeoutError:
                return
            except Exception:
                log.warning(
                    "event stream: the channel layer failed; polling the database only", exc_info=True
                )
                self.channel = None  # a broken layer: no discard to attempt either
                continue
            if self.concerns_us(message):
                return


async def stream(request, job: Analysis, after: int, slot: tuple[str, str]):
    """The events of one analysis, from position `after` on, until its final event or the time bound."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + float(_setting("LENSWEB_API_EVENTS_MAX_SECONDS", MAX_SECONDS))
    poll = float(_setting("LENSWEB_API_EVENTS_POLL_SECONDS", POLL_SECONDS))
    keepalive = float(_setting("LENSWEB_API_EVENTS_KEEPALIVE_SECONDS", KEEPALIVE_SECONDS))
    recheck = float(_setting("LENSWEB_API_EVENTS_RECHECK_SECONDS", RECHECK_SECONDS))
    # The owner's group: that is where the worker's messages about this job go (a staff reader too).
    doorbell = Doorbell(user_group(job.owner_id), job.pk)
    try:
        yield f"retry: {RECONNECT_MS}\n\n"
        last_write = loop.time()
        # Join before the first read: whatever happens after the read rings the bell.
        await doorbell.join()
        last_status = None
        checked = loop.time()
        while True:
            if loop.time() - checked >= recheck:
                checked = loop.time()
                if not await database_sync_to_async(still_valid)(request.api_key.pk):
                    yield ": the API key was revoked or its user deactivated\n\n"
                    return
            snapshot = await database_sync_to_async(read_job)(request, job.pk)
            if snapshot is None:  # deleted meanwhile: nothing more will come
                return
            if snapshot.status != last_status:
                last_status = snapshot.status
                yield sse("status", snapshot.status)
                last_write = loop.time()
            while rows := await database_sync_to_async(read_rows)(job.pk, after):
                after = rows[-1][0]
                yield sse("rows", {"rows": [data for _, data in rows]}, event_id=after)
                last_write = loop.time()
                if len(rows) < ROWS_PER_EVENT:
                    break
            if snapshot.event:
                yield sse(snapshot.event, snapshot.final)
                return
            now = loop.time()
            if now >= deadline:
                yield ": the stream's time bound; reconnect with Last-Event-ID\n\n"
                return
            await doorbell.wait(min(poll, recheck, deadline - now, max(0.0, last_write + keepalive - now)))
            if loop.time() - last_write >= keepalive:
                yield ": keep-alive\n\n"
                last_write = loop.time()
    except Exception:  # the database away, say: end cleanly; the client resumes from its last id
        log.exception("event stream of analysis %s failed; closing it", job.pk)
    finally:
        # Runs on the client's disconnect too: the server cancels the task (CancelledError at our await)
        # or closes the generator; either way the group is left and the slot given back.
        await doorbell.leave()
        await sync_to_async(release_slot, thread_sensitive=False)(slot)


# --- the operation ------------------------------------------------------------------------------------


def _position(value: str | None, name: str) -> int | None:
    if value is None or not value.strip():
        return None
    if not POSITION.fullmatch(value.strip()) or not -1 <= int(value) <= MAX_POSITION:
        raise bad_request(f"{name} must be a row position (an integer from -1)", field=name)
    return int(value)


def _event(name: str, data: dict, *, with_id: bool = False) -> dict:
    """One event of the stream, as an OpenAPI 3.1 document describes it (and Schemathesis checks it)."""
    fields = {
        "event": {"const": name},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
    }
    if with_id:
        fields["id"] = {"type": "string", "pattern": "^-?[0-9]+$", "description": "the last position sent"}
    return {"type": "object", "title": name, "required": list(fields), "properties": fields}


_ANALYSIS = {"$ref": "#/components/schemas/Analysis", "description": "the Analysis without rows"}
EVENT_SCHEMAS = [
    _event(
        "status",
        {
            "type": "object",
            "required": ["id", "status", "queue_position", "status_detail", "progress"],
            "properties": {
                "id": {"type": "integer"},
                "status": {"type": "string", "enum": list(Analysis.Status.values)},
                "queue_position": {"type": ["integer", "null"], "minimum": 1},
                "status_detail": {"type": ["string", "null"]},
                "progress": {
                    "type": "object",
                    "required": ["done", "total"],
                    "properties": {"done": {"type": "integer"}, "total": {"type": "integer"}},
                },
            },
        },
    ),
    _event(
        "rows",
        {
            "type": "object",
            "required": ["rows"],
            "properties": {"rows": {"type": "array", "items": {"$ref": "#/components/schemas/AnalysisRow"}}},
        },
        with_id=True,
    ),
    *(_event(name, _ANALYSIS) for name in FINAL_EVENTS.values()),
]

EVENTS_DOC = {
    "parameters": [
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "description": "resume: only rows with a greater position (the `id` of the last `rows` event "
            "received; an EventSource sends it on reconnecting). Wins over `after`",
            "schema": {"type": "integer", "minimum": -1},
        }
    ],
    "responses": {
        200: {
            "description": "Server-Sent Events. First `retry: 2000`, then `event: status` (data: `{id, status, "
            "queue_position, status_detail, progress: {done, total}}`), then `event: rows` (`id:` the last "
            "position in the batch; data: `{rows: [row, …]}`, rows as GET analyses/{id} gives them), another "
            "`status` whenever status, progress, queue position or status detail change, and a final "
            "`event: done`, `failed` or "
            "`cancelled` (data: the Analysis without rows), after which the server closes the stream. "
            "Comment lines (`: keep-alive`) come every 15 s of silence. A stream also closes without a final "
            "event after a server time bound: reconnect with `Last-Event-ID`.",
            "content": {
                # Before OpenAPI 3.2's itemSchema, an event stream's `schema` describes one event: its
                # `event` names which, its `data` is JSON of the schema that event carries.
                "text/event-stream": {"schema": {"oneOf": EVENT_SCHEMAS}}
            },
        },
        # Integer keys, as ninja's own: the document merges these into its entries for 200 and 429.
        429: {
            "description": "too many requests (`rate_limited`) or too many open streams for this key "
            "(`too_many_streams`)",
        },
    },
}


@router.get(
    "/analyses/{id:analysis_id}/events",
    url_name="analysis_events",
    operation_id="streamAnalysisEvents",
    summary="An analysis as it runs, as Server-Sent Events: status, rows, and the final state",
    description="Owner, or staff (read-only). Each `rows` event carries the new rows; resume after a "
    "disconnect with `Last-Event-ID` (or `?after=`). At most a few open streams per API key (429 "
    "`too_many_streams`).",
    response={200: None, 400: s.Error, 401: s.Error, 404: s.Error, 429: s.Error, 500: s.Error},
    openapi_extra=EVENTS_DOC,
    tags=["analyses"],
)
async def stream_analysis_events(
    request,
    analysis_id: int,
    after: int | None = Query(
        None, ge=-1, le=MAX_POSITION, description="only rows with a greater position (`Last-Event-ID` wins)"
    ),
):
    # An EventSource reconnects to the same URL (its `after`) with the last id it saw: that is the later.
    header = _position(request.headers.get("Last-Event-ID"), "Last-Event-ID")
    cursor = header if header is not None else after
    try:
        job = await database_sync_to_async(analyses.get_analysis_for)(request.user, analysis_id)
    except Analysis.DoesNotExist:
        raise not_found("analysis") from None
    slot = await sync_to_async(acquire_slot, thread_sensitive=False)(request.api_key.pk)
    if slot is None:
        raise ApiError(
            429,
            "too_many_streams",
            f"this API key has {_setting('LENSWEB_API_EVENTS_PER_KEY', PER_KEY)} event streams open already; "
            "close one, or poll GET analyses/{id}?after=",
            retry_after=SLOT_RETRY_AFTER,
        )
    response = StreamingHttpResponse(
        stream(request, job, -1 if cursor is None else cursor, slot), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
