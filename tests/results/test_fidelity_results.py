"""The fidelity columns on the results side (issue 14): cos and ‖A‖ in the table, the flag for a norm far
outside the lens' usual range in the table, the full text and the chart, the exports, summaries that leave
out the untrained positions and the outliers and say so, and analyses stored before any of it still
rendering (empty cells)."""

from __future__ import annotations

import copy
import csv
import io
import json
import re

import pytest
from django.urls import reverse
from django.utils.html import escape

from lensweb.analyses.colours import fmt
from lensweb.analyses.models import Analysis
from lensweb.analyses.services import summarize_rows
from lensweb.results import display, services
from lensweb.results.chart import metric_chart
from lensweb.results.export import export_csv, export_json
from lensweb.results.models import ResultsPreference

from .conftest import create_analysis

pytestmark = pytest.mark.django_db
FIELDS = ("cosine_similarity", "activation_norm", "activation_norm_outlier")
FLAGGED = (0, 9)  # position 0 and an attention sink, as the demo lens has them


@pytest.fixture
def owner_client(client, alice):
    client.force_login(alice)
    return client


def page(client, analysis, query="") -> str:
    response = client.get(reverse("results:detail", args=[analysis.pk]) + query)
    assert response.status_code == 200
    return response.content.decode()


def table_row(html: str, position: int) -> str:
    return re.search(rf'<tr id="pos-{position}".*?</tr>', html, re.S).group(0)


def metric_cells(row_html: str) -> list[str]:
    return re.findall(r'<td class="num">([^<]*)</td>', row_html)[1:]  # the first is the position


def norm_cell(row_html: str) -> str:
    return re.search(r'<td class="num norm">(.*?)</td>', row_html, re.S).group(1)


def flagged_result(result):
    """The tiny lens' result with two rows flagged as the demo lens flags them, with an mse to match."""
    rows, metadata, timings, options = copy.deepcopy(result)
    for row in rows:
        if row["position"] in FLAGGED:
            row["activation_norm_outlier"] = True
            row["mse"] = 420.0
    return rows, metadata, timings, options


def old_result(result):
    """As stored before the fidelity columns: no cos, ‖A‖ or flag, no usual range in the metadata."""
    rows, metadata, timings, options = copy.deepcopy(result)
    for row in rows:
        for key in FIELDS:
            row.pop(key)
    metadata.pop("activation_norm_range")
    return rows, metadata, timings, options


@pytest.fixture
def flagged(alice, tiny_result):
    return create_analysis(alice, flagged_result(tiny_result))


@pytest.fixture
def old(alice, tiny_result):
    analysis = create_analysis(alice, old_result(tiny_result))
    rows = services.rows_of(analysis)
    mses = [r["mse"] for r in rows]
    analysis.metadata["summary"] = {
        "rows": len(rows),
        "mean_mse": sum(mses) / len(mses),
        "max_mse": max(mses),
    }
    Analysis.objects.filter(pk=analysis.pk).update(metadata=analysis.metadata)
    return analysis


# --- the table ---------------------------------------------------------------------------------------------


def test_the_table_has_cos_and_norm_columns(owner_client, analysis):
    html = page(owner_client, analysis)
    assert 'data-sort="cosine_similarity"' in html
    assert f'<th class="num" title="{escape(display.COLUMN_TITLES["activation_norm"])}">‖A‖</th>' in html
    assert 'class="results-table n5' in html  # mse, rel. RMSE, cos, KL and ‖A‖: a grid column each
    for row in services.rows_of(analysis):
        cells = table_row(html, row["position"])
        assert metric_cells(cells) == [
            f"{row[m]:.4f}" for m in ("mse", "relative_rmse", "cosine_similarity", "kl")
        ]
        assert norm_cell(cells) == display.norm_text(row["activation_norm"]) != ""
        assert "norm-flag" not in cells  # the tiny random model has no outlier


