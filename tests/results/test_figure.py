"""The full-text view as a standalone HTML figure: one file that opens with no server, coloured as the page is."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from lensweb.results import services

pytestmark = [pytest.mark.django_db]


def test_the_full_text_downloads_as_one_standalone_html_file(client, alice, analysis):
    client.force_login(alice)
    page = client.get(reverse("results:detail", args=[analysis.pk])).content.decode()
    url = reverse("results:fulltext_figure", args=[analysis.pk])
    assert url in page
    response = client.get(url, {"palette": "classic", "metric": "mse"})
    assert response["Content-Disposition"] == f'attachment; filename="analysis-{analysis.pk}-fulltext.html"'
    html = response.content.decode()
    assert html.startswith("<!doctype html>") and "<style>" in html
    assert "<script" not in html and "hx-" not in html and "<link" not in html  # nothing to fetch
    assert re.search(r"\.pal-classic \.q\d+\{background:#[0-9a-f]{6};color:#[0-9a-f]{3,6}\}", html)
    assert 'class="results-inner pal-classic"' in html
    rows = services.rows_of(analysis)
    spans = re.findall(r'<span class="tb (q\d+)?[^"]*" id="f-(\d+)"', html)
    assert [int(p) for _, p in spans] == [r["position"] for r in rows]
    assert all(cls for cls, _ in spans)  # every token coloured
    assert html.count('<span class="tip" role="tooltip">') == len(rows)
    assert "prefers-color-scheme: dark" not in html  # a figure stays on white paper


def test_a_shared_link_gives_the_same_figure_to_anyone(client, alice, analysis):
    token = services.do_share(alice, analysis.pk).token
    anonymous = client.get(reverse("results:shared_fulltext_figure", args=[token]))
    client.force_login(alice)
    own = client.get(reverse("results:fulltext_figure", args=[analysis.pk]))
    assert anonymous.status_code == own.status_code == 200
    body = re.compile(r'<main class="figure">.*</main>', re.S)
    assert body.search(anonymous.content.decode()).group(0) == body.search(own.content.decode()).group(0)
