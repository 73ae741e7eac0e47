"""Users (a staff member, a researcher), workers, and a known set of analyses with known times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from lensweb.analyses.models import Analysis, WorkerRecord
from tests.accounts.conftest import alice, alice_key, bob, clear_ratelimits, staff  # noqa: F401  (fixtures)
from tests.web.conftest import _fresh_channel_layer  # noqa: F401  (fixture)

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
HTMX = {"HTTP_HX_REQUEST": "true"}


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def make_job(owner, status, queued, started=None, finished=None, done=0, total=None, **fields) -> Analysis:
    return Analysis.objects.create(
        owner=owner,
        lens_id=fields.pop("lens_id", "tiny"),
        input={"text": "some text"},
        options={},
        status=status,
        created_at=queued,
        queued_at=queued,
        started_at=started,
        attempt_started_at=fields.pop("attempt_started_at", started),
        finished_at=finished,
        progress_done=done,
        progress_total=total if total is not None else done,
        **fields,
    )


@pytest.fixture
def known_jobs(alice, bob):  # noqa: F811  (pytest fixtures by name)
    """Against NOW: two queued, one running, and finished ones in the last hour and the last day.

    queue waits in the last hour: J1 60, J2 10, J3 30, J5 60, J9 20 s; J8 (20 h ago) 120 s
    run times of done jobs:        J1 600, J2 60, J9 600 s in the last hour; J8 300 s in the day
    last 5 minutes:                J5 300 positions over exactly those 5 min, J9 half of its 1200
    """
    S = Analysis.Status
    n = NOW
    return {
        "J1": make_job(alice, S.DONE, n - minutes(50), n - minutes(49), n - minutes(39), 600),
        "J2": make_job(
            alice, S.DONE, n - minutes(30), n - minutes(30) + seconds(10), n - minutes(29) + seconds(10), 60
        ),
        "J3": make_job(
            alice, S.FAILED, n - minutes(20), n - minutes(20) + seconds(30), n - minutes(18), 10, 100
        ),
        "J4": make_job(alice, S.CANCELLED, n - minutes(10), None, n - minutes(9), 0, 50),
        "J5": make_job(alice, S.RUNNING, n - minutes(6), n - minutes(5), None, 300, 1000),
        "J6": make_job(bob, S.QUEUED, n - minutes(2), total=40),
        "J7": make_job(bob, S.QUEUED, n - minutes(1), total=20),
        "J8": make_job(
            bob,
            S.DONE,
            n - timedelta(hours=20),
            n - timedelta(hours=20) + seconds(120),
            n - timedelta(hours=20) + seconds(420),
            70,
        ),  # fmt: skip
        "J9": make_job(bob, S.DONE, n - minutes(10) - seconds(20), n - minutes(10), n, 1200),
    }


def make_worker(name: str, heartbeat_age: float, state=WorkerRecord.State.IDLE, now=None, **fields):
    now = now or timezone.now()
    return WorkerRecord.objects.create(
        name=name,
        host=fields.pop("host", "gpu-1"),
        pid=fields.pop("pid", 1234),
        device=fields.pop("device", "cuda:0"),
        lens_id=fields.pop("lens_id", "tiny"),
        memory_bytes=fields.pop("memory_bytes", 3 * 1024**3),
        state=state,
        last_heartbeat=now - seconds(heartbeat_age),
        started_at=now - minutes(30),
        **fields,
    )


@pytest.fixture
def staff_client(client, staff):  # noqa: F811  (pytest fixtures by name)
    client.force_login(staff)
    return client


@pytest.fixture
def alice_client(client, alice):  # noqa: F811  (pytest fixtures by name)
    client.force_login(alice)
    return client
