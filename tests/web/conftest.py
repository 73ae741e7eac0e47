"""Fixtures for the web tests: users, the tiny test lens, fast worker timings, live services. Every wait on
real work is stretched by LENSWEB_TEST_TIMEOUT_SCALE (tests.conftest.scaled) and says what it waited for."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import (  # noqa: F401  (shared with the modules that import them from here)
    REPO,
    SLOW_TEXT,
    TINY_NAME,
    in_ci,
    require,
    scaled,
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


def wait_http(url: str, timeout: float | None = None, status: int = 200) -> None:
    """Until `url` answers `status` (a subprocess server coming up), within `timeout` seconds: by default
    scaled(60); a caller's own timeout is taken as given, so pass scaled(seconds)."""
    limit = scaled(60) if timeout is None else timeout
    deadline = time.monotonic() + limit
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == status:
                    return
                last = f"HTTP {response.status}"
        except OSError as exc:  # refused while it starts; HTTPError (e.g. 503 until ready) is an OSError
            last = str(exc)
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer {status} within {limit:.0f} s (last: {last})")


@pytest.fixture(scope="session")
def tiny_registry() -> Path:
    """The registry every test starts on (tests/conftest.py): the tiny test lens alone."""
    return tiny_registry_path()


@pytest.fixture
def tiny_engine(tiny_lens_registry):
    """The engine the test settings name: the real one, over the tiny test lens."""
    from lensweb.analyses.engine import get_engine

    return get_engine()


@pytest.fixture
def no_lens_held(monkeypatch):
    """This process holds no lens (a fresh lenscache): the next job loads its lens, as after a start."""
    from lensweb.analyses import engine as engine_module

    monkeypatch.setattr(engine_module, "_cache", None)


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


async def wait_for(predicate, timeout: float | None = None, interval: float = 0.05, what: str = ""):
    """Poll a sync predicate (it may touch the database) until it returns something truthy, within `timeout`
    seconds: by default scaled(30); a caller's own timeout is taken as given, so pass scaled(seconds). A
    failure names what was awaited (`what`, else the predicate's source line) and its last value."""
    limit = scaled(30) if timeout is None else timeout
    deadline = time.monotonic() + limit
    check = sync_to_async(predicate)
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {limit:.0f} s waiting for {what or describe(predicate)} (last: {value!r})"
            )
        await asyncio.sleep(interval)


def describe(predicate) -> str:
    """The source line of a lambda (what a test waits for, in its own words), else the callable's name."""
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return getattr(predicate, "__qualname__", repr(predicate))


@pytest.fixture
def run_jobs(tiny_engine):
    """Run every claimable job, of either kind, to its end with one worker in this thread (the worker's own
    code: claim, execute, record); returns the (kind, id) it ran, in the order it took them (analyses that
    joined a running one's batches included)."""
    from lensweb.analyses import services
    from lensweb.analyses.worker import LensWorker

    worker = LensWorker(tiny_engine)

    def run(record=None) -> list[tuple[str, int]]:
        worker.record = record or worker.record or services.register_worker(device="cpu")
        ran = []
        took = LensWorker.running.__get__(worker)

        def running(job):  # the claimed job, and analyses that joined its batches
            if (job.kind, job.pk) not in ran:
                ran.append((job.kind, job.pk))
            took(job)

        worker.running = running
        while not worker.stopping and (job := services.claim_next_job(worker.record)) is not None:
            worker.running(job)
            worker._execute(job)
        return ran

    run.worker = worker
    return run
