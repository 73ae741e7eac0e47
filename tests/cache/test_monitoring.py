"""The dashboard's cache block, /metrics' cache gauges and the admin's list of entries."""

from __future__ import annotations

import pytest

from lensweb.analyses import services
from lensweb.cache import services as result_cache
from lensweb.cache.models import CachedResult
from lensweb.monitoring import metrics
from tests.accounts.conftest import staff  # noqa: F401  (fixture)

from .conftest import TEXT

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_dashboard_metrics_and_admin_show_the_cache(client, staff, alice, run_queue):  # noqa: F811
    services.do_submit(alice, None, {"text": TEXT}, {})
    run_queue()
    services.do_submit(alice, None, {"text": TEXT}, {})  # a hit
    entry = CachedResult.objects.get()
    text = metrics.render().decode()
    assert "lensweb_cache_entries 1.0" in text
    assert f"lensweb_cache_size_bytes {float(entry.size_bytes)}" in text
    assert "lensweb_cache_hits_total 1.0" in text
    client.force_login(staff)
    html = client.get("/monitoring/live/").content.decode()
    assert 'id="mon-cache"' in html and "1 results, 1 hits" in html and "50.0 % hit rate" in html
    staff.is_superuser = True
    staff.save()
    listing = client.get("/admin/result_cache/cachedresult/").content.decode()
    assert entry.key[:16] in listing and "tiny" in listing
    page = client.get(f"/admin/result_cache/cachedresult/{entry.pk}/change/")
    assert page.status_code == 200
    assert result_cache.size().hits == 1
