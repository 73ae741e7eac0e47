"""What a researcher meets on a phone and in a long text: every page fits 390 px with no horizontal scroll, the
full-text view wraps like prose at 1280 px with its hover box on screen, and dark mode applies."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from tests.live import chromium, live_server, manage_shell

from .conftest import scaled, write_tiny_registry

pytestmark = [pytest.mark.browser]

PARAGRAPH = (
    "The old lighthouse keeper climbed the spiral stairs every evening, carrying a brass lantern and a flask of "
    "tea, and from the top he watched the fishing boats come home across the grey water of the bay."
)
SEED = """
import json
from django.contrib.auth import get_user_model
from lensweb.analyses import services
from lensweb.results import services as results
demo = get_user_model().objects.get(username="demo")
long = services.do_submit(demo, None, {"text": %(long)r}, {"kl": True, "logit_lens": True})
other = services.do_submit(demo, None, {"text": "Bees make honey."}, {})
generation = services.do_submit_generation(demo, None, {"text": "Once upon a time"}, {"max_new_tokens": 4})
link = results.do_share(demo, long.pk)
print(json.dumps({"long": long.pk, "other": other.pk, "generation": generation.pk, "token": link.token}))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layout")
    env = {"LENSWEB_LENS_REGISTRY": str(write_tiny_registry(tmp)), "LENSWEB_POLL_INTERVAL": "0.5"}
    with live_server(tmp, setup=[["ensure_demo_user"]], **env) as base:
        out = manage_shell(tmp, SEED % {"long": " ".join([PARAGRAPH] * 3)}, **env)
        yield base, json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def signed_in(browser, base, **context):
    page = browser.new_context(**context).new_page()
    page.set_default_timeout(scaled(60) * 1000)
    page.goto(f"{base}/")
    page.fill("#id_username", "demo")
    page.fill("#id_password", "lensweb-demo")
    page.click("button[type=submit]")
    page.wait_for_selector("#analysis-form")
    return page


def pages(ids) -> list[str]:
    long, other, generation, token = ids["long"], ids["other"], ids["generation"], ids["token"]
    return [
        "/",
        f"/analyses/{long}/",
        f"/analyses/{long}/?view=transposed",
        f"/analyses/{long}/?view=fulltext",
        f"/s/{token}/",
        "/analyses/history/",
        f"/analyses/compare/?a={long}&b={other}",
        "/analyses/import/",
        "/describe/",
        f"/generations/{generation}/",
        "/accounts/settings/",
        "/accounts/password/",
    ]


def wait_done(page, base, ids):
    """Both analyses have finished (the embedded worker runs them; their results pages say so on reload)."""
    deadline = time.monotonic() + scaled(240)
    for job in (ids["long"], ids["other"]):
        while True:
            page.goto(f"{base}/analyses/{job}/")
            if page.locator(".badge-done").count():
                break
            assert time.monotonic() < deadline, f"analysis {job} did not finish"
            page.wait_for_timeout(1000)


OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')].filter(el => {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.right <= width + 1) return false;
    for (let up = el.parentElement; up; up = up.parentElement) {  // inside a box that scrolls by itself
      const s = getComputedStyle(up);
      if (['auto', 'scroll', 'hidden'].includes(s.overflowX) && up.getBoundingClientRect().right <= width + 1) return false;
    }
    return true;
  });
  return {scroll: document.documentElement.scrollWidth, width,
          wide: wide.slice(0, 5).map(el => el.tagName + '.' + el.className + '#' + el.id + ' ' + Math.round(el.getBoundingClientRect().right))};
}"""


def test_every_page_fits_a_390_px_phone_without_horizontal_scroll(site, browser):
    base, ids = site
    page = signed_in(browser, base, viewport={"width": 390, "height": 844})
    wait_done(page, base, ids)
    too_wide = {}
    for path in pages(ids):
        page.goto(f"{base}{path}")
        page.wait_for_load_state("networkidle")
        found = page.evaluate(OVERFLOW)
        if found["scroll"] > found["width"] or found["wide"]:
            too_wide[path] = found
    assert not too_wide, json.dumps(too_wide, indent=1)
    # The top bar stays two rows (brand and account, then the links), not the tagline a word a line.
    assert page.locator(".topbar .tagline").is_hidden()
    brand, account = (page.locator(f".topbar {part}").bounding_box() for part in (".brand", ".logout"))
    assert abs(brand["y"] - account["y"]) < brand["height"]
    assert page.locator(".topbar").bounding_box()["height"] < 4 * brand["height"]


def test_the_full_text_wraps_like_prose_and_its_hover_box_stays_on_screen(site, browser):
    base, ids = site
    page = signed_in(browser, base, viewport={"width": 1280, "height": 900})
    wait_done(page, base, ids)
    page.goto(f"{base}/analyses/{ids['long']}/?view=fulltext")
    # htmx's settle step copies no style attribute (one an extension adds would trip the CSP at every swap)
    assert "style" not in page.evaluate("htmx.config.attributesToSettle")
    box = page.locator(".fulltext").first
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    tokens = page.locator(".fulltext .tb")
    tops = {round(t["y"]) for t in tokens.evaluate_all("els => els.map(e => e.getBoundingClientRect())")}
    assert len(tops) > 3, "the full text did not wrap onto several lines"
    assert box.bounding_box()["width"] <= 1280
    last = tokens.nth(tokens.count() - 1)
    rightmost = max(range(tokens.count()), key=lambda i: tokens.nth(i).bounding_box()["x"])
    for token in (tokens.nth(rightmost), last):
        token.hover()
        tip = token.locator(".tip")
        tip.wait_for(state="visible")
        where = tip.bounding_box()
        assert where["x"] >= 0 and where["x"] + where["width"] <= 1280, where


def test_dark_mode_follows_the_system_setting(site, browser):
    base, ids = site
    light = signed_in(browser, base, color_scheme="light")
    dark = signed_in(browser, base, color_scheme="dark")
    background = "getComputedStyle(document.documentElement).backgroundColor"
    luminance = "c => { const [r, g, b] = c.match(/\\d+/g).map(Number); return (r + g + b) / 3; }"

    def lum(page):
        return page.evaluate(f"({luminance})({background})")

    assert lum(light) > 180 and lum(dark) < 70
    for page in (light, dark):
        page.goto(f"{base}/analyses/{ids['long']}/")
        page.wait_for_selector(".results-table")
    ink = "getComputedStyle(document.querySelector('.results-table td')).color"
    assert dark.evaluate(f"({luminance})({ink})") > 150  # light text on the dark page
    # the colour scales stay readable: a data cell's text contrasts with its own background
    contrast = """() => {
      const cell = document.querySelector('.results-table [class*=" q"], .results-table [class*=" d"]');
      if (!cell) return null;
      const lum = c => { const [r, g, b] = c.match(/\\d+/g).map(Number); return (r + g + b) / 3; };
      const s = getComputedStyle(cell);
      return Math.abs(lum(s.color) - lum(s.backgroundColor));
    }"""
    for page in (light, dark):
        found = page.evaluate(contrast)
        assert found is None or found > 60, found


def test_the_chart_downloads_as_svg_and_png(site, browser):
    base, ids = site
    page = signed_in(browser, base, viewport={"width": 1280, "height": 900}, accept_downloads=True)
    wait_done(page, base, ids)
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base}/analyses/{ids['long']}/")
    with page.expect_download() as got:
        page.click("[data-chart-download=svg]")
    assert got.value.suggested_filename == f"analysis-{ids['long']}-chart.svg"
    svg = Path(got.value.path()).read_text()
    assert svg.startswith("<?xml") and "<polyline" in svg and 'width="960"' in svg and "<title>" in svg
    with page.expect_download() as got:
        page.click("[data-chart-download=png]")
    png = Path(got.value.path()).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert (width, height) == (1920, 480)  # twice the chart's size
    assert errors == []  # the page's policy lets it draw the SVG (a blob: image), nothing else


def test_print_keeps_the_rows_and_their_colours_and_drops_the_controls(site, browser):
    base, ids = site
    page = signed_in(browser, base, viewport={"width": 1280, "height": 900})
    wait_done(page, base, ids)
    page.goto(f"{base}/analyses/{ids['long']}/")
    page.emulate_media(media="print")
    assert not page.locator("#results-controls").is_visible() and not page.locator(".topbar").is_visible()
    hidden = page.eval_on_selector_all(
        ".results-table tbody tr",
        "rows => rows.filter(r => getComputedStyle(r).contentVisibility === 'auto').length",
    )
    assert hidden == 0
    adjust = page.evaluate("getComputedStyle(document.querySelector('.results-table td')).printColorAdjust")
    assert adjust == "exact"
    assert page.pdf()[:4] == b"%PDF"


def test_the_keyboard_moves_between_rows_words_and_views(site, browser):
    base, ids = site
    page = signed_in(browser, base, viewport={"width": 1280, "height": 900})
    wait_done(page, base, ids)
    page.goto(f"{base}/analyses/{ids['long']}/?view=table&sort=position&dir=asc")
    focused = "() => { const a = document.activeElement; return a.id || a.className; }"
    page.keyboard.press("j")
    assert page.evaluate(focused) == "pos-0"
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    assert page.evaluate(focused) == "pos-1"
    page.keyboard.press("ArrowRight")  # into the row: its first word, its value in its accessible name
    label = page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert page.evaluate("document.activeElement.classList.contains('w')") and "salience" in label
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") != label
    page.keyboard.press("f")  # the full-text view, through the form (and the address bar)
    page.wait_for_selector("#fulltext")
    assert "view=fulltext" in page.url
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert page.evaluate(focused) == "f-1"
    page.keyboard.press("Enter")  # a token's row: the table, at its position
    page.wait_for_selector("#results-table")
    assert "view=table" in page.url and page.url.endswith("#pos-1")
    page.keyboard.press("r")
    page.wait_for_selector("#transposed")
    page.keyboard.press("t")
    page.wait_for_selector("#results-table")
