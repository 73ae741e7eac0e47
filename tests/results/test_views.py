"""What the results pages show: sorting, filtering, remembered columns and colours, the three views
agreeing on colours, best-of-k candidates, metadata, the chart, history, delete, compare."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils.html import escape

from lensweb.analyses import colours
from lensweb.analyses.models import Analysis, AnalysisRow, WorkerRecord
from lensweb.results import services
from lensweb.results.models import ResultsPreference

from .conftest import create_analysis

pytestmark = pytest.mark.django_db
HTMX_BODY = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "results-body"}


@pytest.fixture
def owner_client(client, alice):
    client.force_login(alice)
    return client


def page(client, analysis, query="", **headers) -> str:
    response = client.get(reverse("results:detail", args=[analysis.pk]) + query, **headers)
    assert response.status_code == 200
    return response.content.decode()


def table_positions(html: str) -> list[int]:
    return [int(p) for p in re.findall(r'<tr id="pos-(\d+)"', html)]


def test_table_sorts_by_every_metric(owner_client, analysis):
    rows = services.rows_of(analysis)
    for metric in ("mse", "relative_rmse", "kl"):
        for direction in ("asc", "desc"):
            html = page(owner_client, analysis, f"?sort={metric}&dir={direction}")
            expected = sorted(rows, key=lambda r: r[metric], reverse=direction == "desc")
            assert table_positions(html) == [r["position"] for r in expected], (metric, direction)
            order = "descending" if direction == "desc" else "ascending"
            assert f'aria-sort="{order}"' in html
    assert table_positions(page(owner_client, analysis, "?sort=position&dir=desc")) == list(range(13, -1, -1))


def test_filter_by_token_text(owner_client, analysis):
    html = page(owner_client, analysis, "?q=paris")
    assert table_positions(html) == [5]
    assert "1 of 14 positions" in html
    assert "No positions" in page(owner_client, analysis, "?q=zzz")


def test_htmx_gets_only_the_results_body(owner_client, analysis):
    html = page(owner_client, analysis, "?view=transposed", **HTMX_BODY)
    assert html.lstrip().startswith('<div class="results-inner')
    assert 'id="transposed"' in html and "<html" not in html


def test_untrained_positions_are_greyed_with_the_reason(owner_client, analysis):
    html = page(owner_client, analysis)
    for position in range(6):
        assert (
            f'<tr id="pos-{position}" class="early" title="The lenses were never trained on positions 0–5'
            in html
        )
    assert '<tr id="pos-6">' in html


def test_explanation_words_carry_salience_and_id(owner_client, analysis):
    row = services.rows_of(analysis)[7]
    html = page(owner_client, analysis)
    scale = colours.build_scheme(services.rows_of(analysis))["salience"]
    for word, s, tid in zip(
        row["explanation_tokens"], row["token_salience"], row["explanation_token_ids"], strict=True
    ):
        span = f'<span class="w {scale.css_class(s)}" data-s="{colours.fmt(s, True)}" data-i="{tid}" tabindex="-1"'
        assert span in html
        # its value in its accessible name, for a keyboard or a screen reader (no hover needed)
        label = f"“{escape(word.strip() or word)}”, salience {colours.fmt(s, True)}, token id {tid}"
        assert f'{span} aria-label="{label}">' in html


def test_the_same_value_has_the_same_colour_in_every_view(owner_client, analysis):
    """Colours come from one scale: a word's class is identical in the table and the transposed view,
    and the full-text view uses the metric scale of the same module."""

    def words(html):
        return re.findall(r'<span class="w ([^"]*)" data-s="([^"]*)" data-i="(\d+)"', html)

    table = words(page(owner_client, analysis))
    transposed = words(page(owner_client, analysis, "?view=transposed"))
    assert table and sorted(table) == sorted(transposed)
    fulltext = page(owner_client, analysis, "?view=fulltext&metric=mse")
    scale = colours.build_scheme(services.rows_of(analysis))["mse"]
    for row in services.rows_of(analysis):
        assert f'class="tb {scale.css_class(row["mse"])}' in fulltext
    # the compare page colours the same words the same way when the scale is fixed
    fixed = words(page(owner_client, analysis, "?scale=fixed"))
    other = create_analysis(
        analysis.owner, (services.rows_of(analysis), dict(analysis.metadata), {}, analysis.options)
    )
    compared = owner_client.get(reverse("results:compare") + f"?a={analysis.pk}&b={other.pk}&scale=fixed")
    assert set(fixed) <= set(words(compared.content.decode()))


def test_fixed_and_fitted_scales_and_the_numeric_legend(owner_client, analysis):
    fitted = page(owner_client, analysis)
    assert "salience: fitted to this analysis" in fitted
    assert 'class="lbl">≤ -' in fitted and 'class="lbl">≥ +' in fitted  # numbers at both ends
    fixed = page(owner_client, analysis, "?scale=fixed")
    assert "salience: fixed, -0.500 to 0.500" in fixed
    assert "≤ -0.500" in fixed
    fulltext = page(owner_client, analysis, "?view=fulltext&metric=relative_rmse&scale=fixed")
    assert "relative RMSE: fixed, 0 to 1.50 (linear)" in fulltext


def test_palette_choice(owner_client, analysis):
    assert 'class="results-inner pal-safe"' in page(owner_client, analysis)
    assert 'class="results-inner pal-classic"' in page(owner_client, analysis, "?palette=classic")


def test_preferences_are_remembered_per_user(owner_client, client, alice, bob, analysis):
    response = owner_client.post(
        reverse("results:preferences"),
        {"cols_sent": "1", "cols": ["mse"], "scale": "fixed", "palette": "classic"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 204
    pref = ResultsPreference.objects.get(user=alice)
    assert pref.columns == ["mse"] and pref.scale == "fixed" and pref.palette == "classic"
    html = page(owner_client, analysis)
    assert "pal-classic" in html and "salience: fixed" in html
    assert (
        'data-sort="mse"' in html
        and 'data-sort="relative_rmse"' not in html
        and "logit lens</th>" not in html
    )
    # another user's page is untouched
    bob_analysis = create_analysis(
        bob, (services.rows_of(analysis), dict(analysis.metadata), {}, analysis.options)
    )
    client.force_login(bob)
    assert 'data-sort="relative_rmse"' in page(client, bob_analysis)


def test_best_of_k_candidates_unfold(owner_client, analysis):
    html = page(owner_client, analysis)
    url = reverse("results:candidates", args=[analysis.pk, 4])
    assert html.count('<details class="cands"><summary>2 candidates</summary></details>') == 14
    prefix = reverse("results:detail", args=[analysis.pk]) + "candidates/"
    assert f'data-candidates="{prefix}"' in html and url == prefix + "4/"  # results.js joins the two
    assert "<summary>2 candidates</summary>" in html
    fragment = owner_client.get(url).content.decode()
    row = services.rows_of(analysis)[4]
    chosen = next(c for c in row["candidates"] if c["chosen"])
    assert fragment.count("<li") == 2
    assert f'<li class="chosen"><span class="cm">{chosen["mse"]:.4f}</span>' in fragment


def test_no_candidates_no_fold(owner_client, alice, tiny_result_k1):
    analysis = create_analysis(alice, tiny_result_k1)
    assert '<details class="cands' not in page(owner_client, analysis)  # (its owner's "edit" folds are there)
    assert owner_client.get(reverse("results:candidates", args=[analysis.pk, 4])).status_code == 404


def test_metadata_box(owner_client, alice, tiny_result):
    analysis = create_analysis(alice, tiny_result, cached=True, untrained=True)
    html = page(owner_client, analysis)
    for label in (
        "lens",
        "base model",
        "donor model",
        "layer",
        "T (explanation tokens)",
        "best of k",
        "temperature",
        "seed",
        "timings",
        "cached",
        "engine version",
    ):
        assert f"<dt>{label}</dt>" in html, label
    assert "<dd>yes (served from the result cache)</dd>" in html
    assert "Untrained lens." in html
    plain = create_analysis(alice, tiny_result)
    html = page(owner_client, plain)
    assert "<dt>cached</dt><dd>–</dd>" in html and "Untrained lens." not in html
    nla = create_analysis(alice, tiny_result, kind="nla", untrained=True)  # the demo NLA pair's metadata
    html = page(owner_client, nla)
    assert "Untrained autoencoder." in html and "Patchscope" not in html and "Untrained lens." not in html


def test_chart_is_server_side_svg_with_kl_when_present(owner_client, alice, analysis, tiny_result_k1):
    html = page(owner_client, analysis)
    svg = re.search(r"<svg class=\"chart\".*?</svg>", html, re.S).group(0)
    assert svg.count("<polyline") == 2 and "KL" in svg and svg.count("<circle") == 14
    assert "untrained 0–5" in svg
    html = page(owner_client, create_analysis(alice, tiny_result_k1))
    svg = re.search(r"<svg class=\"chart\".*?</svg>", html, re.S).group(0)
    assert svg.count("<polyline") == 1


def test_a_running_analysis_shows_its_rows_so_far(owner_client, alice, tiny_result):
    analysis = create_analysis(alice, tiny_result, status="running")
    AnalysisRow.objects.filter(analysis=analysis, position__gte=5).delete()
    html = page(owner_client, analysis)
    assert "Still running: 5 of 14 positions so far" in html and table_positions(html) == [0, 1, 2, 3, 4]


def test_no_inline_scripts_or_handlers(owner_client, analysis):
    for query in ("", "?view=transposed", "?view=fulltext"):
        html = page(owner_client, analysis, query)
        assert not re.search(r"<script(?![^>]*\bsrc=)", html)
        assert not re.search(r"\son[a-z]+=", html)
        assert not re.search(r'\sstyle="', html)


# --- history ----------------------------------------------------------------------------------------


def test_history_newest_first_with_preview_parameters_and_mean_mse(
    owner_client, alice, tiny_result, tiny_result_k1
):
    old = create_analysis(alice, tiny_result)
    new = create_analysis(alice, tiny_result_k1, text="Another text entirely")
    html = owner_client.get(reverse("results:history")).content.decode()
    assert html.index(f'id="history-{new.pk}"') < html.index(f'id="history-{old.pk}"')
    assert "Another text entirely" in html and "k 2 · t 1.0 · seed 42" in html
    assert f"{old.metadata['summary']['mean_mse']:.4f}" in html


def test_history_search_filters_and_pages(owner_client, alice, tiny_result):
    for i in range(30):
        create_analysis(alice, tiny_result, text=f"text number {i}")
    Analysis.objects.filter(input__text="text number 3").update(lens_id="other", status="failed")
    url = reverse("results:history")
    html = owner_client.get(url).content.decode()
    assert html.count('<tr id="history-') == 25 and "page 1 of 2 (30 analyses)" in html
    assert owner_client.get(url + "?page=2").content.decode().count('<tr id="history-') == 5
    html = owner_client.get(url + "?q=number 2").content.decode()
    assert html.count('<tr id="history-') == 11  # 2, 20–29
    assert owner_client.get(url + "?lens=other").content.decode().count('<tr id="history-') == 1
    assert owner_client.get(url + "?status=failed").content.decode().count('<tr id="history-') == 1
    assert owner_client.get(url + "?status=done&lens=other").content.decode().count('<tr id="history-') == 0
    fragment = owner_client.get(url + "?q=number 1", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="history-list")
    assert "<html" not in fragment.content.decode()


def test_delete_from_history(owner_client, analysis):
    response = owner_client.post(reverse("results:delete", args=[analysis.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response.content == b""
    assert not Analysis.objects.filter(pk=analysis.pk).exists()
    assert not AnalysisRow.objects.filter(analysis_id=analysis.pk).exists()


def test_deleting_a_running_job_cancels_it_first(owner_client, alice, tiny_result, monkeypatch):
    from lensweb.analyses import services as analyses_services

    worker = WorkerRecord.objects.create(name="w", host="h", pid=1, channel_name="chan")
    analysis = create_analysis(alice, tiny_result, status="running")
    Analysis.objects.filter(pk=analysis.pk).update(worker=worker)
    cancelled = []
    real = analyses_services.do_cancel

    def spy(user, job_id):
        job = real(user, job_id)
        cancelled.append((job.pk, job.cancel_requested))
        return job

    monkeypatch.setattr(analyses_services, "do_cancel", spy)
    owner_client.post(reverse("results:delete", args=[analysis.pk]))
    assert cancelled == [(analysis.pk, True)]
    assert not Analysis.objects.filter(pk=analysis.pk).exists()


def test_a_finished_job_is_deleted_without_a_cancel(owner_client, analysis, monkeypatch):
    from lensweb.analyses import services as analyses_services

    monkeypatch.setattr(analyses_services, "do_cancel", lambda *a: pytest.fail("cancelled a finished job"))
    owner_client.post(reverse("results:delete", args=[analysis.pk]))
    assert not Analysis.objects.filter(pk=analysis.pk).exists()


# --- compare ----------------------------------------------------------------------------------------


def test_compare_aligns_rows_by_position(owner_client, alice, tiny_result, tiny_result_k1):
    a, b = create_analysis(alice, tiny_result), create_analysis(alice, tiny_result_k1)
    html = owner_client.get(reverse("results:compare") + f"?a={a.pk}&b={b.pk}").content.decode()
    assert html.count("<tr") == 15  # header + 14 positions
    rows_a, rows_b = services.rows_of(a), services.rows_of(b)
    delta = rows_b[8]["mse"] - rows_a[8]["mse"]
    assert f'<td class="num delta">{delta:.4f}</td>' in html
    assert "best of k</dt><dd>2" in html and "best of k</dt><dd>1" in html


def test_compare_refuses_different_tokens_clearly(owner_client, alice, tiny_result):
    from .conftest import run_tiny

    a = create_analysis(alice, tiny_result)
    b = create_analysis(alice, run_tiny("A different text, tokenised differently."), text="A different text")
    response = owner_client.get(reverse("results:compare") + f"?a={a.pk}&b={b.pk}")
    assert response.status_code == 400
    html = response.content.decode()
    assert f"#{a.pk} and #{b.pk} have different token ids" in html and "first difference at position" in html


def test_compare_needs_two_ids(owner_client):
    response = owner_client.get(reverse("results:compare") + "?a=1")
    assert response.status_code == 400 and "Give two analyses to compare" in response.content.decode()


def test_chart_of_a_long_analysis_stays_light():
    from lensweb.results.chart import mse_chart

    rows = [{"position": p, "token": f"t{p}", "mse": 1.0 + (p % 7), "kl": None} for p in range(1000)]
    svg = str(mse_chart(rows))
    assert svg.count("<polyline") == 1 and "<circle" not in svg  # a line, no per-point markers
    assert svg.count('text-anchor="middle" fill="#8a7a6e">') == 11  # positions 0, 100, ..., 900 + axis title
    assert len(svg) < 40_000
    assert "No mse values" in str(mse_chart([{"position": 0, "mse": None}]))
