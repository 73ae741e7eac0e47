"""GET /api/v1/analyses/<id>/events: Server-Sent Events fed by the owner's group and read from the database.

Streams are read with Django's AsyncClient (the view's generator runs in the test's event loop, beside a real
LensWorker), or through the ASGI application itself where the test needs the client to go away."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from lensweb.accounts import keys
from lensweb.analyses import services
from lensweb.analyses.models import Analysis
from lensweb.analyses.notify import user_group
from lensweb.analyses.worker import LensWorker
from lensweb.api import events
from lensweb.asgi import application
from tests.conftest import scaled, token_ids
from tests.web.conftest import fast_worker, wait_for, warm_lens  # noqa: F401  (fixtures)

from .conftest import check_against_openapi

pytestmark = [pytest.mark.django_db(transaction=True)]

TEXT = "one two three four five six"
NO_POLL = 3600

submit = database_sync_to_async(services.do_submit)


def url(job_id: int, query: str = "") -> str:
    return f"/api/v1/analyses/{job_id}/events{query}"


def auth(key: str, **headers) -> dict:
    return {"Authorization": f"Bearer {key}", **headers}


def parse_block(block: str) -> dict:
    """One SSE block (lines up to a blank line) as {event, data, id, retry, comments}; data is JSON."""
    event = {"event": None, "data": None, "id": None, "retry": None, "comments": []}
    data = []
    for line in block.split("\n"):
        if line.startswith(":"):
            event["comments"].append(line[1:].strip())
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field in ("event", "id", "retry"):
            event[field] = value
    if data:
        event["data"] = json.loads("\n".join(data))
    return event


class Stream:
    """The events of a streaming response, parsed as they arrive."""

    def __init__(self, response):
        self.chunks = aiter(response.streaming_content)
        self.buffer = ""
        self.ended = False

    async def next(self, timeout: float | None = None) -> dict | None:
        """The next block, or None once the server has ended the stream."""
        async with asyncio.timeout(scaled(30) if timeout is None else timeout):
            while "\n\n" not in self.buffer:
                try:
                    chunk = await anext(self.chunks)
                except StopAsyncIteration:
                    self.ended = True
                    assert not self.buffer.strip(), f"the stream ended mid-event: {self.buffer!r}"
                    return None
                self.buffer += chunk.decode()
        block, self.buffer = self.buffer.split("\n\n", 1)
        return parse_block(block)

    async def next_event(self, timeout: float | None = None) -> dict | None:
        """The next named event (comments and `retry` skipped)."""
        while (block := await self.next(timeout)) is not None:
            if block["event"]:
                return block
        return None

    async def rest(self, timeout: float | None = None) -> list[dict]:
        """Every block until the server ends the stream, within `timeout` seconds in all."""
        blocks = []
        async with asyncio.timeout(scaled(60) if timeout is None else timeout):
            while (block := await self.next(timeout=None)) is not None:
                blocks.append(block)
        return blocks


def named(blocks: list[dict]) -> list[dict]:
    return [b for b in blocks if b["event"]]


async def open_stream(async_client, job_id: int, key: str, query: str = "", **headers) -> Stream:
    response = await async_client.get(url(job_id, query), headers=auth(key, **headers))
    assert response.status_code == 200, response.content
    return Stream(response)


async def get_json(async_client, path: str, key: str) -> dict:
    response = await async_client.get(path, headers=auth(key))
    assert response.status_code == 200
    return json.loads(response.content)


async def stop(worker: LensWorker) -> None:
    worker.request_stop()
    await wait_for(worker.finished.is_set, timeout=scaled(30))


def status_of(job_id: int) -> str:
    return Analysis.objects.get(pk=job_id).status


@pytest.fixture
def doorbell_only(settings):
    """No poll and no keep-alive wake-up within the test: only the group's messages can move the stream."""
    settings.LENSWEB_API_EVENTS_POLL_SECONDS = NO_POLL
    settings.LENSWEB_API_EVENTS_KEEPALIVE_SECONDS = NO_POLL
    return settings


@pytest.fixture
def finished_job(alice, run_jobs):
    """An analysis of TEXT, run to done by the worker's own code, with one row per token."""
    job = services.do_submit(alice, None, {"text": TEXT}, {})
    run_jobs()
    job.refresh_from_db()
    assert job.status == "done" and job.rows.count() == len(token_ids(TEXT)) > 3
    return job


