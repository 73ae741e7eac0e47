"""/metrics: Prometheus text that parses, with the values of a known database state, behind its door."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lensweb.analyses.models import WorkerRecord
from lensweb.monitoring import metrics

from .conftest import NOW, make_worker

pytestmark = pytest.mark.django_db


def parse(text: str) -> dict:
    """{(sample name, frozenset(labels)): value} of every sample."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def test_the_scrape_holds_the_known_state(known_jobs, settings):
    settings.LENSWEB_STALE_AFTER = 30
    make_worker("gpu-1:1:aaaa", 4, WorkerRecord.State.BUSY, now=NOW, memory_bytes=2048)
    make_worker("gpu-2:2:bbbb", 300, WorkerRecord.State.IDLE, now=NOW, host="gpu-2", memory_bytes=None)
    make_worker("gpu-3:3:cccc", 5, WorkerRecord.State.STOPPED, now=NOW)
    samples = parse(metrics.render(now=NOW).decode())

    assert value(samples, "lensweb_queue_depth") == 2
    assert value(samples, "lensweb_queue_oldest_age_seconds") == 120
    assert value(samples, "lensweb_running_jobs") == 1
    assert value(samples, "lensweb_analyses", status="done") == 4
    assert value(samples, "lensweb_analyses", status="failed") == 1
    assert value(samples, "lensweb_analyses", status="queued") == 2
    assert value(samples, "lensweb_generations", status="queued") == 0
    assert value(samples, "lensweb_workers", state="busy") == 1
    assert value(samples, "lensweb_workers", state="idle") == 1
    assert value(samples, "lensweb_workers", state="stopped") == 1

    busy = {"worker": "gpu-1:1:aaaa", "host": "gpu-1", "device": "cuda:0", "lens": "tiny"}
    silent = {**busy, "worker": "gpu-2:2:bbbb", "host": "gpu-2"}
    assert value(samples, "lensweb_worker_heartbeat_age_seconds", **busy) == 4
    assert value(samples, "lensweb_worker_heartbeat_age_seconds", **silent) == 300
    assert value(samples, "lensweb_worker_live", **busy) == 1
    assert value(samples, "lensweb_worker_live", **silent) == 0
    assert value(samples, "lensweb_worker_memory_bytes", **busy) == 2048
    assert ("lensweb_worker_memory_bytes", frozenset(silent.items())) not in samples  # none reported
    assert not any(dict(labels).get("worker") == "gpu-3:3:cccc" for _, labels in samples)  # stopped

    assert value(samples, "lensweb_positions_per_second") == pytest.approx(3.0)
    assert value(samples, "lensweb_queue_wait_seconds_count") == 6
    assert value(samples, "lensweb_queue_wait_seconds_sum") == 300
    assert value(samples, "lensweb_queue_wait_seconds_bucket", le="30.0") == 3
    assert value(samples, "lensweb_queue_wait_seconds_bucket", le="+Inf") == 6
    assert value(samples, "lensweb_run_seconds_count") == 4
    assert value(samples, "lensweb_run_seconds_sum") == 1560
    assert value(samples, "lensweb_run_seconds_bucket", le="60.0") == 1
    assert value(samples, "lensweb_cache_hits_total") == 0
    assert value(samples, "lensweb_cache_misses_total") == 9


def test_staff_scrape_over_http(client, staff, known_jobs):
    client.force_login(staff)
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = parse(response.content.decode())
    assert value(samples, "lensweb_queue_depth") == 2
    assert value(samples, "lensweb_analyses", status="cancelled") == 1


def test_researchers_and_strangers_are_refused(client, alice):
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    client.force_login(alice)
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403


def test_loopback_scrapes_without_a_token_unless_proxied(client):
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    # A reverse proxy on this host makes every request look local: forwarded ones are not trusted.
    assert (
        client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.1").status_code
        == 403
    )


def test_with_a_token_only_the_token_or_staff_get_in(client, staff, settings):
    settings.LENSWEB_METRICS_TOKEN = "s3cret-scrape-token"
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    wrong = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401
    right = client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")
    assert right.status_code == 200 and b"lensweb_queue_depth" in right.content
    client.force_login(staff)
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 200


def test_production_has_no_loopback_exemption(client, staff, settings):
    """LENSWEB_METRICS_ALLOW_LOOPBACK is False in production: the reverse proxy, or any sidecar on the
    host, makes requests from loopback too."""
    settings.LENSWEB_METRICS_ALLOW_LOOPBACK = False
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 403
    settings.LENSWEB_METRICS_TOKEN = "s3cret-scrape-token"
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    bearer = {"HTTP_AUTHORIZATION": "Bearer s3cret-scrape-token"}
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", **bearer).status_code == 200
    settings.LENSWEB_METRICS_TOKEN = ""
    client.force_login(staff)  # with no token: staff only
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
