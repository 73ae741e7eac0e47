"""Rate limits and daily quotas on the API: 429, JSON, Retry-After; the browser's submit limit is shared."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from lensweb.analyses import services
from lensweb.analyses.models import Analysis
from tests.conftest import token_ids

from .conftest import error_of

pytestmark = pytest.mark.django_db


def test_per_user_api_rate(api, alice_key, bob_key, settings):
    settings.LENSWEB_API_RATE = "3/m"
    for _ in range(3):
        assert api.get("/api/v1/lenses", key=alice_key).status_code == 200
    limited = api.get("/api/v1/lenses", key=alice_key)
    assert limited.status_code == 429 and error_of(limited)["code"] == "rate_limited"
    assert 1 <= int(limited["Retry-After"]) <= 60
    # Per user: Bob is not slowed down by Alice.
    assert api.get("/api/v1/lenses", key=bob_key).status_code == 200


def test_all_of_a_users_keys_share_the_rate(api, alice, alice_key, settings):
    from lensweb.accounts.keys import create_key

    settings.LENSWEB_API_RATE = "2/m"
    other = create_key(alice, "second")[1]
    assert api.get("/api/v1/lenses", key=alice_key).status_code == 200
    assert api.get("/api/v1/lenses", key=other).status_code == 200
    assert api.get("/api/v1/lenses", key=other).status_code == 429


def test_submit_rate_is_shared_with_the_browser_form(api, client, alice, alice_key, live_worker, settings):
    settings.LENSWEB_SUBMIT_RATE = "2/m"
    assert api.post("/api/v1/analyses", {"text": "one"}, key=alice_key).status_code == 202
    client.force_login(alice)
    client.post(
        "/analyses/",
        {
            "text": "two",
            "input_format": "text",
            "lens": "tiny",
            "best_of_k": 1,
            "temperature": 1.0,
            "seed": 42,
        },
    )
    limited = api.post("/api/v1/analyses", {"text": "three"}, key=alice_key)
    assert limited.status_code == 429 and int(limited["Retry-After"]) >= 1
    assert Analysis.objects.count() == 2


def test_generation_submit_rate(api, alice_key, live_worker, settings):
    settings.LENSWEB_SUBMIT_RATE = "1/m"
    assert api.post("/api/v1/generations", {"text": "one"}, key=alice_key).status_code == 202
    assert api.post("/api/v1/generations", {"text": "two"}, key=alice_key).status_code == 429


def test_repeated_bad_keys_from_one_ip_are_slowed(api, alice_key, settings):
    settings.LENSWEB_API_AUTH_FAILURE_RATE = "2/m"
    bad = "lw_abcdefgh_" + "x" * 40
    assert [api.get("/api/v1/lenses", key=bad).status_code for _ in range(3)] == [401, 401, 401]
    limited = api.get("/api/v1/lenses", key=bad)
    assert limited.status_code == 429 and limited["Retry-After"]
    # Another client (IP) is not affected.
    assert api.get("/api/v1/lenses", key=alice_key, REMOTE_ADDR="10.1.2.3").status_code == 200


def test_a_valid_key_is_never_refused_for_its_neighbours_bad_guesses(api, alice_key, settings):
    """People share NATs and proxies: 31 bad keys from one address must not lock out a good one there."""
    settings.LENSWEB_API_AUTH_FAILURE_RATE = "30/m"
    statuses = [api.get("/api/v1/lenses", key=f"lw_guess{i:03d}_" + "x" * 40).status_code for i in range(32)]
    assert statuses[:31] == [401] * 31 and statuses[31] == 429  # 30 a minute: the 31st is the one over
    assert api.get("/api/v1/lenses", key=alice_key).status_code == 200  # same address, a valid key


def test_bad_guesses_of_one_prefix_are_limited_whatever_their_address(api, alice_key, settings):
    settings.LENSWEB_API_AUTH_FAILURE_RATE = "3/m"
    prefix = alice_key.split("_")[1]
    guesses = [
        api.get("/api/v1/lenses", key=f"lw_{prefix}_" + "y" * 40, REMOTE_ADDR=f"10.9.0.{i}").status_code
        for i in range(5)
    ]
    assert guesses == [401] * 4 + [429]  # five addresses, one guess each: the prefix' count stops them
    assert api.get("/api/v1/lenses", key=alice_key, REMOTE_ADDR="10.9.0.1").status_code == 200


def test_daily_position_quota(api, alice, alice_key, live_worker, settings):
    settings.LENSWEB_MAX_POSITIONS_PER_DAY = 10
    assert len(token_ids("a b c d e")) == 5
    assert (
        api.post("/api/v1/analyses", {"text": "a b c d e"}, key=alice_key).status_code == 202
    )  # 5 positions
    assert api.post("/api/v1/analyses", {"text": "a b c d e"}, key=alice_key).status_code == 202  # 10
    over = api.post("/api/v1/analyses", {"text": "a"}, key=alice_key)
    assert over.status_code == 429 and error_of(over)["code"] == "quota_exceeded"
    assert "10 of your 10 positions" in error_of(over)["message"]
    seconds = int(over["Retry-After"])
    assert 1 <= seconds <= 86_400
    # Yesterday's analyses do not count.
    Analysis.objects.update(created_at=timezone.now() - timedelta(days=1))
    assert api.post("/api/v1/analyses", {"text": "a"}, key=alice_key).status_code == 202


def test_cancelled_analyses_still_count_against_the_quota(api, alice, alice_key, live_worker, settings):
    """The cap counts what was asked for today, so cancel-and-resubmit cannot go around it."""
    settings.LENSWEB_MAX_POSITIONS_PER_DAY = 5
    job_id = api.post("/api/v1/analyses", {"text": "a b c d e"}, key=alice_key).json_body["id"]  # 5 positions
    api.delete(f"/api/v1/analyses/{job_id}", key=alice_key)
    assert api.post("/api/v1/analyses", {"text": "a"}, key=alice_key).status_code == 429


def test_daily_generation_token_quota(api, alice_key, live_worker, settings):
    settings.LENSWEB_MAX_GENERATED_TOKENS_PER_DAY = 100
    body = {"text": "x", "options": {"n": 2, "max_new_tokens": 40}}
    assert api.post("/api/v1/generations", body, key=alice_key).status_code == 202
    over = api.post("/api/v1/generations", body, key=alice_key)
    assert over.status_code == 429 and error_of(over)["code"] == "quota_exceeded"


def test_queued_generation_cap(api, alice_key, live_worker, settings):
    settings.LENSWEB_MAX_QUEUED_GENERATIONS_PER_USER = 1
    assert api.post("/api/v1/generations", {"text": "x"}, key=alice_key).status_code == 202
    over = api.post("/api/v1/generations", {"text": "y"}, key=alice_key)
    assert over.status_code == 429 and error_of(over)["code"] == "queue_full"


def test_quota_of_zero_means_no_cap(api, alice_key, live_worker, settings):
    settings.LENSWEB_MAX_POSITIONS_PER_DAY = 0
    assert api.post("/api/v1/analyses", {"text": "a " * 50}, key=alice_key).status_code == 202


def test_browser_submissions_count_against_the_api_quota(api, alice, alice_key, live_worker, settings):
    settings.LENSWEB_MAX_POSITIONS_PER_DAY = 6
    assert len(token_ids("a b c d e f")) == 6
    services.do_submit(alice, None, {"text": "a b c d e f"}, {})  # 6 positions, through the core
    assert api.post("/api/v1/analyses", {"text": "a"}, key=alice_key).status_code == 429
