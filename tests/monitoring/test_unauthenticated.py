"""Requests refused for want of a login or a valid API key are counted for /metrics, not written to the
request log: an attacker spamming bad keys cannot grow a table."""

from __future__ import annotations

import json

import pytest
from django.core.cache import caches
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from lensweb.monitoring import counters, metrics
from lensweb.monitoring.models import RequestLogEntry

pytestmark = pytest.mark.django_db

BAD = "lw_abcdefgh_" + "x" * 40
TEXT = "The capital of France is Paris"


@pytest.fixture
def own_counters(settings):
    """A counter cache of this test's own (the real alias may be a Redis shared with other test runs)."""
    settings.CACHES = {
        **settings.CACHES,
        "counters-test": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "counters"},
    }
    settings.LENSWEB_METRICS_COUNTER_CACHE = "counters-test"
    caches["counters-test"].clear()
    yield
    caches["counters-test"].clear()


def scraped() -> dict:
    return {
        (s.name, s.labels.get("client"), s.labels.get("kind")): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name.startswith("lensweb_unauthenticated_requests")
    }


def post(client, path, body, key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post(path, json.dumps(body), content_type="application/json", headers=headers)


def test_bad_keys_are_counted_and_leave_no_entry(client, own_counters, settings):
    settings.LENSWEB_API_AUTH_FAILURE_RATE = "5/m"
    statuses = [post(client, "/api/v1/analyses", {"text": TEXT}, BAD).status_code for _ in range(8)]
    assert statuses == [401] * 6 + [429] * 2  # the limiter of failed authentications takes over
    post(client, "/api/v1/generations", {"text": TEXT})  # no key at all
    client.delete("/api/v1/analyses/1")
    assert not RequestLogEntry.objects.exists()
    samples = scraped()
    assert samples[("lensweb_unauthenticated_requests_total", "api", "analysis")] == 8
    assert samples[("lensweb_unauthenticated_requests_total", "api", "generation")] == 1
    assert samples[("lensweb_unauthenticated_requests_total", "api", "cancel")] == 1
    assert samples[("lensweb_unauthenticated_requests_total", "browser", "analysis")] == 0


def test_reads_with_a_bad_key_are_counted_too(client, own_counters):
    for path in ("/api/v1/lenses", "/api/v1/analyses/7", f"/api/v1/{'x' * 300}"):
        client.get(path, headers={"Authorization": f"Bearer {BAD}"})
    client.get("/api/v1/openapi.json")  # public: answered, not a refusal
    assert counters.unauthenticated_totals()[("api", "read")] == 2  # the unknown route is a 404, not 401
    assert not RequestLogEntry.objects.exists()


def test_a_session_beside_a_bad_key_does_not_make_the_call_logged(client, alice, own_counters):
    client.force_login(alice)
    assert post(client, "/api/v1/analyses", {"text": TEXT}, BAD).status_code == 401
    assert not RequestLogEntry.objects.exists()
    assert counters.unauthenticated_totals()[("api", "analysis")] == 1


def test_anonymous_form_posts_are_counted_and_sent_to_log_in(client, own_counters):
    for _ in range(3):
        response = client.post(reverse("analyses:submit"), {"text": TEXT})
        assert response.status_code == 302
    client.post(reverse("analyses:cancel", args=[1]))
    assert not RequestLogEntry.objects.exists()
    totals = counters.unauthenticated_totals()
    assert totals[("browser", "analysis")] == 3 and totals[("browser", "cancel")] == 1


def test_authenticated_calls_are_logged_not_counted(client, alice, alice_key, own_counters):
    post(client, "/api/v1/analyses", {"text": TEXT, "options": {"best_of_k": 0}}, alice_key)
    assert RequestLogEntry.objects.get().username == "alice"
    assert not any(counters.unauthenticated_totals().values())


def test_the_shared_counter_cache_counts_across_its_users(client, settings):
    """The real alias (Redis when REDIS_URL is set): other test runs may add to it, so at least ours."""
    before = counters.unauthenticated_totals()[("api", "generation")]
    for _ in range(3):
        post(client, "/api/v1/generations", {"text": TEXT}, BAD)
    assert counters.unauthenticated_totals()[("api", "generation")] >= before + 3


def test_a_broken_counter_cache_never_breaks_a_request(client, own_counters, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("the cache is away")

    monkeypatch.setattr(caches["counters-test"], "incr", broken)
    monkeypatch.setattr(caches["counters-test"], "get_many", broken)
    assert post(client, "/api/v1/analyses", {"text": TEXT}, BAD).status_code == 401
    assert scraped()[("lensweb_unauthenticated_requests_total", "api", "analysis")] == 0


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_refusals_are_counted_too(async_client, own_counters):
    from asgiref.sync import sync_to_async
    from django.db import connections

    response = await async_client.get("/api/v1/lenses", headers={"Authorization": f"Bearer {BAD}"})
    assert response.status_code == 401
    response = await async_client.post("/api/v1/analyses", "{}", content_type="application/json")
    assert response.status_code == 401
    totals = await sync_to_async(counters.unauthenticated_totals)()
    assert totals[("api", "read")] == 1 and totals[("api", "analysis")] == 1
    assert not await sync_to_async(RequestLogEntry.objects.exists)()
    await sync_to_async(connections.close_all)()
