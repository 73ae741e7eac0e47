"""Debian's Chromium under the Content-Security-Policy, against a live `manage.py serve` (daphne, embedded
worker, tiny test lens): the analysis page, a results permalink and the staff dashboard load with no
policy violation and no console error, and htmx still works (a job submitted by the form gets its card over
the socket; the results page swaps; the dashboard polls). A positive control proves violations are seen."""

from __future__ import annotations

import re

import pytest

from tests.live import chromium, live_server
from tests.web.conftest import scaled, write_tiny_registry

pytestmark = [pytest.mark.browser]

STAFF, PASSWORD = "sec-staff", "sec-staff-Long-1"
CREATE_STAFF = (
    "from django.contrib.auth.models import User; "
    f"User.objects.create_user({STAFF!r}, password={PASSWORD!r}, is_staff=True)"
)
# Runs before any page script (CDP, so the policy does not apply to it): every violation is reported out.
WATCH_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolation({directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile,
                         line: e.lineNumber, sample: e.sample, page: location.pathname});
});
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("csp-live")
    with live_server(
        tmp,  # the base settings: the CSP middleware is in every configuration
        setup=[["shell", "-c", CREATE_STAFF]],
        LENSWEB_LENS_REGISTRY=str(write_tiny_registry(tmp)),
        LENSWEB_POLL_INTERVAL="0.5",
        LENSWEB_HEARTBEAT_INTERVAL="1",
    ) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


class Watched:
    """A logged-in page whose CSP violations, console errors/warnings and page errors are collected."""

    def __init__(self, context, page):
        self.context, self.page = context, page
        self.violations: list[dict] = []
        self.console: list[str] = []
        self.errors: list[str] = []

    def clean(self):
        assert self.violations == [], self.violations
        assert self.console == [], self.console
        assert self.errors == [], self.errors


@pytest.fixture
def watched(browser, server):
    context = browser.new_context()
    watched = Watched(context, context.new_page())
    context.expose_binding("__cspViolation", lambda source, v: watched.violations.append(v))
    context.add_init_script(WATCH_VIOLATIONS)
    page = watched.page

    def on_console(m):
        if m.type in ("error", "warning"):  # the favicon is linked, so Chromium asks for no /favicon.ico
            watched.console.append(f"{m.type}: {m.text} ({m.location.get('url')}) on {page.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda e: watched.errors.append(str(e)))
    page.set_default_timeout(scaled(60) * 1000)
    page.goto(f"{server}/accounts/login/")
    page.fill("#id_username", STAFF)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#analysis-form")
    yield watched
    context.close()


def test_pages_under_the_policy_and_htmx_still_works(watched, server):
    page = watched.page
    response = page.goto(f"{server}/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe" not in csp

    # the analysis page: socket up (connect-src), the form posts through htmx, the card comes over the socket
    page.wait_for_selector("#socket-state.live")
    page.fill("#id_text", "The capital of France is Paris.")
    page.click("#analysis-form button[type=submit]")
    page.wait_for_selector("#analysis-form .flash.ok")
    job = int(re.search(r"#(\d+)", page.inner_text("#analysis-form .flash.ok")).group(1))
    page.wait_for_selector(f"#job-{job}")
    page.wait_for_selector(f"#status-{job} .badge-done")
    assert page.locator(f"#rows-{job} tr").count() >= 5
    # htmx did not inject its indicator <style> (the policy would have refused it)
    assert page.locator("head style").count() == 0

    # the results permalink: an htmx swap of #results-body (the sort header) and a tab change
    page.goto(f"{server}/analyses/{job}/")
    page.wait_for_selector("#results-table")
    page.click("button[data-sort=mse]")
    page.wait_for_function(
        "() => document.querySelector('#id_sort').value === 'mse' && "
        "document.querySelector('#results-body .count').textContent.includes('sorted by mse')"
    )
    page.click("label.tab:has(input[value=fulltext])")
    page.wait_for_selector("#results-body .fulltext")
    # a display preference: hx-post from a <fieldset>, no form token, only <body hx-headers>' X-CSRFToken
    with page.expect_response(lambda r: r.url.endswith("/results/preferences/")) as saved:
        page.select_option("#id_palette", "classic")
    assert saved.value.status == 204

    # the staff dashboard: it polls #monitoring-live every few seconds
    page.goto(f"{server}/monitoring/")
    stamp = page.inner_text(".mon-stamp")
    page.wait_for_function(
        "old => { const s = document.querySelector('.mon-stamp'); return s && s.textContent !== old; }",
        arg=stamp,
        timeout=scaled(20) * 1000,
    )

    # Django's admin (its own templates) and the settings page with its htmx forms
    page.goto(f"{server}/admin/")
    page.wait_for_selector("#site-name")
    page.goto(f"{server}/accounts/settings/")
    page.fill("#id_name", "csp")
    page.click("#api-keys button.primary")
    page.wait_for_selector("#new-api-key")
    watched.clean()


def test_the_policy_is_enforced_and_seen(watched, server):
    """Positive control: an inline script and an inline style are refused, and the test hears of it."""
    page = watched.page
    page.goto(f"{server}/")
    page.evaluate(
        """() => {
          const s = document.createElement("script"); s.textContent = "window.__ran = true"; document.body.append(s);
          const d = document.createElement("div"); d.setAttribute("style", "color: red"); document.body.append(d);
        }"""
    )
    page.wait_for_function("() => true")
    assert page.evaluate("() => window.__ran === undefined")
    page.wait_for_timeout(200)  # violation events are queued as a task
    directives = {v["directive"] for v in watched.violations}
    assert {"script-src-elem", "style-src-attr"} <= directives, watched.violations


def test_the_api_reference_renders_under_its_policy(watched, server):
    """/api/v1/docs: Swagger UI from vendored files, every operation listed with its curl example, and no
    violation or console error; its policy adds only data: images to the site's."""
    page = watched.page
    response = page.goto(f"{server}/api/v1/docs")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe" not in csp and "img-src 'self' data:" in csp
    page.wait_for_selector("#operations-analyses-submitAnalysis")
    for operation in ("listAnalyses", "submitAnalyses", "exportAnalysisCsv", "streamAnalysisEvents"):
        assert page.locator(f"#operations-analyses-{operation}").count() == 1, operation
    assert page.locator("#operations-generations-submitGeneration").count() == 1
    page.click("#operations-analyses-submitAnalysis .opblock-summary")
    page.wait_for_selector("#operations-analyses-submitAnalysis .opblock-description-wrapper code")
    curl = page.inner_text("#operations-analyses-submitAnalysis .opblock-description-wrapper")
    assert "curl -X POST" in curl and "Authorization: Bearer $LENSWEB_KEY" in curl
    # every request the page made stayed on this origin
    assert page.evaluate(
        "() => performance.getEntriesByType('resource').every(e => e.name.startsWith(location.origin))"
    )
    watched.clean()
