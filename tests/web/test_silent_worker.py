"""A running job whose worker stopped answering: its card says so, and when it goes back to the queue, instead
of an ETA. The server renders what it knows; the page counts on by itself (a dead worker sends nothing)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from lensweb.analyses import fragments, rates, services
from lensweb.analyses.models import Analysis, PositionRate
from tests.live import chromium, live_server, manage_shell

from .conftest import scaled, write_tiny_registry

TEXT = "one two three four five six"


@pytest.fixture
def running(alice, settings):
    settings.LENSWEB_HEARTBEAT_INTERVAL, settings.LENSWEB_STALE_AFTER = 4, 30
    job = services.do_submit(alice, None, {"text": TEXT}, {})
    services.claim_next_job(services.register_worker(device="cpu"))
    PositionRate.objects.create(lens_id=job.lens_id, options_key="k=1,salience", seconds_per_position=2.0)
    return Analysis.objects.get(pk=job.pk)


def heard(job, seconds_ago: float) -> Analysis:
    Analysis.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=seconds_ago))
    job = Analysis.objects.get(pk=job.pk)
    rates.attach([job])
    return job


@pytest.mark.django_db
def test_a_job_heard_from_lately_shows_its_eta_and_keeps_the_note_hidden(running):
    html = fragments.render_progress(heard(running, 1))
    assert re.search(r'<span class="eta"> · ETA \d+ s</span>', html), html
    note = re.search(r'<span class="silent-note"[^>]*>', html).group(0)
    assert " hidden" in note and 'data-after="10.0"' in note and 'data-requeue="30.0"' in note


@pytest.mark.django_db
def test_a_silent_workers_job_says_so_and_when_it_goes_back_to_the_queue(running):
    html = fragments.render_progress(heard(running, 18))
    assert re.search(r'<span class="eta" hidden>', html)
    note = re.search(r'<span class="silent-note"[^>]*>.*?</span>(?=</span>)', html).group(0)
    assert " hidden" not in note.split(">")[0]
    text = re.sub(r"<[^>]+>", "", note)
    assert "its worker stopped answering 18 s ago; it goes back to the queue in about 12 s" in text
    assert "resumes after its rows" in text
    late = re.sub(r"<[^>]+>", "", fragments.render_progress(heard(running, 45)))
    assert "goes back to the queue as soon as a worker looks" in late


@pytest.mark.browser
def test_the_card_counts_a_silent_worker_by_itself(tmp_path):
    """No worker runs: a job claimed by a worker that then says nothing. The page turns its ETA into the note
    once the silence passes 2.5 heartbeats, with no message from the server."""
    registry = write_tiny_registry(tmp_path)
    env = {
        "LENSWEB_LENS_REGISTRY": str(registry),
        "LENSWEB_EMBEDDED_WORKER": "false",
        "LENSWEB_HEARTBEAT_INTERVAL": "3",  # silent after 7.5 s: the page renders it still heard from
    }
    with (
        live_server(tmp_path, setup=[["ensure_demo_user"]], ready="/healthz", **env) as base,
        chromium() as browser,
    ):
        claim = (
            "from django.contrib.auth import get_user_model\n"
            "from lensweb.analyses import services\n"
            "demo = get_user_model().objects.get(username='demo')\n"
            f"services.do_submit(demo, None, {{'text': {TEXT!r}}}, {{}})\n"
            "services.claim_next_job(services.register_worker(device='cpu'))\n"
        )
        manage_shell(tmp_path, claim, **env)
        page = browser.new_page()
        page.set_default_timeout(scaled(30) * 1000)
        page.goto(f"{base}/")
        page.fill("#id_username", "demo")
        page.fill("#id_password", "lensweb-demo")
        page.click("button[type=submit]")
        note = page.locator(".job-progress .silent-note")
        note.wait_for(state="attached")
        age, after = (float(note.get_attribute(name)) for name in ("data-age", "data-after"))
        if age < after - 1:  # rendered while still heard from (a slow start may render it silent already)
            assert not note.is_visible()  # (no ETA yet: no rate measured on this server)
        page.wait_for_selector(".job-progress .silent-note:not([hidden])", timeout=scaled(20) * 1000)
        text = note.inner_text()
        assert re.search(
            r"its worker stopped answering \d+ s ago; it goes back to the queue in about \d+ s", text
        )
        first = int(re.search(r"answering (\d+) s", text).group(1))
        page.wait_for_function(
            "n => +document.querySelector('.job-progress .silent-for').textContent > n", arg=first
        )