# --- a job as a worker runs it ----------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_worker", "warm_lens", "doorbell_only")
async def test_a_job_run_by_a_worker_streams_status_rows_then_done(
    async_client, alice, alice_key, monkeypatch
):
    monkeypatch.setenv("LENSWEB_ROWS_BUDGET", "1")  # one position per batch: several `rows` events
    job = await submit(alice, None, {"text": TEXT}, {})
    response = await async_client.get(url(job.pk), headers=auth(alice_key))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache" and response["X-Accel-Buffering"] == "no"
    stream = Stream(response)
    assert (await stream.next())["retry"] == "2000"
    first = await stream.next_event()
    assert first["event"] == "status"
    assert first["data"] == {
        "id": job.pk,
        "status": "queued",
        "queue_position": 1,
        # no worker has started yet: the job says what it waits for
        "status_detail": "position 1 in the queue; waiting for a worker that serves lens tiny: none is running "
        "now; it starts when one does",
        "progress": {"done": 0, "total": len(token_ids(TEXT))},
    }

    worker = LensWorker()
    worker.start()
    try:
        blocks = named(await stream.rest(timeout=scaled(120)))
    finally:
        await stop(worker)
    assert stream.ended

    final = blocks[-1]
    assert final["event"] == "done"
    assert [b["event"] for b in blocks[:-1]] and {b["event"] for b in blocks[:-1]} <= {"status", "rows"}
    rows_events = [b for b in blocks if b["event"] == "rows"]
    assert len(rows_events) >= 2, "the rows came in one event: not as the worker recorded them"
    streamed = [row for b in rows_events for row in b["data"]["rows"]]
    for b in rows_events:
        assert int(b["id"]) == b["data"]["rows"][-1]["position"]
    statuses = [b["data"] for b in blocks if b["event"] == "status"]
    assert "running" in [s["status"] for s in statuses]
    done_counts = [s["progress"]["done"] for s in statuses]
    assert done_counts == sorted(done_counts)

    whole = await get_json(async_client, f"/api/v1/analyses/{job.pk}", alice_key)
    assert [row["position"] for row in streamed] == list(range(len(token_ids(TEXT))))
    assert streamed == whole["rows"]
    assert final["data"] == {k: v for k, v in whole.items() if k != "rows"}
    assert final["data"]["status"] == "done" and "rows" not in final["data"]


@pytest.mark.usefixtures("doorbell_only")
async def test_a_cancelled_job_ends_with_cancelled(async_client, alice, alice_key):
    job = await submit(alice, None, {"text": TEXT}, {})
    stream = await open_stream(async_client, job.pk, alice_key)
    assert (await stream.next_event())["data"]["status"] == "queued"
    await database_sync_to_async(services.do_cancel)(alice, job.pk)
    blocks = named(await stream.rest(timeout=scaled(30)))
    # A change of status is a `status` event, then the final one
    assert [(b["event"], b["data"]["status"]) for b in blocks] == [
        ("status", "cancelled"),
        ("cancelled", "cancelled"),
    ]
    assert blocks[-1]["data"]["id"] == job.pk and blocks[-1]["data"]["cancel_requested"] is True
    assert stream.ended


async def test_a_missed_doorbell_does_not_stall_the_stream(async_client, alice, alice_key, settings):
    """A change no group message announces (written straight to the row) still comes, by the poll."""
    settings.LENSWEB_API_EVENTS_POLL_SECONDS = 0.2
    job = await submit(alice, None, {"text": TEXT}, {})
    stream = await open_stream(async_client, job.pk, alice_key)
    assert (await stream.next_event())["data"]["status"] == "queued"
    await database_sync_to_async(
        lambda: Analysis.objects.filter(pk=job.pk).update(
            status="failed", error="the lens fell over", finished_at=timezone.now()
        )
    )()
    blocks = named(await stream.rest(timeout=scaled(30)))
    assert [(b["event"], b["data"]["status"]) for b in blocks] == [("status", "failed"), ("failed", "failed")]
    assert blocks[-1]["data"]["error"] == "the lens fell over"


# --- a finished job, and resuming ---------------------------------------------------------------------------


