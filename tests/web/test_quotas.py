"""The daily position cap, as the browser's submit path will call it (see the report for the hook)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from lensweb.analyses import services
from lensweb.analyses.errors import QuotaExceeded
from lensweb.analyses.models import Analysis
from lensweb.analyses.quotas import check_daily_positions, day_bounds, positions_today
from tests.conftest import token_ids

pytestmark = pytest.mark.django_db


def test_positions_today_sums_todays_analyses_of_the_user(alice, bob):
    assert [len(token_ids(t)) for t in ("a b c d", "a b", "a b c d e f")] == [4, 2, 6]
    services.do_submit(alice, None, {"text": "a b c d"}, {})  # 4 positions
    services.do_submit(alice, None, {"text": "a b"}, {})  # 2
    services.do_submit(bob, None, {"text": "a b"}, {})
    old = services.do_submit(alice, None, {"text": "a b c d e f"}, {})
    Analysis.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=1))
    assert positions_today(alice) == 6


def test_the_cap(alice, settings):
    settings.LENSWEB_MAX_POSITIONS_PER_DAY = 6
    services.do_submit(alice, None, {"text": "a b c d"}, {})  # 4 positions
    check_daily_positions(alice, 2)
    with pytest.raises(QuotaExceeded) as exc:
        check_daily_positions(alice, 3)
    assert isinstance(exc.value, services.SubmissionError)  # the browser form shows it like any refusal
    assert exc.value.field is None and "4 of your 6 positions" in exc.value.message
    assert 1 <= exc.value.retry_after <= 86_400


def test_day_bounds():
    start, seconds = day_bounds(timezone.now().replace(hour=23, minute=59, second=0, microsecond=0))
    assert start.hour == 0 and start.minute == 0 and seconds == 60
