"""The browser socket (/ws/analyses/) through the real ASGI stack: Origin check, session auth, and cancel
only for the job's owner. Every communicator is disconnected."""

from __future__ import annotations

import contextlib
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from lensweb.analyses.models import Analysis
from lensweb.asgi import application
from tests.conftest import scaled

pytestmark = [pytest.mark.django_db(transaction=True)]

NO_ORIGIN = object()


@database_sync_to_async
def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@contextlib.asynccontextmanager
async def socket(user=None, origin=b"http://testserver"):
    # A real handshake always carries Host: the Origin check compares the two.
    headers = [(b"host", b"testserver")] + ([] if origin is NO_ORIGIN else [(b"origin", origin)])
    if user is not None:
        headers.append((b"cookie", f"sessionid={await _session_cookie(user)}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/analyses/", headers=headers)
    try:
        yield communicator
    finally:
        await communicator.disconnect()


async def _refused(communicator) -> bool:
    connected, _ = await communicator.connect()
    return not connected


@database_sync_to_async
def _job(pk) -> Analysis:
    return Analysis.objects.get(pk=pk)


async def _cancel(communicator, job_id: int) -> str:
    """Send a cancel; the socket's answer (#socket-message), skipping card updates that come first."""
    await communicator.send_to(text_data=json.dumps({"action": "cancel", "job": job_id}))
    while True:
        message = await communicator.receive_from(timeout=scaled(10))
        if 'id="socket-message"' in message:
            return message


async def test_anonymous_is_refused(world):
    async with socket() as communicator:
        assert await _refused(communicator)


@pytest.mark.parametrize(
    "origin",
    [b"http://evil.example", b"http://testserver.evil.example", b"null", NO_ORIGIN],
    ids=["other-site", "suffix-host", "null", "none"],
)
async def test_foreign_or_missing_origin_is_refused(world, origin):
    """Cross-site WebSocket hijacking: the session cookie rides along, the Origin check stops it."""
    async with socket(world.owner, origin=origin) as communicator:
        assert await _refused(communicator)


@pytest.mark.parametrize("actor", ["other", "staff"])
async def test_someone_elses_job_cannot_be_cancelled_or_seen(world, actor):
    async with socket(world.user(actor)) as communicator:
        connected, _ = await communicator.connect()
        assert connected
        replay = await communicator.receive_from(timeout=scaled(10))
        assert f'id="job-{world.queued.pk}"' not in replay and f'id="job-{world.analysis.pk}"' not in replay
        answer = await _cancel(communicator, world.queued.pk)
        assert f"there is no analysis #{world.queued.pk} of yours" in answer
    job = await _job(world.queued.pk)
    assert job.status == Analysis.Status.QUEUED and not job.cancel_requested


async def test_the_owner_can_cancel(world):
    async with socket(world.owner) as communicator:
        connected, _ = await communicator.connect()
        assert connected
        replay = await communicator.receive_from(timeout=scaled(10))
        assert f'id="job-{world.queued.pk}"' in replay
        answer = await _cancel(communicator, world.queued.pk)
        assert f"analysis #{world.queued.pk}: cancelled" in answer
    assert (await _job(world.queued.pk)).status == Analysis.Status.CANCELLED
