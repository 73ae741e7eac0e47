"""The browser socket through the real ASGI stack (origin check, session auth), messages JSON-round-tripped
by the test layer as the Redis layer would. Every communicator is disconnected."""

import contextlib
import json
import re

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client

from lensweb.analyses import services
from lensweb.analyses.notify import user_group
from lensweb.analyses.worker import LensWorker
from lensweb.asgi import application

from .conftest import SLOW_TEXT, describe, job_state, scaled, token_ids, wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]

submit = database_sync_to_async(services.do_submit)


@database_sync_to_async
def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@contextlib.asynccontextmanager
async def socket(
    user=None, origin="http://testserver", cookie: str | None = None, path: str = "/ws/analyses/"
):
    """A socket of `user` (a fresh session of theirs), or of the session whose cookie value is `cookie`."""
    headers = [(b"host", b"testserver"), (b"origin", origin.encode())]
    if cookie is None and user is not None:
        cookie = await session_cookie(user)
    if cookie is not None:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    try:
        yield communicator
    finally:
        await communicator.disconnect()


async def receive_until(communicator, predicate, timeout=None):
    """Messages up to and including the first that satisfies `predicate`, each within `timeout` seconds (by
    default scaled(20); a caller's own timeout is taken as given)."""
    limit = scaled(20) if timeout is None else timeout
    messages = []
    while True:
        try:
            messages.append(await communicator.receive_from(timeout=limit))
        except TimeoutError:
            raise AssertionError(
                f"no message for {limit:.0f} s while waiting for {describe(predicate)}; "
                f"{len(messages)} came before, the last: {messages[-1][:300] if messages else None!r}"
            ) from None
        if predicate(messages[-1]):
            return messages


def row_positions(job_id, messages):
    return [int(p) for m in messages for p in re.findall(rf'id="row-{job_id}-(\d+)"', m)]


def is_final(job_id):
    return lambda m: f'id="status-{job_id}"' in m and re.search(r"badge-(done|cancelled|failed)", m)


async def stop(worker):
    worker.request_stop()
    await wait_for(worker.finished.is_set)


async def test_anonymous_socket_is_refused():
    async with socket() as communicator:
        connected, _ = await communicator.connect()
        assert not connected


async def test_wrong_origin_is_refused(alice):
    async with socket(alice, origin="http://evil.example") as communicator:
        connected, _ = await communicator.connect()
        assert not connected


async def test_connect_replays_rows_so_far_and_progress(alice):
    job = await submit(alice, None, {"text": "a b c d e"}, {})

    def half_done():
        worker = services.register_worker()
        services.claim_next_job(worker)
        services.do_record_batch(
            job.pk, worker.pk, [{"position": p, "token": f"t{p}", "mse": 1.0} for p in range(3)]
        )

    await database_sync_to_async(half_done)()
    async with socket(alice) as communicator:
        connected, _ = await communicator.connect()
        assert connected
        replay = await communicator.receive_from(timeout=scaled(10))
        assert replay.startswith('<div id="jobs">')
        assert row_positions(job.pk, [replay]) == [0, 1, 2]
        assert len(token_ids("a b c d e")) == 5
        assert "3/5 positions" in replay and "badge-running" in replay


async def test_rows_stream_in_order_one_small_fragment_per_batch(alice, fast_worker, warm_lens, monkeypatch):
    monkeypatch.setenv("LENSWEB_ROWS_BUDGET", "2")
    text = "one two three four five six seven eight"
    async with socket(alice) as communicator:
        assert (await communicator.connect())[0]
        await communicator.receive_from(timeout=scaled(10))  # the (empty) replay
        job = await submit(alice, None, {"text": text}, {"kl": True})
        worker = LensWorker()
        worker.start()
        try:
            messages = await receive_until(communicator, is_final(job.pk))
        finally:
            await stop(worker)
    assert len(token_ids(text)) == 8
    assert any('hx-swap-oob="afterbegin:#jobs"' in m and f'id="job-{job.pk}"' in m for m in messages)
    assert row_positions(job.pk, messages) == list(range(8))
    batches = [m for m in messages if f'hx-swap-oob="beforeend:#rows-{job.pk}"' in m]
    assert len(batches) == 4
    for batch in batches:
        assert f'id="job-{job.pk}"' not in batch  # never the whole card again
        assert len(row_positions(job.pk, [batch])) <= 2
        assert f'id="progress-{job.pk}"' in batch
    assert "mean mse" in messages[-1]
    done = await database_sync_to_async(job_state)(job.pk)
    assert done.status == "done" and done.metadata["summary"]["mean_mse"] > 0