async def test_a_finished_job_streams_its_rows_then_done_at_once(
    async_client, alice_key, finished_job, monkeypatch
):
    monkeypatch.setattr(events, "ROWS_PER_EVENT", 2)  # several `rows` events from one read
    stream = await open_stream(async_client, finished_job.pk, alice_key)
    blocks = named(await stream.rest(timeout=scaled(15)))
    assert [b["event"] for b in blocks[:1]] == ["status"] and blocks[0]["data"]["status"] == "done"
    assert blocks[-1]["event"] == "done"
    rows_events = blocks[1:-1]
    assert rows_events and all(b["event"] == "rows" for b in rows_events)
    assert all(1 <= len(b["data"]["rows"]) <= 2 for b in rows_events)
    assert [int(b["id"]) for b in rows_events] == [b["data"]["rows"][-1]["position"] for b in rows_events]
    whole = await get_json(async_client, f"/api/v1/analyses/{finished_job.pk}", alice_key)
    assert [row for b in rows_events for row in b["data"]["rows"]] == whole["rows"]
    assert blocks[-1]["data"] == {k: v for k, v in whole.items() if k != "rows"}


async def _positions(async_client, job_id, key, query="", **headers) -> tuple[list[int], str]:
    stream = await open_stream(async_client, job_id, key, query, **headers)
    blocks = named(await stream.rest(timeout=scaled(15)))
    positions = [row["position"] for b in blocks if b["event"] == "rows" for row in b["data"]["rows"]]
    return positions, blocks[-1]["event"]


async def test_resuming_gives_only_later_positions(async_client, alice_key, finished_job):
    n = len(token_ids(TEXT))
    resume = await _positions(async_client, finished_job.pk, alice_key, **{"Last-Event-ID": "2"})
    assert resume == (list(range(3, n)), "done")
    assert await _positions(async_client, finished_job.pk, alice_key, "?after=3") == (
        list(range(4, n)),
        "done",
    )
    # An EventSource reconnects to its first URL with the last id it saw: the header is the later.
    both = await _positions(async_client, finished_job.pk, alice_key, "?after=0", **{"Last-Event-ID": "4"})
    assert both == (list(range(5, n)), "done")
    past_the_end = await _positions(async_client, finished_job.pk, alice_key, **{"Last-Event-ID": str(n - 1)})
    assert past_the_end == ([], "done")


@pytest.mark.parametrize(
    ("query", "headers", "field"),
    [
        ("", {"Last-Event-ID": "abc"}, "Last-Event-ID"),
        ("", {"Last-Event-ID": "1.5"}, "Last-Event-ID"),
        ("", {"Last-Event-ID": "-2"}, "Last-Event-ID"),
        ("?after=abc", {}, "after"),
        ("?after=-2", {}, "after"),
    ],
)
async def test_a_bad_resume_position_is_refused(async_client, alice, alice_key, query, headers, field):
    job = await submit(alice, None, {"text": TEXT}, {})
    response = await async_client.get(url(job.pk, query), headers=auth(alice_key, **headers))
    check_against_openapi("GET", url(job.pk, query), response)
    body = json.loads(response.content)
    assert response.status_code == 400
    assert body["error"]["code"] == "invalid_request" and body["error"]["field"] == field


# --- who may stream -----------------------------------------------------------------------------------------


async def test_another_users_or_no_analysis_is_not_found_and_staff_may_read(
    async_client, bob_key, staff_key, finished_job
):
    for path in (url(finished_job.pk), url(finished_job.pk + 1000)):
        response = await async_client.get(path, headers=auth(bob_key))
        check_against_openapi("GET", path, response)
        assert response.status_code == 404
        assert json.loads(response.content)["error"]["code"] == "not_found"
    stream = await open_stream(async_client, finished_job.pk, staff_key)
    assert named(await stream.rest(timeout=scaled(15)))[-1]["event"] == "done"


async def test_without_a_key_401(async_client, finished_job):
    for headers in ({}, {"Authorization": "Bearer lw_nope_nope"}):
        response = await async_client.get(url(finished_job.pk), headers=headers)
        check_against_openapi("GET", url(finished_job.pk), response)
        assert response.status_code == 401 and response.has_header("WWW-Authenticate")
        assert json.loads(response.content)["error"]["code"] == "unauthenticated"


