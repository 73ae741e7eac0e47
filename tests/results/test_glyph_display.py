"""Tokens that are parts of one split glyph (metadata["glyphs"], recorded by the worker: tests/web/test_glyphs.py)
as the pages show them: one vocabulary (analyses.rowview) for the live card, the results views and compare;
malformed spans (an imported file may hold anything) are left out, never an error."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from lensweb.analyses.rowview import glyph_parts, row_view, words_html
from lensweb.results import display

from .conftest import create_analysis

FFFD = "\ufffd"


def test_glyph_parts_reads_good_spans_and_leaves_malformed_ones_out():
    parts = glyph_parts(
        {
            "glyphs": [
                [3, 5, "é"],
                [4, 6, "x"],  # overlaps the first: left out
                [7, 10, " ☕"],
                [True, 3, "b"],
                [-1, 1, "c"],
                [20, 21, "one token"],
                [30, 60, "too long a span"],
                [40, 42, "x" * 100],
                [50, 52, 7],
                "junk",
                [1, 2],
            ]
        }
    )
    assert sorted(parts) == [3, 4, 7, 8, 9]
    assert (parts[3].text, parts[3].mark, parts[4].mark, parts[9].mark) == ("é", "1/2", "2/2", "3/3")
    assert parts[7].text == " ☕" and parts[7].start == 7 and parts[8].first is False
    assert glyph_parts({"glyphs": "nope"}) == {} == glyph_parts(None) == glyph_parts({})


def test_a_row_shows_its_glyph_with_its_part_and_keeps_its_own_token():
    glyphs = glyph_parts({"glyphs": [[4, 6, "é"]]})
    data = {"position": 5, "token": FFFD, "explanation": "x", "mse": 0.1, "explanation_tokens": ["x"]}
    view = row_view(data, 0, glyphs)
    assert (view.token, view.raw_token, view.glyph.mark) == ("é", FFFD, "2/2")
    assert str(view.token_html) == 'é<span class="gpart">2/2</span>'
    assert view.token_title == f"bytes of é split over positions 4–5; this token alone decodes to {FFFD}"
    assert (view.fulltext_text, view.glyph_cls) == ("", " glyph gjoin")
    assert f"[{FFFD}]</span>" in words_html(view, display.build_scale("salience", [], fitted=False), True)
    plain = row_view({**data, "position": 6, "token": "<b>"}, 0, glyphs)
    assert plain.glyph is None and str(plain.token_html) == "&lt;b&gt;"
    assert plain.token_title == plain.glyph_cls == ""


def test_full_text_tokens_without_a_row_are_grouped_too():
    glyphs = glyph_parts({"glyphs": [[1, 3, "😀"]]})
    cells = display.fulltext_cells([], ["a", FFFD, FFFD, "b"], {2}, glyphs)
    assert [(c.token, c.fulltext_text, c.glyph_cls, c.state) for c in cells] == [
        ("a", "a", "", "unanalysed"),
        ("😀", "😀", " glyph gfirst", "unanalysed"),
        ("😀", "", " glyph gjoin", "queued"),
        ("b", "b", "", "unanalysed"),
    ]


@pytest.mark.django_db
def test_results_page_and_compare_show_the_glyph_and_exports_keep_the_tokens(
    client, alice, tiny_result, tiny_result_k1
):
    rows = tiny_result[0]
    raw = [r["token"] for r in rows[:3]]
    glyphs = [[1, 3, "é"], "junk", [2, 99, "bad"]]
    analysis = create_analysis(alice, tiny_result, glyphs=glyphs)
    other = create_analysis(alice, tiny_result_k1)
    client.force_login(alice)
    page = client.get(reverse("results:detail", args=[analysis.pk])).content.decode()
    assert '<td class="tok" title="bytes of é split over positions 1–2; this token alone decodes to ' in page
    assert 'é<span class="gpart">1/2</span></td>' in page and 'é<span class="gpart">2/2</span></td>' in page
    compared = client.get(reverse("results:compare") + f"?a={analysis.pk}&b={other.pk}").content.decode()
    assert 'é<span class="gpart">1/2</span></td>' in compared
    exported = json.loads(client.get(reverse("results:export_json", args=[analysis.pk])).content)
    assert [r["token"] for r in exported["data"][:3]] == raw