def test_flagged_rows_carry_the_flag_in_the_table_and_the_full_text(owner_client, flagged):
    html = page(owner_client, flagged)
    for row in services.rows_of(flagged):
        cells = table_row(html, row["position"])
        if row["position"] in FLAGGED:
            assert "norm-outlier" in cells.split(">", 1)[0]
            flag = f'<span class="norm-flag" title="{escape(display.NORM_OUTLIER_NOTE)}">⚑'
            assert flag in norm_cell(cells)
        else:
            assert "norm-outlier" not in cells and "norm-flag" not in cells
    assert '<tr id="pos-0" class="early norm-outlier" title="The lenses were never trained' in html
    assert '<tr id="pos-9" class="norm-outlier">' in html
    fulltext = page(owner_client, flagged, "?view=fulltext")
    assert re.search(r'class="tb [^"]*norm-outlier" id="f-9"', fulltext)
    assert not re.search(r'class="tb [^"]*norm-outlier" id="f-8"', fulltext)


def test_the_norm_column_can_be_turned_off_and_an_older_preference_keeps_it_on(owner_client, alice, analysis):
    shown = ["mse", "relative_rmse", "cosine_similarity", "kl", "logit_lens"]
    html = page(owner_client, analysis, "?cols_sent=1&" + "&".join(f"cols={c}" for c in shown))
    assert '<td class="num norm">' not in html and 'class="results-table n4' in html
    ResultsPreference.objects.create(user=alice, columns=["mse", "kl", "logit_lens", "nla"])
    html = page(owner_client, analysis)
    assert '<td class="num norm">' in html  # saved before ‖A‖ existed: it says nothing about it
    owner_client.post(
        reverse("results:preferences"),
        {"cols_sent": "1", "cols": ["mse"], "cols_offered": [*display.FAMILY_METRICS["lens"], "logit_lens"]},
    )
    assert '<td class="num norm">' not in page(owner_client, analysis)  # now it was chosen: off


def test_the_metadata_box_states_the_usual_norm_range(owner_client, analysis):
    usual = analysis.metadata["activation_norm_range"]
    expected = (
        f"{display.norm_text(usual['median'])} (flagged outside {display.norm_text(usual['low'])}–"
        f"{display.norm_text(usual['high'])})"
    )
    assert f"<dt>usual ‖A‖</dt><dd>{expected}</dd>" in page(owner_client, analysis)


# --- the chart ---------------------------------------------------------------------------------------------


def test_the_chart_marks_flagged_positions_and_tells_cos_and_norm(tiny_result):
    rows = flagged_result(tiny_result)[0]
    svg = str(metric_chart(rows))
    assert svg.count('class="norm-flag"') == len(FLAGGED) and "▼ ‖A‖ outlier" in svg
    row = rows[7]
    tip = (
        f"7 “{display.visible(row['token'])}”: mse {fmt(row['mse'])}, KL {fmt(row['kl'])}, "
        f"cos {fmt(row['cosine_similarity'])}, ‖A‖ {fmt(row['activation_norm'])}</title>"
    )
    assert tip in svg
    assert "(outlier)</title>" in svg
    plain = str(metric_chart(tiny_result[0]))
    assert "norm-flag" not in plain and "‖A‖ outlier" not in plain


# --- exports -----------------------------------------------------------------------------------------------


def test_exports_carry_the_fidelity_fields(flagged):
    rows = services.rows_of(flagged)
    document = json.loads(export_json(flagged, rows))
    for out, row in zip(document["data"], rows, strict=True):
        assert [out[k] for k in FIELDS] == [row[k] for k in FIELDS]
    assert document["metadata"]["activation_norm_range"] == flagged.metadata["activation_norm_range"]
    table = list(csv.reader(io.StringIO(export_csv(flagged, rows).decode("utf-8"))))
    assert table[0][-3:] == list(FIELDS)
    for line, row in zip(table[1:], rows, strict=True):
        assert float(line[-3]) == row["cosine_similarity"] and float(line[-2]) == row["activation_norm"]
        assert line[-1] == str(row["activation_norm_outlier"])


# --- analyses stored before the fidelity columns -----------------------------------------------------------