# --- bounds -------------------------------------------------------------------------------------------------


def asgi_scope(path: str, key: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {key}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def open_asgi_stream(path: str, key: str) -> ApplicationCommunicator:
    """A stream through the ASGI application, read up to its first status event (the group is joined)."""
    client = ApplicationCommunicator(application, asgi_scope(path, key))
    await client.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await client.receive_output(scaled(15))
    assert start["type"] == "http.response.start" and start["status"] == 200
    received = b""
    while b"event: status" not in received:
        received += (await client.receive_output(scaled(15)))["body"]
    return client


async def test_streams_per_key_are_bounded_and_a_disconnect_frees_its_slot(
    async_client, alice, alice_key, settings
):
    settings.LENSWEB_API_EVENTS_PER_KEY = 2
    job = await submit(alice, None, {"text": TEXT}, {})
    first = await open_asgi_stream(url(job.pk), alice_key)
    second = await open_asgi_stream(url(job.pk), alice_key)
    layer = get_channel_layer()
    group = user_group(alice.pk)
    if hasattr(layer, "groups"):  # the in-memory layer shows its members
        assert len(layer.groups.get(group, {})) == 2

    refused = await async_client.get(url(job.pk), headers=auth(alice_key))
    check_against_openapi("GET", url(job.pk), refused)
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert json.loads(refused.content)["error"]["code"] == "too_many_streams"
    # The bound is per key: another key of the same user has its own.
    _, other_key = await database_sync_to_async(keys.create_key)(alice, "second laptop")
    stream = await open_stream(async_client, job.pk, other_key)
    assert (await stream.next_event())["event"] == "status"

    # The client goes away: the server cancels the stream, whose finally leaves the group and frees the slot.
    await first.send_input({"type": "http.disconnect"})
    await first.wait(scaled(15))
    if hasattr(layer, "groups"):
        assert len(layer.groups.get(group, {})) == 2  # the second ASGI stream and the other key's
    again = await async_client.get(url(job.pk), headers=auth(alice_key))
    assert again.status_code == 200
    await second.send_input({"type": "http.disconnect"})
    await second.wait(scaled(15))


async def test_the_time_bound_ends_the_stream_without_a_final_event(async_client, alice, alice_key, settings):
    settings.LENSWEB_API_EVENTS_MAX_SECONDS = 0.6
    settings.LENSWEB_API_EVENTS_KEEPALIVE_SECONDS = 0.1
    settings.LENSWEB_API_EVENTS_PER_KEY = 1
    job = await submit(alice, None, {"text": TEXT}, {})  # no worker: it stays queued
    started = time.monotonic()
    stream = await open_stream(async_client, job.pk, alice_key)
    blocks = await stream.rest(timeout=scaled(15))
    assert time.monotonic() - started >= 0.6
    assert [b["event"] for b in named(blocks)] == ["status"]
    assert "keep-alive" in [c for b in blocks for c in b["comments"]]
    assert stream.ended
    assert await database_sync_to_async(status_of)(job.pk) == "queued"
    # It ended on its own: its slot is free again (one stream per key here).
    stream = await open_stream(async_client, job.pk, alice_key)
    assert (await stream.next_event())["data"]["status"] == "queued"


@pytest.mark.parametrize("how", ["revoked", "deactivated"])
async def test_a_revoked_key_or_a_deactivated_user_ends_the_stream(
    async_client, alice, alice_key, settings, how
):
    from lensweb.accounts.keys import authenticate_key, revoke_key

    settings.LENSWEB_API_EVENTS_RECHECK_SECONDS = 0.3
    job = await submit(alice, None, {"text": TEXT}, {})  # no worker: it stays queued, the stream stays open
    stream = await open_stream(async_client, job.pk, alice_key)
    assert (await stream.next_event())["data"]["status"] == "queued"

    def end_it():
        if how == "revoked":
            revoke_key(authenticate_key(alice_key))
        else:
            type(alice).objects.filter(pk=alice.pk).update(is_active=False)

    await database_sync_to_async(end_it)()
    blocks = await stream.rest(timeout=scaled(10))
    assert stream.ended and not named(blocks)
    assert any("revoked or its user deactivated" in c for b in blocks for c in b["comments"])
