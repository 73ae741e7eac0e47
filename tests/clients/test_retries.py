"""429 and 503 are retried after their Retry-After (capped, a bounded number of times); a broken
connection is retried for GET only (a POST might have landed); the rate-limit headers are kept."""

from __future__ import annotations

import socket

import pytest
from lensweb_client import Client, ConnectionFailed, RateLimited, Unavailable

from .conftest import KEY, Reply

QUEUED = {"id": 5, "status": "queued", "queue_position": 1, "cached": False, "url": "u", "html_url": "h"}


def limited(seconds: str | None, code: str = "rate_limited", status: int = 429) -> Reply:
    headers = {"Retry-After": seconds} if seconds is not None else {}
    return Reply(status, {"error": {"code": code, "message": "wait"}}, headers=headers)


def test_a_429_is_retried_after_its_retry_after_with_the_same_body(server, client, sleeps):
    server.on("POST", "/api/v1/analyses", limited("2"), limited("1"), Reply(202, QUEUED))
    analysis = client.analyze("Hello", seed=3)
    assert analysis.id == 5 and analysis.status == "queued"
    assert sleeps == [2.0, 1.0]
    bodies = [seen.json() for seen in server.requests("POST", "/api/v1/analyses")]
    assert bodies == [{"text": "Hello", "options": {"seed": 3}}] * 3


def test_retries_stop_after_max_retries(server, client, sleeps):
    server.on("GET", "/api/v1/lenses", limited(None, "no_worker", 503))
    with pytest.raises(Unavailable):
        client.lenses()
    assert len(server.requests("GET", "/api/v1/lenses")) == 1 + client.max_retries
    assert sleeps == [0.5, 1.0, 2.0], "no Retry-After: a doubling backoff"


def test_a_retry_after_beyond_the_cap_is_raised_at_once(server, client, sleeps):
    server.on("POST", "/api/v1/analyses", limited("7200", "quota_exceeded"))
    with pytest.raises(RateLimited) as caught:
        client.analyze("Hello")
    assert (caught.value.code, caught.value.retry_after) == ("quota_exceeded", 7200)
    assert sleeps == [] and len(server.requests("POST", "/api/v1/analyses")) == 1


def test_the_wait_is_capped(server, client, sleeps):
    client.max_retry_wait = 5
    client.max_retries = 10
    server.on(
        "GET",
        "/api/v1/lenses",
        *[limited(None, status=503)] * 5,
        Reply(200, {"lenses": []}),
    )
    assert client.lenses() == []
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 5.0]


def test_a_dropped_connection_is_retried_for_a_get(server, client, sleeps):
    lens = {
        "id": "tiny",
        "name": "Tiny",
        "description": "",
        "default": True,
        "untrained": True,
        "kind": "lens",
    }
    server.on("GET", "/api/v1/lenses", Reply(hang_up=True), Reply(200, {"lenses": [lens]}))
    [got] = client.lenses()
    assert (got.id, got.default, got.kind) == ("tiny", True, "lens")
    assert len(sleeps) == 1


def test_a_dropped_connection_is_not_retried_for_a_post(server, client, sleeps):
    server.on("POST", "/api/v1/analyses", Reply(hang_up=True), Reply(202, QUEUED))
    with pytest.raises(ConnectionFailed):
        client.analyze("Hello")
    assert len(server.requests("POST", "/api/v1/analyses")) == 1 and sleeps == []


def test_a_server_that_is_not_there(sleeps):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}", KEY, timeout=2, max_retries=2)
    client.sleep = sleeps.append
    with pytest.raises(ConnectionFailed) as caught:
        client.lenses()
    assert isinstance(caught.value, ConnectionError)
    assert len(sleeps) == 2
    assert KEY not in str(caught.value)


def test_the_rate_limit_and_quota_headers_are_kept(server, client):
    headers = {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "41", "X-Quota-Positions-Remaining": "900"}
    server.on("POST", "/api/v1/analyses", Reply(202, QUEUED, headers=headers))
    assert (client.last_rate_limit, client.last_quota_remaining) == (None, None)
    client.analyze("Hello")
    assert (client.last_rate_limit, client.last_quota_remaining) == (41, 900)
    # an answer without the quota header (an event stream sends none) keeps the last value
    server.on(
        "GET",
        "/api/v1/analyses/5",
        Reply(404, {"error": {"code": "not_found", "message": "m"}}, headers={"X-RateLimit-Remaining": "40"}),
    )
    with pytest.raises(Exception, match="not_found"):
        client.analysis(5)
    assert (client.last_rate_limit, client.last_quota_remaining) == (40, 900)


def test_the_base_url_may_name_the_api_root():
    for base in ("http://h:1", "http://h:1/", "http://h:1/api/v1", "http://h:1/api/v1/"):
        client = Client(base, KEY)
        assert (client.base_url, client.api_url) == ("http://h:1", "http://h:1/api/v1/")
