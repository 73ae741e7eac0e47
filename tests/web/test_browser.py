"""Debian's Chromium against a live `manage.py serve` (daphne, embedded worker, tiny test lens, one
position per batch so that jobs stream visibly). pytest-django's live_server has no websockets."""

from __future__ import annotations

import re

import pytest

from tests.live import chromium, live_server

from .conftest import scaled, write_tiny_registry

pytestmark = [pytest.mark.browser]

LONG_TEXT = "The capital of France is Paris, famous for the Eiffel Tower and its long history of art."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live")
    with live_server(
        tmp,
        setup=[["ensure_demo_user"]],
        LENSWEB_LENS_REGISTRY=str(write_tiny_registry(tmp)),
        LENSWEB_ROWS_BUDGET="1",
        LENSWEB_POLL_INTERVAL="0.5",
        LENSWEB_HEARTBEAT_INTERVAL="1",
        LENSWEB_SHARED_JOBS="1",  # a second job waits in the queue (else it joins the first one's batches)
    ) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser, server):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(scaled(60) * 1000)
    page.goto(f"{server}/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", "demo")
    page.fill("#id_password", "lensweb-demo")
    page.click("button[type=submit]")
    page.wait_for_selector("#analysis-form")
    page.wait_for_selector("#socket-state.live")
    yield page
    context.close()


def submit(page, text: str) -> int:
    """Submit the form and wait for its answer (the form comes back with "Analysis #N queued") and for
    the new card, which arrives over the socket."""
    previous = page.locator("#analysis-form .flash.ok").all_inner_texts()
    page.fill("#id_text", text)
    page.click("#analysis-form button[type=submit]")
    page.wait_for_function(
        "old => { const f = document.querySelector('#analysis-form .flash.ok');"
        " return f && !old.includes(f.innerText); }",
        arg=previous,
    )
    flash = page.inner_text("#analysis-form .flash.ok")
    job = int(re.search(r"#(\d+)", flash).group(1))
    page.wait_for_selector(f"#job-{job}")
    return job


def rows(page, job: int) -> list[str]:
    return page.eval_on_selector_all(f"#rows-{job} tr", "els => els.map(e => e.id)")


def badge(job: int) -> str:
    return f"#status-{job} .badge"


def test_submit_and_watch_rows_arrive_before_the_job_finishes(page):
    job = submit(page, "The capital of France is Paris.")
    # rows while the job still runs: streamed, not delivered at the end
    page.wait_for_function(
        "job => document.querySelectorAll(`#rows-${job} tr`).length >= 1 && "
        "document.querySelector(`#status-${job} .badge`).textContent.trim() === 'running'",
        arg=job,
    )
    assert page.locator(f"#progress-{job} progress").count() == 1
    page.wait_for_selector(f"{badge(job)}.badge-done")
    ids = rows(page, job)
    assert ids == [f"row-{job}-{p}" for p in range(len(ids))] and len(ids) >= 5
    # seven tokens: position 6 is the only one a lens is trained on, so its mse is no mean
    summary = page.inner_text(f"#summary-{job}")
    assert "mse " in summary and "position 6 only" in summary and "mean" not in summary
    first = page.locator(f"#row-{job}-0")
    assert "early" in first.get_attribute("class")
    assert first.get_attribute("title") == "the lenses were never trained on positions 0–5"
    assert page.locator(f"#status-{job} button.cancel").count() == 0


def test_the_status_strip_is_live_and_says_the_lens_is_loaded_after_a_job(page):
    page.wait_for_selector("#strip-conn.live")
    assert page.inner_text("#strip-conn") == "connected"
    page.wait_for_function(
        "() => document.querySelector('.strip-workers').textContent.includes('1 worker online')"
    )
    job = submit(page, "Bees make honey.")
    page.wait_for_selector(f"{badge(job)}.badge-done")
    page.wait_for_selector('.strip-lens[data-lens="tiny"][data-state="loaded"]')
    # the analysis page's own socket keeps its own line
    assert page.inner_text("#socket-state") == "live"


def test_cancel_a_queued_and_a_running_job(page):
    running = submit(page, " ".join([LONG_TEXT] * 4))  # ~80 one-position batches: still running at the click
    queued = submit(page, LONG_TEXT + " Again.")
    page.wait_for_selector(f"#queue-{queued} strong")  # it has a queue position
    page.click(f"#status-{queued} button.cancel")
    page.wait_for_selector(f"{badge(queued)}.badge-cancelled")
    assert rows(page, queued) == []
    page.wait_for_function("job => document.querySelectorAll(`#rows-${job} tr`).length >= 2", arg=running)
    page.click(f"#status-{running} button.cancel")
    page.wait_for_selector(f"{badge(running)}.badge-cancelled")
    partial = rows(page, running)
    total = int(page.locator(f"#progress-{running} progress").get_attribute("max"))
    assert 2 <= len(partial) < total
    assert "cancelled: partial rows" in page.inner_text(f"#summary-{running}")


def test_reload_mid_job_shows_rows_so_far_and_keeps_streaming(page):
    job = submit(page, LONG_TEXT)
    page.wait_for_function("job => document.querySelectorAll(`#rows-${job} tr`).length >= 3", arg=job)
    page.reload()
    assert len(rows(page, job)) >= 3  # server-rendered rows so far, before any socket message
    page.wait_for_selector("#socket-state.live")
    page.wait_for_selector(f"{badge(job)}.badge-done")
    ids = rows(page, job)
    total = int(page.locator(f"#progress-{job} progress").get_attribute("max"))
    assert ids == [f"row-{job}-{p}" for p in range(total)]


def test_chat_hint_is_offered_not_forced(page):
    page.fill("#id_text", '[{"role": "user", "content": "Hi"}]')
    page.wait_for_selector("#chat-hint:not([hidden])")
    assert page.is_checked("input[name=input_format][value=text]")
    page.click("[data-use-chat]")
    assert page.is_checked("input[name=input_format][value=chat]")
    assert page.locator("#chat-hint").is_hidden()
