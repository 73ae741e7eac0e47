"""The Content-Security-Policy and the other headers on every kind of response, and templates that give the
policy nothing to block (no inline script, style or handler; a CSRF token in every POST form)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import reverse

from lensweb import security

pytestmark = [pytest.mark.django_db]

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
STATIC = Path(__file__).resolve().parents[2] / "static"


def directives(header: str) -> dict[str, list[str]]:
    out = {}
    for part in header.split(";"):
        name, *sources = part.split()
        out[name] = sources
    return out


def test_the_policy_text():
    assert security.POLICY == {
        "default-src": ("'self'",),
        "script-src": ("'self'",),
        "style-src": ("'self'",),
        "img-src": ("'self'",),
        "font-src": ("'self'",),
        "connect-src": ("'self'",),
        "object-src": ("'none'",),
        "base-uri": ("'self'",),
        "form-action": ("'self'",),
        "frame-ancestors": ("'none'",),
    }
    assert not any("unsafe" in s or s in ("*", "data:", "blob:") for v in security.POLICY.values() for s in v)


@pytest.mark.parametrize(
    "path", ["/accounts/login/", "/healthz", "/api/v1/openapi.json", "/static/css/app.css"]
)
def test_every_response_has_the_policy(client, path):
    response = client.get(path)
    assert response.status_code == 200
    csp = directives(response["Content-Security-Policy"])
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'", "ws://testserver"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
    assert csp["base-uri"] == ["'self'"] and csp["form-action"] == ["'self'"]
    if not path.startswith("/static/"):  # whitenoise answers above XFrameOptionsMiddleware; CSP covers it
        assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_the_socket_origin_follows_the_scheme(client):
    response = client.get("/healthz", secure=True)
    assert directives(response["Content-Security-Policy"])["connect-src"] == ["'self'", "wss://testserver"]


def test_a_disallowed_host_still_gets_a_policy(client):
    response = client.get("/healthz", headers={"host": "evil.example"})
    assert response.status_code == 400
    assert directives(response["Content-Security-Policy"])["connect-src"] == ["'self'"]


def test_report_uri_and_report_only(client, settings):
    settings.LENSWEB_CSP_REPORT_URI = "https://reports.example/csp"
    settings.LENSWEB_CSP_REPORT_ONLY = True
    response = client.get("/healthz")
    assert "Content-Security-Policy" not in response
    assert directives(response["Content-Security-Policy-Report-Only"])["report-uri"] == [
        "https://reports.example/csp"
    ]


def test_the_shared_page_keeps_its_stricter_referrer_policy(world):
    response = world.client("anonymous").get(reverse("results:shared", args=[world.share_token]))
    assert response["Referrer-Policy"] == "no-referrer"
    assert "Content-Security-Policy" in response


def test_only_results_pages_allow_blob_images_for_the_chart_download(world, settings):
    page = world.client("anonymous").get(reverse("results:shared", args=[world.share_token]))
    assert directives(page["Content-Security-Policy"])["img-src"] == ["'self'", "blob:"]
    assert directives(page["Content-Security-Policy"])["script-src"] == ["'self'"]
    other = world.client("anonymous").get("/accounts/login/")
    assert directives(other["Content-Security-Policy"])["img-src"] == ["'self'"]
    settings.LENSWEB_CSP_REPORT_ONLY = True  # the view's own policy follows the setting too
    page = world.client("anonymous").get(reverse("results:shared", args=[world.share_token]))
    assert "Content-Security-Policy" not in page and "blob:" in page["Content-Security-Policy-Report-Only"]


# --- templates and scripts: nothing inline for the policy to block -------------------------------------------

INLINE = [
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I), "an inline <script> (use a file under static/)"),
    (re.compile(r"<style\b", re.I), "a <style> element (use a stylesheet)"),
    (re.compile(r"\sstyle\s*=", re.I), "a style= attribute (use a class)"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "an on*= handler (delegate from a script file)"),
    (re.compile(r"\bhx-on", re.I), "hx-on (evaluated code)"),
    (re.compile(r"javascript:", re.I), "a javascript: URL"),
    (re.compile(r"\bhx-(vals|vars)\s*=\s*['\"]\s*(js|javascript):", re.I), "evaluated hx-vals"),
]


@pytest.mark.parametrize(
    "path", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES))
)
def test_templates_have_nothing_inline(path):
    text = path.read_text()
    found = [why for pattern, why in INLINE if pattern.search(text)]
    assert not found, f"{path.relative_to(TEMPLATES)}: {found}"


@pytest.mark.parametrize(
    "path", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES))
)
def test_every_post_form_has_a_csrf_token(path):
    for form in re.findall(r"<form\b.*?</form>", path.read_text(), re.S | re.I):
        opening = form[: form.index(">")]
        if re.search(r"method=\"?post", opening, re.I):
            assert "{% csrf_token %}" in form, f"{path.relative_to(TEMPLATES)}: {opening}"


def test_htmx_is_configured_for_the_policy():
    base = (TEMPLATES / "base.html").read_text()
    meta = re.search(r"<meta name=\"htmx-config\" content='([^']*)'>", base)
    assert meta, "base.html must configure htmx with a <meta name=htmx-config>"
    import json

    config = json.loads(meta.group(1))
    # htmx would inject a <style> for its indicator, and eval hx-on / js: values: both refused by the policy
    assert config["includeIndicatorStyles"] is False and config["allowEval"] is False
    assert ".htmx-indicator" in (STATIC / "css" / "app.css").read_text()
    assert 'hx-headers=\'{"X-CSRFToken": "{{ csrf_token }}"}\'' in base


@pytest.mark.parametrize("path", ["js/app.js", "results/results.js", "vendor/ws.js"])
def test_our_scripts_do_not_eval(path):
    text = (STATIC / path).read_text()
    assert not re.search(r"\beval\s*\(|new Function\s*\(|setTimeout\s*\(\s*['\"]|innerHTML\s*=", text), path
