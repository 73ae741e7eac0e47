"""Eviction by age and by size, clear_cache's filters, and the optional Redis front (a local-memory cache
stands in for Redis here: the front is any Django cache alias)."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from lensweb.cache import services as result_cache
from lensweb.cache.models import CachedResult

pytestmark = [pytest.mark.django_db]


def entry(name: str, lens="tiny", engine_version="1", days_old=0.0, rows=3, last_hit_days=None):
    rows = [{"position": p, "mse": 0.5, "explanation": f"{name} {p} " * 20} for p in range(rows)]
    hit = result_cache.Hit("", rows, {"lens_id": lens}, {}, 1.5)
    stored = result_cache.store(
        result_cache.Key(name, "identity", len(rows), engine_version, "cpu", "float32"), lens, {}, hit
    )
    now = timezone.now()
    CachedResult.objects.filter(pk=stored.pk).update(
        created_at=now - timedelta(days=days_old),
        engine_version=engine_version,
        last_hit_at=now - timedelta(days=last_hit_days) if last_hit_days is not None else None,
    )
    return CachedResult.objects.get(pk=stored.pk)


@pytest.fixture
def limits(settings):
    settings.LENSWEB_CACHE_MAX_AGE_DAYS = 0
    settings.LENSWEB_CACHE_MAX_BYTES = 0
    settings.LENSWEB_CACHE_FRONT = ""
    return settings


def keys() -> set[str]:
    return set(CachedResult.objects.values_list("key", flat=True))


def test_rows_round_trip_compressed(limits):
    stored = entry("a", rows=50)
    assert [r["position"] for r in stored.rows] == list(range(50))
    assert stored.size_bytes == len(bytes(stored.blob)) < len(str(stored.rows))


def test_eviction_by_age(limits):
    entry("old", days_old=10), entry("new", days_old=1)
    assert result_cache.evict(max_age_days=5) == 1
    assert keys() == {"new"}


def test_eviction_by_size_drops_the_least_recently_used(limits):
    a = entry("a", days_old=3, last_hit_days=0.1)  # old but just used
    entry("b", days_old=2)
    entry("c", days_old=1)
    assert result_cache.evict(max_bytes=2 * a.size_bytes + 10) == 1
    assert keys() == {"a", "c"}


def test_eviction_runs_after_every_store(limits):
    limits.LENSWEB_CACHE_MAX_AGE_DAYS = 5
    entry("old", days_old=10)
    entry("new")
    assert keys() == {"new"}
    limits.LENSWEB_CACHE_MAX_BYTES = 1  # smaller than any entry: the one just stored goes too
    key = result_cache.Key("newer", "identity", 1, "1", "cpu", "float32")
    result_cache.store(key, "tiny", {}, result_cache.Hit("", [{"position": 0}], {}, {}, 1.0))
    assert keys() == set()


def test_evict_cache_command(limits):
    entry("old", days_old=10), entry("new")
    out = io.StringIO()
    call_command("evict_cache", "--max-age-days", "5", stdout=out)
    assert keys() == {"new"} and "evicted 1; 1 cached result(s)" in out.getvalue()


def test_clear_cache_filters(limits):
    entry("tiny-old", days_old=10)
    entry("tiny-new")
    entry("other", lens="other")
    entry("v0", engine_version="0")
    with pytest.raises(CommandError, match="--all"):
        call_command("clear_cache")
    call_command("clear_cache", "--lens", "other")
    assert keys() == {"tiny-old", "tiny-new", "v0"}
    call_command("clear_cache", "--older-than", "5")
    assert keys() == {"tiny-new", "v0"}
    call_command("clear_cache", "--engine-version", "0")
    assert keys() == {"tiny-new"}
    entry("x", lens="other", days_old=10)
    call_command("clear_cache", "--lens", "tiny", "--older-than", "5")  # both filters: nothing matches
    assert keys() == {"tiny-new", "x"}
    call_command("clear_cache", "--all")
    assert keys() == set()


@pytest.fixture
def front(limits):
    limits.CACHES = {
        **limits.CACHES,
        "results-test": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "results-test",
        },
    }
    limits.LENSWEB_CACHE_FRONT = "results-test"
    from django.core.cache import caches

    caches["results-test"].clear()
    return caches["results-test"]


def test_the_front_answers_and_the_database_stays_the_record(front):
    stored = entry("k")
    assert front.get("result:k")["blob"] == bytes(stored.blob)
    key = result_cache.Key("k", "identity", 3, "1", "cpu", "float32")
    hit = result_cache.lookup(key)
    assert [r["position"] for r in hit.rows] == [0, 1, 2]
    assert CachedResult.objects.get().hits == 1  # counted in the database too
    call_command("clear_cache", "--all")
    assert front.get("result:k") is None and result_cache.lookup(key) is None
    # an entry only the front still holds (cleared in the database by another process) is not served
    front.set("result:k", {"blob": bytes(stored.blob), "metadata": {}, "timings": {}, "computed_seconds": 1})
    assert result_cache.lookup(key) is None and front.get("result:k") is None


def test_a_front_that_fails_falls_back_to_the_database(front, monkeypatch):
    entry("k")

    def broken(*args, **kwargs):
        raise ConnectionError("redis is away")

    monkeypatch.setattr(front, "get", broken)
    assert result_cache.lookup(result_cache.Key("k", "identity", 3, "1", "cpu", "float32")) is not None
