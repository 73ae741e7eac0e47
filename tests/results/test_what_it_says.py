"""What the results pages and cards say must fit the analysis: the Columns panel ticks only what was computed,
an untrained lens is not said to be "not trained on positions 0–5", one position's numbers are not a mean."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.template.loader import render_to_string
from django.urls import reverse

from lensweb.analyses.summaries import summarize_rows
from lensweb.results import display

from .conftest import create_analysis

pytestmark = [pytest.mark.django_db]


def page(client, analysis) -> str:
    return client.get(reverse("results:detail", args=[analysis.pk])).content.decode()


def column_box(html: str, column: str) -> str:
    return re.search(rf'<input type="checkbox" name="cols" value="{column}"[^>]*>', html).group(0)


def test_the_columns_panel_ticks_only_what_was_computed(client, alice, tiny_result_k1, tiny_result):
    client.force_login(alice)
    without_kl = page(client, create_analysis(alice, tiny_result_k1))  # KL not asked for
    assert " checked" not in column_box(without_kl, "kl") and " disabled" in column_box(without_kl, "kl")
    assert 'name="cols_offered" value="kl"' not in without_kl  # the viewer's KL preference is kept
    assert " checked" in column_box(without_kl, "mse") and " disabled" not in column_box(without_kl, "mse")
    with_kl = page(client, create_analysis(alice, tiny_result))
    assert " checked" in column_box(with_kl, "kl") and 'name="cols_offered" value="kl"' in with_kl


def test_an_untrained_lens_is_not_said_to_be_untrained_on_its_first_positions(client, alice, tiny_result):
    client.force_login(alice)
    trained = page(client, create_analysis(alice, tiny_result))
    assert display.UNTRAINED_NOTE in trained
    demo = page(client, create_analysis(alice, tiny_result, untrained=True))
    assert display.UNTRAINED_NOTE not in demo
    assert "Positions 0–5 are greyed: This lens was not trained at all; a trained one never learns" in demo
    rows = tiny_result[0]
    note = summarize_rows(rows, untrained=True)["note"]
    assert "not trained on" not in note and "0–5 left out: as a trained lens' would be" in note
    assert "0–5 left out: not trained on" in summarize_rows(rows)["note"]


def test_compare_says_an_untrained_lens_left_its_first_positions_out_as_a_trained_one_would(
    client, alice, tiny_result, tiny_result_k1
):
    client.force_login(alice)
    demo = create_analysis(alice, tiny_result, untrained=True)
    trained = create_analysis(alice, tiny_result_k1)
    html = unescape(client.get(reverse("results:compare") + f"?a={demo.pk}&b={trained.pk}").content.decode())
    assert html.count("0–5 left out: as a trained lens' would be") == 1  # A, the untrained side
    assert html.count("0–5 left out: not trained on") == 1  # B


def test_an_untrained_lens_chart_shades_its_first_positions_as_early_not_untrained(
    client, alice, tiny_result
):
    client.force_login(alice)
    charts = [
        re.search(
            r'<svg class="chart".*?</svg>', page(client, create_analysis(alice, tiny_result, **meta)), re.S
        )
        for meta in ({}, {"untrained": True})
    ]
    trained, demo = (chart.group(0) for chart in charts)
    assert ">untrained 0–5</text>" in trained and "the lens was never trained on them" in trained
    assert ">early 0–5</text>" in demo and "a trained lens never learns them" in demo
    assert "untrained 0–5" not in demo


def test_one_positions_numbers_are_not_called_a_mean(alice, tiny_result):
    rows = [r for r in tiny_result[0] if r["position"] in (2, 7)]  # one trained position (7)
    summary = summarize_rows(rows)
    assert summary["over"] == 1 and summary["note"].startswith("position 7 only")
    analysis = create_analysis(alice, tiny_result)
    analysis.metadata["summary"] = summary
    card = render_to_string("analyses/partials/job-summary.html", {"job": analysis})
    assert "mean" not in card.split("<span")[0] and "max mse" not in card and "mse <strong>" in card
    analysis.metadata["summary"] = summarize_rows(tiny_result[0])
    card = render_to_string("analyses/partials/job-summary.html", {"job": analysis})
    assert "mean mse <strong>" in card and "max mse" in card
