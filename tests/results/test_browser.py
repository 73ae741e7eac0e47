"""Debian's Chromium against a live `manage.py serve`: an analysis computed by the tiny test lens is
imported through the import page, then sorted, transposed, hovered, shared to a logged-out browser and
downloaded again."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lensweb.analyses import colours
from lensweb.analyses.models import Analysis
from lensweb.results.export import export_json
from tests.conftest import scaled
from tests.live import chromium, live_server, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    # nothing to compute: analyses arrive through the import page
    with live_server(
        tmp_path_factory.mktemp("results-live"),
        setup=[["ensure_demo_user"]],
        ready="/healthz",
        LENSWEB_EMBEDDED_WORKER="false",
    ) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def export_file(tiny_result, tmp_path_factory) -> tuple:
    """An export of a real tiny-lens analysis, written without a database (an unsaved Analysis)."""
    rows, metadata, timings, options = tiny_result
    analysis = Analysis(
        lens_id="tiny",
        input={"text": metadata["rendered_text"]},
        options=options,
        status="done",
        metadata=metadata,
        timings=timings,
    )
    path = tmp_path_factory.mktemp("export") / "tiny-analysis.json"
    path.write_bytes(export_json(analysis, rows))
    return path, rows


@pytest.fixture
def page(browser, site):
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(scaled(30) * 1000)
    sign_in(page, site)
    yield page
    context.close()


def import_and_open(page, site, export_file) -> int:
    path, _ = export_file
    page.goto(f"{site}/analyses/import/")
    page.set_input_files("#id_file", str(path))
    page.click("#import-form button[type=submit]")
    page.wait_for_url(re.compile(r"/analyses/history/"))
    assert "Imported 1 analysis." in page.inner_text(".messages")
    link = page.locator("table.history-table tbody tr").first.locator("td.num a")
    analysis_id = int(link.inner_text())
    link.click()
    page.wait_for_selector("#results-table")
    page.wait_for_function("window.htmx !== undefined")
    return analysis_id


def first_rows(page, n=3) -> list[str]:
    return page.eval_on_selector_all("#results-table tbody tr", f"els => els.slice(0, {n}).map(e => e.id)")


def test_sort_by_a_column_and_keep_it_on_reload(page, site, export_file):
    _, rows = export_file
    import_and_open(page, site, export_file)
    by_mse = [f"pos-{r['position']}" for r in sorted(rows, key=lambda r: r["mse"], reverse=True)]
    page.click("button[data-sort=mse]")
    # the sorted table replaces the old one (an htmx swap); its first row may be the old first row
    page.wait_for_selector("th[aria-sort=descending]:has(button[data-sort=mse])")
    assert first_rows(page) == by_mse[:3]
    assert "sort=mse" in page.url and "dir=desc" in page.url
    page.click("button[data-sort=mse]")  # again: ascending
    page.wait_for_selector("th[aria-sort=ascending]:has(button[data-sort=mse])")
    assert first_rows(page, 1) == [by_mse[-1]]
    page.reload()
    page.wait_for_selector("#results-table")
    assert first_rows(page, 1) == [by_mse[-1]]  # the state is in the URL: a reload keeps it


def test_toggle_the_transposed_view_and_its_column_width(page, site, export_file):
    import_and_open(page, site, export_file)
    page.click("label.tab:has(input[value=transposed])")
    page.wait_for_selector("#transposed")
    assert page.locator("#transposed .tcol").count() == len(export_file[1])
    assert page.locator("#results-table").count() == 0
    before = page.eval_on_selector("#t-7", "e => e.getBoundingClientRect().width")
    page.fill("#col-width", "200")  # a range input: fill sets the value and fires input
    after = page.eval_on_selector("#t-7", "e => e.getBoundingClientRect().width")
    assert before < after == 200
    page.click("label.tab:has(input[value=fulltext])")
    page.wait_for_selector("#fulltext")
    page.hover("#f-8")
    assert page.is_visible("#f-8 .tip")


def test_hover_a_word_and_read_its_salience(page, site, export_file):
    _, rows = export_file
    import_and_open(page, site, export_file)
    word = page.locator("#pos-7 .w").nth(2)
    word.hover()
    page.wait_for_selector("#word-tip:not([hidden])")
    tip = page.inner_text("#word-tip")
    expected = colours.fmt(rows[7]["token_salience"][2], signed=True)
    assert f"salience {expected}" in tip
    assert f"token id {rows[7]['explanation_token_ids'][2]}" in tip


def test_candidates_unfold(page, site, export_file):
    _, rows = export_file
    import_and_open(page, site, export_file)
    page.click("#pos-9 details.cands summary")
    page.wait_for_selector("#pos-9 ol.cand-list li")
    assert page.locator("#pos-9 ol.cand-list li").count() == len(rows[9]["candidates"])


def test_column_choice_is_remembered(page, site, export_file):
    analysis_id = import_and_open(page, site, export_file)
    assert page.is_visible("th:has(button[data-sort=relative_rmse])")
    with page.expect_response(lambda r: "/results/preferences/" in r.url and r.status == 204):
        page.uncheck("input[name=cols][value=relative_rmse]")
    page.goto(f"{site}/analyses/{analysis_id}/")
    page.wait_for_selector("#results-table")
    assert page.locator("th:has(button[data-sort=relative_rmse])").count() == 0
    with page.expect_response(lambda r: "/results/preferences/" in r.url):
        page.check("input[name=cols][value=relative_rmse]")


def test_a_shared_link_opens_logged_out_until_turned_off(page, browser, site, export_file):
    import_and_open(page, site, export_file)
    page.click("#share-on")
    page.wait_for_selector("#share-url")
    link = page.input_value("#share-url")
    assert re.search(r"/s/[A-Za-z0-9_-]{32}/$", link)
    stranger = browser.new_context()
    try:
        other = stranger.new_page()
        other.goto(link)
        assert "/accounts/login/" not in other.url
        other.wait_for_selector("#results-table")
        assert "shared, read-only" in other.inner_text("h1")
        assert other.locator("#share-box").count() == 0
        page.click("#share-off")
        page.wait_for_selector("#share-on")
        response = other.goto(link)
        assert response.status == 404
    finally:
        stranger.close()


def test_download_the_export_again(page, site, export_file):
    path, _ = export_file
    import_and_open(page, site, export_file)
    with page.expect_download() as download:
        page.click("#export-json")
    content = Path(download.value.path()).read_bytes()
    original = path.read_bytes()
    assert json.loads(content)["data"] == json.loads(original)["data"]
    assert content.split(b'\n "data": [', 1)[1] == original.split(b'\n "data": [', 1)[1]
    with page.expect_download() as download:
        page.click("#export-csv")
    assert download.value.suggested_filename.endswith(".csv")