def test_old_rows_render_everywhere_with_empty_cells(owner_client, alice, old, analysis):
    html = page(owner_client, old)
    for position in (0, 7):
        cells = table_row(html, position)
        assert metric_cells(cells)[2] == "" and norm_cell(cells) == ""
    assert "usual ‖A‖" not in html and "norm-flag" not in html
    for view in ("transposed", "fulltext"):
        page(owner_client, old, f"?view={view}")
    compare = owner_client.get(reverse("results:compare") + f"?a={old.pk}&b={analysis.pk}")
    assert compare.status_code == 200
    document = json.loads(export_json(old, services.rows_of(old)))
    assert all(out[k] is None for out in document["data"] for k in FIELDS)
    table = list(csv.reader(io.StringIO(export_csv(old, services.rows_of(old)).decode("utf-8"))))
    assert table[0][-3:] == list(FIELDS) and all(line[-3:] == ["", "", ""] for line in table[1:])
    svg = str(metric_chart(services.rows_of(old)))
    assert "<circle" in svg and "cos " not in svg and "‖A‖" not in svg


# --- summaries ---------------------------------------------------------------------------------------------


def test_a_summary_leaves_out_the_untrained_positions_and_the_outliers(flagged):
    rows = services.rows_of(flagged)
    summary = summarize_rows(rows)
    kept = [r for r in rows if r["position"] >= 6 and r["position"] not in FLAGGED]
    assert summary["rows"] == len(rows)
    assert summary["mean_mse"] == pytest.approx(sum(r["mse"] for r in kept) / len(kept))
    assert summary["max_mse"] == max(r["mse"] for r in kept) < 420
    assert summary["mean_cosine_similarity"] == pytest.approx(
        sum(r["cosine_similarity"] for r in kept) / len(kept)
    )
    last = rows[-1]["position"]
    assert summary["note"] == (
        f"positions 6–{last}; positions 0–5 left out: not trained on; "
        "position 9 left out: ‖A‖ far outside the lens' usual range"
    )


def test_a_short_text_says_none_of_it_was_trained_on():
    rows = [{"position": p, "mse": m} for p, m in ((0, 420.0), (1, 4.0), (2, 6.0))]
    assert summarize_rows(rows)["note"] == "positions 0–2, none trained on (training starts at position 6)"
    rows[0]["activation_norm_outlier"] = True
    summary = summarize_rows(rows)
    assert summary["mean_mse"] == 5.0
    assert summary["note"] == (
        "positions 1–2, none trained on (training starts at position 6); "
        "position 0 left out: ‖A‖ far outside the lens' usual range"
    )


def test_cards_history_and_compare_say_what_the_mean_is_over(owner_client, flagged, analysis, old):
    flagged.metadata["summary"] = summarize_rows(services.rows_of(flagged))
    Analysis.objects.filter(pk=flagged.pk).update(metadata=flagged.metadata)
    note = flagged.metadata["summary"]["note"]
    card = owner_client.get(reverse("analyses:card", args=[flagged.pk])).content.decode()
    assert f"mean mse <strong>{flagged.metadata['summary']['mean_mse']:.4f}</strong>" in card
    assert f"({note})</span>" in card.replace("&#x27;", "'")
    old_card = owner_client.get(reverse("analyses:card", args=[old.pk])).content.decode()
    assert "(all positions, the untrained first ones included)</span>" in old_card

    history = owner_client.get(reverse("results:history")).content.decode().replace("&#x27;", "'")
    assert f'<span title="mean mse, {note}">{flagged.metadata["summary"]["mean_mse"]:.4f}</span>' in history
    assert "Means leave out the positions the lens was never trained on" in history
    old_row = re.search(rf'<tr id="history-{old.pk}">.*?</tr>', history, re.S).group(0)
    new_row = re.search(rf'<tr id="history-{flagged.pk}">.*?</tr>', history, re.S).group(0)
    assert 'class="old-mean"' in old_row and 'class="old-mean"' not in new_row

    compare = owner_client.get(reverse("results:compare") + f"?a={flagged.pk}&b={analysis.pk}")
    html = compare.content.decode().replace("&#x27;", "'")
    assert f'<p class="muted summary-note">Means over {note}.</p>' in html
    rows = services.rows_of(flagged)
    kept = [r["mse"] for r in rows if r["position"] >= 6 and r["position"] not in FLAGGED]
    assert f"<p>mean mse <strong>{sum(kept) / len(kept):.4f}</strong></p>" in html
