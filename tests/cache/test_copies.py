"""Hits are cheap to ask for, so they are bounded like submits: they count against the per-minute submit
limit, and the rows they copy into the user's analysis are capped per day
(LENSWEB_MAX_CACHED_POSITIONS_PER_DAY). A hit still costs no compute quota and no queue place."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from lensweb.analyses import services
from lensweb.analyses.errors import QuotaExceeded
from lensweb.analyses.models import Analysis, AnalysisRow
from lensweb.analyses.quotas import positions_today
from lensweb.cache import services as result_cache
from lensweb.cache.models import CachedResult
from tests.accounts.conftest import alice_key, clear_ratelimits  # noqa: F401  (fixtures)
from tests.api.conftest import api, live_worker  # noqa: F401  (fixtures)

from .conftest import TEXT, fresh

pytestmark = [pytest.mark.django_db(transaction=True)]

URL = "/api/v1/analyses"
OPTIONS = {"seed": 5, "best_of_k": 1}
FORM = {
    "text": TEXT,
    "input_format": "text",
    "best_of_k": 1,
    "temperature": 1.0,
    "seed": 5,
    "salience": "on",
    "lens": "tiny",
}


@pytest.fixture
def cached(alice, run_queue) -> Analysis:
    """TEXT computed once (through the core, no rate limit touched) and stored in the cache."""
    job = services.do_submit(alice, None, {"text": TEXT}, dict(OPTIONS))
    run_queue()
    assert CachedResult.objects.count() == 1
    return fresh(job)


def test_hits_count_against_the_submit_rate_on_the_form_and_the_api(
    api,  # noqa: F811
    client,
    alice,
    alice_key,  # noqa: F811
    cached,
    live_worker,  # noqa: F811
    settings,
):
    settings.LENSWEB_SUBMIT_RATE = "2/m"
    client.force_login(alice)
    assert api.post(URL, {"text": TEXT, "options": OPTIONS}, key=alice_key).status_code == 200  # a hit
    page = client.post(reverse("analyses:submit"), FORM, HTTP_HX_REQUEST="true")
    assert Analysis.objects.filter(metadata__cached=True).count() == 2, "the form's hit was answered"
    assert "submitting too fast" not in page.content.decode()
    limited = api.post(URL, {"text": TEXT, "options": OPTIONS}, key=alice_key)
    assert limited.status_code == 429 and limited.json_body["error"]["code"] == "rate_limited"
    page = client.post(reverse("analyses:submit"), FORM, HTTP_HX_REQUEST="true")
    assert "submitting too fast" in page.content.decode()
    assert Analysis.objects.filter(metadata__cached=True).count() == 2


def test_copied_positions_are_capped_per_day(alice, cached, settings):
    n = cached.progress_total
    settings.LENSWEB_MAX_CACHED_POSITIONS_PER_DAY = 2 * n
    settings.LENSWEB_MAX_POSITIONS_PER_DAY = n  # spent by the computation: hits must not need it
    for _ in range(2):
        assert services.do_submit(alice, None, {"text": TEXT}, dict(OPTIONS)).status == "done"
    assert result_cache.cached_positions_today(alice) == 2 * n and positions_today(alice) == n
    rows = AnalysisRow.objects.count()
    with pytest.raises(QuotaExceeded, match=f"{2 * n:,} of your {2 * n:,} cached positions") as refused:
        services.do_submit(alice, None, {"text": TEXT}, dict(OPTIONS))
    assert 1 <= refused.value.retry_after <= 86_400
    assert AnalysisRow.objects.count() == rows and Analysis.objects.count() == 3
    assert CachedResult.objects.get().hits == 2  # the refused lookup's count was rolled back
    # Tomorrow the count starts again.
    Analysis.objects.update(created_at=timezone.now() - timedelta(days=1))
    assert services.do_submit(alice, None, {"text": TEXT}, dict(OPTIONS)).status == "done"


def test_the_api_refuses_a_hit_over_the_cap_with_429_and_serves_one_within_it_without_compute_quota(
    api,  # noqa: F811
    alice,
    alice_key,  # noqa: F811
    cached,
    live_worker,  # noqa: F811
    settings,
):
    n = cached.progress_total
    settings.LENSWEB_MAX_POSITIONS_PER_DAY = n  # the compute quota is spent: a hit needs none of it
    settings.LENSWEB_MAX_CACHED_POSITIONS_PER_DAY = n
    hit = api.post(URL, {"text": TEXT, "options": OPTIONS}, key=alice_key)
    assert hit.status_code == 200 and hit.json_body["cached"] is True
    over = api.post(URL, {"text": TEXT, "options": OPTIONS}, key=alice_key)
    assert over.status_code == 429 and over.json_body["error"]["code"] == "quota_exceeded"
    assert "cached positions" in over.json_body["error"]["message"] and int(over["Retry-After"]) >= 1
    miss = api.post(URL, {"text": TEXT + " Again.", "options": OPTIONS}, key=alice_key)
    assert miss.status_code == 429 and "of your" in miss.json_body["error"]["message"]
    assert Analysis.objects.count() == 2


def test_the_form_shows_the_cap(client, alice, cached, settings):
    settings.LENSWEB_MAX_CACHED_POSITIONS_PER_DAY = cached.progress_total
    client.force_login(alice)
    client.post(reverse("analyses:submit"), FORM, HTTP_HX_REQUEST="true")
    page = client.post(reverse("analyses:submit"), FORM, HTTP_HX_REQUEST="true").content.decode()
    assert "cached positions today" in page
    assert Analysis.objects.filter(metadata__cached=True).count() == 1


def test_a_cap_of_zero_means_none_and_the_warmer_is_not_capped(alice, cached, settings):
    settings.LENSWEB_MAX_CACHED_POSITIONS_PER_DAY = 0
    for _ in range(3):
        assert services.do_submit(alice, None, {"text": TEXT}, dict(OPTIONS)).status == "done"
    settings.LENSWEB_MAX_CACHED_POSITIONS_PER_DAY = 1
    warmer = result_cache.warmer_user()
    job = services.do_submit(warmer, None, {"text": TEXT}, dict(OPTIONS), limited=False)
    assert job.status == "done"
