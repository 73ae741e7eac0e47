"""The status strip on every page: `/ws/status/` sends it on connect and again when a worker comes, loads a
lens or goes, and when the queue moves."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from lensweb.analyses import services, status

from .conftest import scaled
from .test_consumers import socket

pytestmark = [pytest.mark.django_db(transaction=True)]


def strip(user=None, origin="http://testserver"):
    return socket(user, origin=origin, path="/ws/status/")


async def next_strip(communicator, contains: str) -> str:
    """Strips until one holds `contains` (a doorbell may bring one from before the change)."""
    while True:
        html = await communicator.receive_from(timeout=scaled(10))
        assert 'id="status-strip-body"' in html
        if contains in html:
            return html


async def test_anonymous_and_foreign_sockets_are_refused(alice):
    async with strip() as communicator:
        assert not (await communicator.connect())[0]
    async with strip(alice, origin="http://evil.example") as communicator:
        assert not (await communicator.connect())[0]


async def test_the_strip_follows_workers_lenses_and_the_queue(alice, settings):
    settings.LENSWEB_STATUS_REFRESH_SECONDS = 600  # only doorbells here
    async with strip(alice) as communicator:
        assert (await communicator.connect())[0]
        first = await communicator.receive_from(timeout=scaled(10))
        assert "no worker online" in first and 'data-state="unserved"' in first

        worker = await database_sync_to_async(services.register_worker)(device="cpu")
        html = await next_strip(communicator, "1 worker online")
        assert 'data-lens="tiny" data-state="cold"' in html

        await database_sync_to_async(services.do_submit)(alice, None, {"text": "Bees make honey."}, {})
        await next_strip(communicator, "1 queued")

        await database_sync_to_async(status.worker_loading)(worker.pk, "tiny")
        await next_strip(communicator, 'data-state="loading"')
        await database_sync_to_async(status.worker_loaded)(worker.pk, "tiny", 3.0)
        await next_strip(communicator, 'data-state="loaded"')

        await database_sync_to_async(services.worker_stopped)(worker.pk)
        html = await next_strip(communicator, "no worker online")
        assert 'data-state="unserved"' in html


async def test_a_dead_worker_leaves_the_strip_at_the_next_refresh(alice, settings):
    from datetime import timedelta

    from django.utils import timezone

    from lensweb.analyses.models import WorkerRecord

    settings.LENSWEB_STATUS_REFRESH_SECONDS = 0.2
    settings.LENSWEB_STALE_AFTER = 30
    worker = await database_sync_to_async(services.register_worker)(device="cpu")
    async with strip(alice) as communicator:
        assert (await communicator.connect())[0]
        assert "1 worker online" in await communicator.receive_from(timeout=scaled(10))
        # killed: no doorbell, its heartbeat just ages
        await database_sync_to_async(
            lambda: WorkerRecord.objects.filter(pk=worker.pk).update(
                last_heartbeat=timezone.now() - timedelta(seconds=60)
            )
        )()
        await next_strip(communicator, "no worker online")


def test_every_page_carries_the_strip_for_a_signed_in_user(alice):
    client = Client()
    assert 'ws-connect="/ws/status/"' not in client.get("/accounts/login/").content.decode()
    client.force_login(alice)
    for url in ("/", "/history/", "/accounts/settings/"):
        page = client.get(url).content.decode()
        assert 'id="status-strip"' in page and 'ws-connect="/ws/status/"' in page, url
