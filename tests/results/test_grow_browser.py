"""Debian's Chromium against a live `manage.py serve` (embedded worker, the tiny test lens): an analysis of
one chosen position, then the full-text view, where clicking a token without a row (shift-click for several,
Enter on a focused one) adds it to the same analysis and its row fills in, in the same view."""

from __future__ import annotations

import re

import pytest

from tests.conftest import scaled, write_tiny_registry
from tests.live import chromium, live_server, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TEXT = "The capital of France is Paris and the capital of Italy is Rome"
ROW = ".fulltext #f-{}:not(.queued):not(.unanalysed) .tip"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grow-live")
    with live_server(
        tmp,
        setup=[["ensure_demo_user"]],
        LENSWEB_LENS_REGISTRY=str(write_tiny_registry(tmp)),
        LENSWEB_HEARTBEAT_INTERVAL="1",
        LENSWEB_POLL_INTERVAL="0.5",
    ) as base:
        yield base


@pytest.fixture
def page(site):
    with chromium() as browser:
        page = browser.new_page()
        page.set_default_timeout(scaled(30) * 1000)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        sign_in(page, site)
        page.errors = errors
        yield page


def test_clicking_tokens_adds_them_and_their_rows_fill_in(page, site):
    page.fill("#id_text", TEXT)
    page.click("details.advanced summary")
    page.fill("#id_positions", "1")
    page.click("#analysis-form button[type=submit]")
    flash = page.wait_for_selector("[data-flash-for]").inner_text()
    analysis_id = int(re.search(r"#(\d+)", flash).group(1))
    page.goto(f"{site}/analyses/{analysis_id}/?view=fulltext")
    page.wait_for_selector(ROW.format(1), state="attached")
    assert page.locator(".fulltext .tb.unanalysed[role=button]").count() >= 10

    page.click("#f-3")  # one click: that token
    page.wait_for_selector(ROW.format(3), state="attached")

    page.click("#f-5", modifiers=["Shift"])  # shift-click: choose several, then "Analyse chosen"
    page.click("#f-7", modifiers=["Shift"])
    assert page.inner_text("#grow-chosen") == "Analyse chosen (2)"
    assert page.locator("#f-5.chosen").count() == 1
    page.click("#grow-chosen")
    page.wait_for_selector(ROW.format(5), state="attached")
    page.wait_for_selector(ROW.format(7), state="attached")

    page.focus("#f-9")  # the keyboard: Enter on a focused token
    page.keyboard.press("Enter")
    page.wait_for_selector(ROW.format(9), state="attached")

    page.wait_for_selector("#fulltext-progress", state="detached")  # done: the view stops following
    assert sorted(
        int(p)
        for p in page.eval_on_selector_all(
            ".fulltext .tb:not(.unanalysed)", "els => els.map(e => e.dataset.position || e.id.slice(2))"
        )
    ) == [1, 3, 5, 7, 9]
    assert page.errors == []