async def test_reload_mid_job_replays_and_keeps_streaming_without_duplicates(
    alice, fast_worker, warm_lens, monkeypatch, settings
):
    monkeypatch.setenv("LENSWEB_ROWS_BUDGET", "1")
    job = await submit(alice, None, {"text": SLOW_TEXT}, {})
    worker = LensWorker()
    try:
        async with socket(alice) as first:
            assert (await first.connect())[0]
            worker.start()
            seen = await receive_until(first, lambda m: len(row_positions(job.pk, [m])) and "beforeend" in m)
            await receive_until(first, lambda m: "beforeend" in m)
        async with socket(alice) as second:
            assert (await second.connect())[0]
            replay = await second.receive_from(timeout=scaled(10))
            replayed = row_positions(job.pk, [replay])
            assert len(replayed) >= 2 and replayed == list(range(len(replayed)))
            rest = await receive_until(second, is_final(job.pk), timeout=scaled(60))
    finally:
        await stop(worker)
    assert seen
    # The card shows the first LENSWEB_LIVE_CARD_ROWS rows, each once; the rest are counted, not appended.
    total = len(token_ids(SLOW_TEXT))
    assert total > settings.LENSWEB_LIVE_CARD_ROWS
    assert replayed + row_positions(job.pk, rest) == list(range(settings.LENSWEB_LIVE_CARD_ROWS))
    more = [m for m in rest if f'id="more-{job.pk}"' in m]
    assert f"{total - settings.LENSWEB_LIVE_CARD_ROWS} more rows on the results page" in more[-1]
    assert f"{total}/{total} positions" in "".join(rest)


async def test_queue_positions_follow_the_queue(alice, bob):
    async with socket(alice) as communicator:
        assert (await communicator.connect())[0]
        await communicator.receive_from(timeout=scaled(10))
        mine = await submit(alice, None, {"text": "x"}, {})
        messages = await receive_until(communicator, lambda m: f'id="queue-{mine.pk}"' in m and "queue" in m)
        assert "Position <strong>1</strong>" in messages[-1]
        await submit(bob, None, {"text": "y"}, {})
        await database_sync_to_async(services.do_cancel)(alice, mine.pk)
        await receive_until(communicator, is_final(mine.pk))


async def test_queue_lines_go_only_to_pages_that_show_their_card(alice):
    async with socket(alice) as communicator:
        assert (await communicator.connect())[0]
        await communicator.receive_from(timeout=scaled(10))
        shown = await submit(alice, None, {"text": "x"}, {})
        await receive_until(communicator, lambda m: f'id="queue-{shown.pk}"' in m)
        elsewhere = [["analysis", shown.pk + 1000, '<p id="queue-0">not on this page</p>']]
        layer = get_channel_layer()
        await layer.group_send(user_group(alice.pk), {"type": "analysis.queue", "lines": elsewhere})
        await layer.group_send(
            user_group(alice.pk),
            {
                "type": "analysis.queue",
                "lines": [["analysis", shown.pk, f'<p id="queue-{shown.pk}">moved</p>']],
            },
        )
        messages = await receive_until(communicator, lambda m: "moved" in m)
        assert not any("not on this page" in m for m in messages)


async def test_cancel_over_the_socket_checks_ownership(alice, bob):
    job = await submit(alice, None, {"text": "x y"}, {})
    async with socket(bob) as intruder:
        assert (await intruder.connect())[0]
        await intruder.receive_from(timeout=scaled(10))
        await intruder.send_to(text_data=json.dumps({"action": "cancel", "job": job.pk}))
        answer = await intruder.receive_from(timeout=scaled(10))
        assert f"there is no analysis #{job.pk} of yours" in answer
    assert (await database_sync_to_async(job_state)(job.pk)).status == "queued"
    async with socket(alice) as owner:
        assert (await owner.connect())[0]
        await owner.receive_from(timeout=scaled(10))
        # what the htmx ws extension sends for the card's cancel form
        await owner.send_to(
            text_data=json.dumps({"action": "cancel", "job": str(job.pk), "HEADERS": {"HX-Request": "true"}})
        )
        await receive_until(owner, is_final(job.pk))
    assert (await database_sync_to_async(job_state)(job.pk)).status == "cancelled"


async def test_bad_and_oversized_messages(alice, settings):
    settings.LENSWEB_WS_MAX_MESSAGE_BYTES = 200
    async with socket(alice) as communicator:
        assert (await communicator.connect())[0]
        await communicator.receive_from(timeout=scaled(10))
        await communicator.send_to(text_data="not json")
        assert "not understood" in await communicator.receive_from(timeout=scaled(10))
        await communicator.send_to(text_data=json.dumps({"action": "delete", "job": 1}))
        assert "unknown action" in await communicator.receive_from(timeout=scaled(10))
        await communicator.send_to(text_data="x" * 201)
        assert "too large" in await communicator.receive_from(timeout=scaled(10))
        assert (await communicator.receive_output())["type"] == "websocket.close"
