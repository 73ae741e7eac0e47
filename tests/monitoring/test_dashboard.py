"""The staff dashboard: who may see it, what the page and its polled partial hold, the lens page."""

import re

import pytest
from django.urls import reverse
from django.utils import timezone

from lensweb.analyses.models import Analysis, WorkerRecord
from lensweb.monitoring import requestlog
from tests.conftest import TINY_NAME

from .conftest import HTMX, make_job, make_worker, minutes

pytestmark = pytest.mark.django_db

PAGES = ["monitoring:dashboard", "monitoring:live", "monitoring:lenses"]


@pytest.mark.parametrize("name", ["monitoring:dashboard", "monitoring:lenses"])
def test_anonymous_users_are_sent_to_log_in(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_a_poll_after_the_session_ended_stops_polling(client):
    response = client.get(reverse("monitoring:live"), **HTMX)
    html = response.content.decode()
    assert response.status_code == 286  # htmx: swap, then stop polling
    assert html.lstrip().startswith('<div id="monitoring-live">') and "hx-trigger" not in html
    assert "Log in again" in html and "queued" not in html


@pytest.mark.parametrize("name", PAGES)
def test_researchers_are_refused(alice_client, name):
    assert alice_client.get(reverse(name)).status_code == 403


@pytest.mark.parametrize("name", PAGES)
def test_staff_see_the_pages(staff_client, name):
    assert staff_client.get(reverse(name)).status_code == 200


def test_only_staff_get_the_nav_link(client, alice, staff):
    link = f'href="{reverse("monitoring:dashboard")}"'
    client.force_login(alice)
    assert link not in client.get(reverse("analyses:index")).content.decode()
    client.force_login(staff)
    assert link in client.get(reverse("analyses:index")).content.decode()


def _live_state(alice):
    now = timezone.now()
    make_job(alice, Analysis.Status.QUEUED, now - minutes(3), total=12)
    make_job(alice, Analysis.Status.RUNNING, now - minutes(2), now - minutes(1), None, 40, 100)
    make_job(alice, Analysis.Status.FAILED, now - minutes(9), now - minutes(8), now - minutes(7), 5, 50)
    make_worker("gpu-1:77:abcd", 1, WorkerRecord.State.BUSY, host="gpu-1", device="cuda:0", lens_id="tiny")
    make_worker("gpu-2:78:dead", 600, WorkerRecord.State.IDLE, host="gpu-2")
    requestlog.record(
        client="api", method="POST", endpoint="/api/v1/analyses", kind="analysis", outcome="refused",
        reason="queue_full", status_code=429, user=alice, text_chars=42,
    )  # fmt: skip


def test_the_page_embeds_the_partial_that_polls_itself(staff_client, alice):
    _live_state(alice)
    html = staff_client.get(reverse("monitoring:dashboard")).content.decode()
    partial = staff_client.get(reverse("monitoring:live"), **HTMX).content.decode()
    # The partial replaces the element it is named after, and carries the polling with it.
    assert partial.lstrip().startswith('<div id="monitoring-live"')
    for part in (html, partial):
        assert f'hx-get="{reverse("monitoring:live")}"' in part
        assert 'hx-trigger="every 5s"' in part and 'hx-swap="outerHTML"' in part
    assert html.count('id="monitoring-live"') == 1
    assert 'href="/static/css/monitoring.css"' in html


def test_the_partial_shows_queue_workers_rates_usage_and_requests(staff_client, alice):
    _live_state(alice)
    html = staff_client.get(reverse("monitoring:live"), **HTMX).content.decode()
    assert re.search(r'id="mon-queue-depth">1<', html) and re.search(r'id="mon-running">1<', html)
    assert "gpu-1:77:abcd" in html and "cuda:0" in html and "3.0 GiB" in html
    assert "gpu-2:78:dead" in html and "(silent)" in html
    assert "100.0 %" in html  # the failed job is the hour's only finished one: error rate 100 %
    assert "no cache yet" in html
    assert "<svg" in html and "<polyline" in html
    assert "alice" in html and "queue_full" in html and "42 chars" in html


def test_no_inline_script_or_handler_on_the_monitoring_pages(staff_client, alice):
    _live_state(alice)
    for name in PAGES:
        html = staff_client.get(reverse(name)).content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"{name}: inline <script>"
        assert not re.search(r"\son[a-z]+\s*=", html), f"{name}: inline event handler"
        assert " style=" not in html, f"{name}: inline style"


def test_the_lens_page_lists_the_registry_and_who_holds_each_lens(staff_client):
    make_worker("gpu-1:77:abcd", 1, WorkerRecord.State.IDLE, lens_id="tiny")
    html = staff_client.get(reverse("monitoring:lenses")).content.decode()
    assert "<code>tiny</code>" in html and TINY_NAME in html and "gpu-1:77:abcd" in html


def test_a_broken_registry_is_shown_not_raised(staff_client, monkeypatch, tmp_path):
    registry = tmp_path / "lenses.toml"
    registry.write_text("[[lens]\nid = ")
    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(registry))
    response = staff_client.get(reverse("monitoring:lenses"))
    html = response.content.decode()
    assert response.status_code == 200 and f"lens registry {registry} is not valid TOML" in html


def test_line_chart_geometry():
    from lensweb.monitoring.charts import HEIGHT, PAD, WIDTH, line_chart

    chart = line_chart("t", "u", [0, 5, 10])
    xs, ys = zip(*(map(float, p.split(",")) for p in chart.points.split()), strict=True)
    assert xs == (PAD, WIDTH / 2, WIDTH - PAD)
    assert ys == (HEIGHT - PAD, HEIGHT / 2, PAD)  # SVG's y grows downwards: the peak is at the top
    assert (chart.peak, chart.last) == (10, 10)
    flat = line_chart("t", "u", [])
    assert flat.peak == 0 and flat.points == f"{PAD:.1f},{HEIGHT - PAD:.1f}"
