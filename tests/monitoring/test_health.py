"""/healthz never fails; /readyz needs a worker that heart-beats (a silent one does not count)."""

import pytest

from lensweb.analyses.models import WorkerRecord

from .conftest import make_worker

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_a_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_is_503_while_the_only_worker_is_silent(client, settings):
    settings.LENSWEB_STALE_AFTER = 30
    make_worker("silent", heartbeat_age=120, state=WorkerRecord.State.IDLE)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {
        "database": True,
        "channel_layer": True,
        "workers": 0,
        "tokenizers": True,
    }


def test_readyz_is_200_with_a_fresh_heartbeat(client, settings):
    settings.LENSWEB_STALE_AFTER = 30
    make_worker("silent", heartbeat_age=120, state=WorkerRecord.State.IDLE)
    make_worker("fresh", heartbeat_age=1, state=WorkerRecord.State.BUSY)
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": True, "channel_layer": True, "workers": 1, "tokenizers": True},
    }


def test_a_stopped_worker_does_not_make_the_site_ready(client):
    make_worker("stopped", heartbeat_age=0, state=WorkerRecord.State.STOPPED)
    assert client.get("/readyz").status_code == 503


def test_readyz_is_503_until_the_start_up_tokenizer_read_has_finished(client, settings, monkeypatch):
    from lensweb.analyses import warmup

    make_worker("fresh", heartbeat_age=1, state=WorkerRecord.State.IDLE)
    monkeypatch.setattr(warmup, "_started", type(warmup._started)())
    monkeypatch.setattr(warmup, "_done", type(warmup._done)())
    warmup._started.set()  # a web process that is still reading its tokenizers
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["checks"]["tokenizers"] is False
    warmup._done.set()
    assert client.get("/readyz").status_code == 200
