"""Debian's Chromium against a live `manage.py serve` (embedded worker, the tiny test lens): on the results
table the owner unfolds "edit" under a row, rewrites its explanation, scores it, and sees the new numbers and
the difference to the lens' own explanation appear under the row when the worker has answered."""

from __future__ import annotations

import re

import pytest

from tests.conftest import scaled, write_tiny_registry
from tests.live import chromium, live_server, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TEXT = "The capital of France is Paris"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("score-live")
    with live_server(
        tmp,
        setup=[["ensure_demo_user"]],
        LENSWEB_LENS_REGISTRY=str(write_tiny_registry(tmp)),
        LENSWEB_HEARTBEAT_INTERVAL="1",
        LENSWEB_POLL_INTERVAL="0.5",
    ) as base:
        yield base


def test_edit_a_rows_explanation_score_it_and_see_the_new_numbers(site):
    with chromium() as browser:
        page = browser.new_page()
        page.set_default_timeout(scaled(30) * 1000)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        sign_in(page, site)
        page.fill("#id_text", TEXT)
        page.click("#analysis-form button[type=submit]")
        analysis_id = int(
            re.search(r"#(\d+)", page.wait_for_selector("[data-flash-for]").inner_text()).group(1)
        )
        for _ in range(int(scaled(60))):  # the table is the finished rows: reload until the job is done
            page.goto(f"{site}/analyses/{analysis_id}/?view=table")
            if page.locator("#pos-5 details.mine summary").count():
                break
            page.wait_for_timeout(1000)

        page.click("#pos-3 details.mine summary")
        box = page.wait_for_selector("#score-text-3")
        assert box.input_value()  # the lens' own explanation, to edit
        box.fill("a city in Europe")
        page.click("#score-3 button[type=submit]")
        done = page.wait_for_selector("#score-3 li.score.done", timeout=scaled(60) * 1000)
        text = done.inner_text()
        assert re.search(r"mse \d+\.\d{4}", text) and re.search(r"Δ mse [+-]\d+\.\d{4}", text), text
        assert "city" in page.inner_text("#score-3 li.score.done .score-words")
        assert errors == []
