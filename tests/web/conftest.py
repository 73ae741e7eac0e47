"""Fixtures for the web tests: users, the tiny golden lens, fast worker timings, live services."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import (  # noqa: F401  (shared with the modules that import them from here)
    GOLDEN,
    REPO,
    SLOW_TEXT,
    in_ci,
    require,
    tiny_registry_path,
    token_ids,
    write_tiny_registry,
)

PG_URL = os.environ.get("LENSWEB_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LENSWEB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60, status: int = 200) -> None:
    """Until `url` answers `status` (a subprocess server coming up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == status:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer {status} in {timeout} s")


@pytest.fixture(scope="session")
def tiny_registry() -> Path:
    """The registry every test starts on (tests/conftest.py): the tiny golden lens alone."""
    return tiny_registry_path()


@pytest.fixture
def tiny_engine(tiny_lens_registry):
    """The engine the test settings name: the real one, over the tiny golden lens."""
    from lensweb.analyses.engine import get_engine

    return get_engine()


@pytest.fixture
def warm_lens(tiny_engine):
    """The tiny lens loaded (once per process: the engine keeps it), for tests that time a job, not a load."""
    return tiny_engine.load(tiny_engine.default_lens())


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """Each test has its own event loop; the in-memory layer's queues must not outlive it."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def fast_worker(settings):
    settings.LENSWEB_POLL_INTERVAL = 0.05
    settings.LENSWEB_HEARTBEAT_INTERVAL = 0.2
    return settings


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="pw-alice")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="pw-bob")


@pytest.fixture
def carol(django_user_model):
    return django_user_model.objects.create_user("carol", password="pw-carol")


def job_state(job_id: int):
    from lensweb.analyses.models import Analysis

    return Analysis.objects.get(pk=job_id)


async def wait_for(predicate, timeout: float = 30, interval: float = 0.05):
    """Poll a sync predicate (it may touch the database) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    check = sync_to_async(predicate)
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        await asyncio.sleep(interval)
