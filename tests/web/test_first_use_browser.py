"""Issue 14's first-time-user fixes in Debian's Chromium against a live `manage.py serve`: a finished job's
flash goes, "Re-run with changes" refills the form, and the page keeps the last finished cards only, with
a link to History."""

from __future__ import annotations

import re

import pytest

from tests.live import chromium, live_server, sign_in

from .conftest import SLOW_TEXT, scaled, write_tiny_registry

pytestmark = [pytest.mark.browser]

KEEP = 2  # LENSWEB_RECENT_JOBS on this server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("first-use")
    with live_server(
        tmp,
        setup=[["ensure_demo_user"]],
        LENSWEB_LENS_REGISTRY=str(write_tiny_registry(tmp)),
        LENSWEB_RECENT_JOBS=str(KEEP),
        LENSWEB_ROWS_BUDGET="1",  # one position per batch: a long text stays running while we cancel
        LENSWEB_POLL_INTERVAL="0.5",
        LENSWEB_HEARTBEAT_INTERVAL="1",
        LENSWEB_SHARED_JOBS="1",  # a second job waits in the queue (else it joins the first one's batches)
    ) as base:
        yield base


@pytest.fixture
def page(server):
    with chromium() as browser:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(scaled(60) * 1000)
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        sign_in(page, server, then="#socket-state.live")
        page.console_errors = errors
        yield page
        context.close()


def submit(page, text: str) -> int:
    """Submit the analysis form; the job's number from its new flash, once its card is on the page."""
    before = page.locator("#analysis-form .flash.ok").all_inner_texts()
    page.fill("#id_text", text)
    page.click("#analysis-form button[type=submit]")
    flash = page.wait_for_function(
        "old => { const f = document.querySelector('#analysis-form .flash.ok');"
        " return f && !old.includes(f.innerText) && f.innerText; }",
        arg=before,
    ).json_value()
    job = int(re.search(r"Analysis #(\d+) queued", flash).group(1))
    page.wait_for_selector(f"#job-{job}")
    return job


def finished_cards(page) -> list[str]:
    return page.eval_on_selector_all(
        "#jobs > section.job .job-status[data-final]", "els => els.map(e => e.id)"
    )


def test_flash_goes_rerun_refills_and_the_page_keeps_the_last_finished(page, server):
    done = []
    for i, text in enumerate(
        ("The capital of France is Paris.", "Rome is in Italy.", "Bonn is on the Rhine.")
    ):
        if i == 2:  # the last with KL and the logit lens asked for, and best of 2
            page.click("details.advanced summary")
            page.check("#id_kl")
            page.check("#id_logit_lens")
            page.fill("#id_best_of_k", "2")
        job = submit(page, text)
        page.wait_for_selector(f"#status-{job} .badge-done")
        # its "queued" flash goes once the card says it is done
        page.locator(f"[data-flash-for=analysis-{job}]").wait_for(state="detached")
        done.append(job)
    # three finished, KEEP kept: the first to finish left the page; History has it
    page.wait_for_function(
        "keep => document.querySelectorAll('#jobs .job-status[data-final]').length === keep", arg=KEEP
    )
    assert finished_cards(page) == [f"status-{done[2]}", f"status-{done[1]}"]
    assert page.locator(f"#job-{done[0]}").count() == 0
    history = page.locator("#jobs-history a", has_text="History")
    assert history.is_visible() and history.get_attribute("href") == "/analyses/history/"
    kl_header = page.locator(f"#job-{done[2]} thead th", has_text="KL")
    assert kl_header.count() == 1 and page.locator(f"#job-{done[1]} thead th", has_text="KL").count() == 0

    # a reload shows the same: the last KEEP finished cards and the link
    page.reload()
    page.wait_for_selector("#socket-state.live")
    assert finished_cards(page) == [f"status-{done[2]}", f"status-{done[1]}"]
    assert page.locator("#jobs-history a").is_visible()

    # "Re-run with changes" on a card, from the other tab: the analysis form, refilled, in place
    page.click("#tab-generate")
    page.locator(f"#job-{done[2]} a.rerun").click()
    page.wait_for_selector(f"#analysis-form[data-rerun='{done[2]}']")
    # the tab switches on the swap's settle, a moment after the new form is in
    page.wait_for_selector("#tab-analyse[aria-selected='true']")
    assert page.is_visible("#analysis-form") and not page.is_visible("#generation-form")
    assert page.input_value("#id_text") == "Bonn is on the Rhine."
    assert page.is_checked("#id_kl") and page.is_checked("#id_logit_lens")
    assert page.input_value("#id_best_of_k") == "2"
    assert page.is_visible("#id_kl"), "Advanced opens when it holds the job's own values"
    assert page.url == f"{server}/", "swapped in place: the socket stays"
    # changed and submitted: a new analysis with the change
    page.fill("#id_text", "Bonn is on the Rhine, and Cologne too.")
    changed = submit(page, page.input_value("#id_text"))
    page.wait_for_selector(f"#status-{changed} .badge-done")
    assert page.locator(f"#job-{changed} .job-options").inner_text().startswith("best of 2")

    # the same address opens the page refilled (the results page links to it)
    page.goto(f"{server}/?rerun={done[1]}")
    assert page.input_value("#id_text") == "Rome is in Italy."
    assert not page.is_checked("#id_kl")
    assert page.console_errors == []


def test_a_cancelled_queued_card_shows_no_empty_table(page):
    running = submit(page, SLOW_TEXT)
    queued = submit(page, SLOW_TEXT + " Twice.")
    assert page.locator(f"#job-{queued} .table-wrap").is_visible()  # its rows will stream into it
    page.click(f"#status-{queued} button.cancel")
    page.wait_for_selector(f"#status-{queued} .badge-cancelled")
    assert page.locator(f"#job-{queued} .table-wrap").is_hidden()
    page.click(f"#status-{running} button.cancel")
    page.wait_for_selector(f"#status-{running} .badge-cancelled")
    assert page.console_errors == []
