"""The results pages, exports and imports for a Natural Language Autoencoder's analysis (rows computed by the
tests' own tiny NLA, tests/tinynla.py), beside a Consistency Lens' on the same text: each shows its own
metrics (fve, cos, mse_nrm), sorts, colours and charts by them, exports them and reads them back."""

from __future__ import annotations

import copy
import csv
import io
import json
import re

import pytest
from django.urls import reverse

from lensweb.analyses import colours
from lensweb.analyses.fragments import CARD_COLUMNS, EARLY_NOTES, row_view
from lensweb.analyses.models import Analysis, AnalysisRow
from lensweb.analyses.services import summarize_rows
from lensweb.results import services
from lensweb.results.export import export_csv, export_json
from lensweb.results.imports import ImportFormatError, parse_import
from lensweb.results.models import ResultsPreference

from .conftest import TEXT, create_analysis

pytestmark = pytest.mark.django_db
NLA_METRICS = ("fve_nrm", "cosine_similarity", "mse_nrm")


def run_nla(text: str = TEXT, **options):
    """(rows, metadata, timings, options) of a real analysis by the tiny NLA, through the web app's engine."""
    from inference.registry import load_registry
    from inference.types import AnalysisInput, AnalysisOptions
    from lensweb.analyses.engine import get_engine
    from tests.tinynla import NLA_ID, nla_registry_path

    engine = get_engine()
    lens = engine.load(load_registry(nla_registry_path()).get(NLA_ID))
    opts = AnalysisOptions(**options)
    result = engine.analyze(lens, AnalysisInput(text=text), opts)
    return result.to_dict()["rows"], result.metadata, result.timings, opts.to_dict()  # as stored


@pytest.fixture(scope="session")
def nla_result():
    """Best of 2, salience, KL and candidates kept: every field an NLA row can have."""
    return run_nla(best_of_k=2, salience=True, kl=True, logit_lens=True, keep_candidates=True)


@pytest.fixture(scope="session")
def nla_result_k1():
    return run_nla(best_of_k=1, salience=True, seed=3)


def create_nla(owner, result, **metadata_changes) -> Analysis:
    analysis = create_analysis(owner, result, **metadata_changes)
    # the summary a worker's finish writes (create_analysis knows mse only)
    analysis.metadata["summary"] = summarize_rows(services.rows_of(analysis))
    analysis.save(update_fields=["metadata"])
    return analysis


@pytest.fixture
def nla(alice, nla_result) -> Analysis:
    return create_nla(alice, nla_result)


@pytest.fixture
def owner_client(client, alice):
    client.force_login(alice)
    return client


def page(client, analysis, query="") -> str:
    response = client.get(reverse("results:detail", args=[analysis.pk]) + query)
    assert response.status_code == 200
    return response.content.decode()


def table_positions(html: str) -> list[int]:
    return [int(p) for p in re.findall(r'<tr id="pos-(\d+)"', html)]


def row_cells(html: str, position: int) -> list[str]:
    row = re.search(rf'<tr id="pos-{position}".*?</tr>', html, re.S).group(0)
    return re.findall(r'<td class="num">([^<]*)</td>', row)[1:]  # the first is the position


# --- the table -------------------------------------------------------------------------------------------


def test_an_nla_row_shows_fve_cos_and_mse_nrm_where_a_lens_row_shows_mse(owner_client, nla, analysis):
    html = page(owner_client, nla)
    for key in (*NLA_METRICS, "kl"):
        assert f'data-sort="{key}"' in html, key
    assert 'data-sort="mse"' not in html and 'data-sort="relative_rmse"' not in html
    rows = services.rows_of(nla)
    for row in rows:
        assert row_cells(html, row["position"]) == [f"{row[m]:.4f}" for m in (*NLA_METRICS, "kl")]
    assert "Natural Language Autoencoder</span>" in html and "fve and KL along the text" in html
    assert "Positions 0–49 are greyed" in html and "trained on positions 50 and later" in html
    # the Consistency Lens' page of the same text keeps its own columns
    lens_html = page(owner_client, analysis)
    assert 'data-sort="mse"' in lens_html and 'data-sort="fve_nrm"' not in lens_html
    assert "Natural Language Autoencoder</span>" not in lens_html and "mse and KL along the text" in lens_html


def test_without_a_variance_constant_there_is_no_fve_column(owner_client, alice, nla_result):
    rows, metadata, timings, options = copy.deepcopy(nla_result)
    for row in rows:
        row["fve_nrm"] = None
    analysis = create_nla(alice, (rows, {**metadata, "fve_variance": None}, timings, options))
    html = page(owner_client, analysis)
    assert 'data-sort="fve_nrm"' not in html and 'data-sort="cosine_similarity"' in html
    assert "cos and KL along the text" in html and "none: fve is not reported" in html


@pytest.mark.parametrize("metric", NLA_METRICS)
def test_the_table_sorts_by_each_nla_metric(owner_client, nla, metric):
    rows = services.rows_of(nla)
    for direction in ("asc", "desc"):
        html = page(owner_client, nla, f"?sort={metric}&dir={direction}")
        expected = sorted(rows, key=lambda r: r[metric], reverse=direction == "desc")
        assert table_positions(html) == [r["position"] for r in expected], direction
    # a Consistency Lens' metric is no sort key here: the table stays in position order
    html = page(owner_client, nla, "?sort=relative_rmse")
    assert table_positions(html) == [r["position"] for r in rows] and "sorted by" not in html


def test_filter_works_on_an_nla_table(owner_client, nla):
    assert table_positions(page(owner_client, nla, "?q=paris")) == [5]


def test_full_text_offers_and_colours_by_the_nla_metrics(owner_client, nla):
    html = page(owner_client, nla, "?view=fulltext")
    options = re.search(r'<select name="metric".*?</select>', html, re.S).group(0)
    assert re.findall(r'value="(\w+)"', options) == [*NLA_METRICS, "kl"]
    rows = services.rows_of(nla)
    for metric in NLA_METRICS:
        html = page(owner_client, nla, f"?view=fulltext&metric={metric}&scale=fixed")
        scale = colours.build_scheme(rows, "fixed")[metric]
        for row in rows:
            assert f'class="tb {scale.css_class(row[metric])} early" id="f-{row["position"]}"' in html
    assert "fve: fixed, -1.00 to 1.00 (linear, higher is better)" in page(
        owner_client, nla, "?view=fulltext&metric=fve_nrm&scale=fixed"
    )


def test_nla_colours_mark_the_worst_reconstruction_alike():
    """Higher is better for fve and cos, lower for mse_nrm: on the fixed scales the strongest colour is the
    worst reconstruction on all three (cos 0, mse_nrm 2, fve -1) and the lightest the best."""
    scheme = colours.build_scheme([], "fixed")
    worst = colours.SEQUENTIAL_STEPS - 1
    assert scheme["cosine_similarity"].css_class(0.0) == scheme["mse_nrm"].css_class(2.0) == f"q{worst}"
    assert scheme["fve_nrm"].css_class(-1.0) == f"q{worst}" and scheme["fve_nrm"].css_class(1.0) == "q0"
    assert scheme["cosine_similarity"].css_class(1.0) == scheme["mse_nrm"].css_class(0.0) == "q0"
    legend = scheme["cosine_similarity"].legend()
    assert legend[0]["cls"] == f"q{worst}" and legend[-1]["cls"] == "q0"  # low values, strong colour


def test_the_chart_plots_fve_and_kl_and_shades_the_untrained_positions(owner_client, nla):
    svg = re.search(r'<svg class="chart".*?</svg>', page(owner_client, nla), re.S).group(0)
    n = len(services.rows_of(nla))
    assert 'aria-label="fve and KL per token' in svg and svg.count("<polyline") == 2
    assert svg.count("<circle") == n and "untrained 0–49" in svg
    tips = re.findall(r"<title>(\d+) “[^”]*”: fve ([^,<]+), KL", svg)
    assert len(tips) == n
    rows = {r["position"]: r for r in services.rows_of(nla)}
    for position, value in tips:
        assert value == colours.fmt(rows[int(position)]["fve_nrm"])


def test_the_metadata_box_describes_the_pair(owner_client, nla):
    html = page(owner_client, nla)
    meta = nla.metadata
    for label, value in (
        ("kind", "Natural Language Autoencoder"),
        ("AV", meta["av"]),
        ("AR", meta["ar"]),
        ("layer K", str(meta["layer"])),
        ("max explanation tokens", str(meta["max_new_tokens"])),
        ("fve variance V", str(meta["fve_variance"])),
    ):
        assert re.search(rf"<dt>{label}</dt><dd>[^<]*{re.escape(value)}", html), label
    assert "<dt>donor model</dt>" not in html


def test_candidates_are_ranked_by_mse_nrm(owner_client, nla):
    row = services.rows_of(nla)[4]
    fragment = owner_client.get(reverse("results:candidates", args=[nla.pk, 4])).content.decode()
    shown = [float(v) for v in re.findall(r'<span class="cm">([^<]+)</span>', fragment)]
    assert shown == sorted(round(c["mse_nrm"], 4) for c in row["candidates"])
    chosen = next(c for c in row["candidates"] if c["chosen"])
    assert f'<li class="chosen"><span class="cm">{chosen["mse_nrm"]:.4f}</span>' in fragment
    assert "lowest normalised mse" in fragment


def test_transposed_heads_carry_fve_and_cos(owner_client, nla):
    html = page(owner_client, nla, "?view=transposed")
    row = services.rows_of(nla)[7]
    tip = f'title="position 7 · fve {row["fve_nrm"]:.4f} · cos {row["cosine_similarity"]:.4f}"'
    assert tip in html


def test_columns_are_remembered_per_family(owner_client, alice, nla, analysis):
    url = reverse("results:preferences")
    nla_offered = [*NLA_METRICS, "kl", "logit_lens"]
    owner_client.post(url, {"cols_sent": "1", "cols": ["cosine_similarity"], "cols_offered": nla_offered})
    html = page(owner_client, nla)
    assert 'data-sort="cosine_similarity"' in html
    assert 'data-sort="fve_nrm"' not in html and 'data-sort="kl"' not in html
    assert 'data-sort="relative_rmse"' in page(owner_client, analysis)  # the other family untouched
    # a Consistency Lens page's choice leaves the NLA columns as they were
    owner_client.post(url, {"cols_sent": "1", "cols": ["mse"]})
    html = page(owner_client, nla)
    assert 'data-sort="cosine_similarity"' in html and 'data-sort="mse_nrm"' not in html
    lens_html = page(owner_client, analysis)
    assert 'data-sort="mse"' in lens_html and 'data-sort="relative_rmse"' not in lens_html
    assert "nla" in ResultsPreference.objects.get(user=alice).columns


def test_a_preference_saved_before_nlas_leaves_their_columns_on(owner_client, alice, nla):
    ResultsPreference.objects.create(user=alice, columns=["mse", "logit_lens"])
    html = page(owner_client, nla)
    assert all(f'data-sort="{m}"' in html for m in NLA_METRICS)


# --- live cards ------------------------------------------------------------------------------------------


def test_a_card_row_has_the_nla_cells_under_the_nla_header(owner_client, nla):
    data = services.rows_of(nla)[7]
    view = row_view(data)
    assert view.cells == [f"{data[m]:.4f}" for m in (*NLA_METRICS, "kl")]
    assert view.early and "positions 50 and later" in EARLY_NOTES["nla"]
    card = owner_client.get(reverse("analyses:card", args=[nla.pk])).content.decode()
    header = re.search(r"<thead>.*?</thead>", card, re.S).group(0)
    labels = [label for _, label, _ in CARD_COLUMNS["nla"]]
    assert re.findall(r'<th class="num" title="[^"]*">([^<]+)</th>', header) == labels
    row = re.search(rf'<tr id="row-{nla.pk}-7".*?</tr>', card, re.S).group(0)
    assert re.findall(r'<td class="num">([^<]*)</td>', row)[1:] == view.cells


# --- export and import -----------------------------------------------------------------------------------


def test_the_export_carries_the_nla_fields(nla, analysis):
    rows = services.rows_of(nla)
    document = json.loads(export_json(nla, rows))
    assert document["metadata"]["kind"] == "nla" and document["metadata"]["model_id"] == "tiny-nla"
    for out, row in zip(document["data"], rows, strict=True):
        for key in (*NLA_METRICS, "mse", "relative_rmse", "av_text", "av_stop", "explanation_parsed"):
            assert out[key] == row[key], key
        assert out["explanation_structured"] == row["explanation_tokens"]  # words: salience's units
        assert out["candidates"] == row["candidates"]
    table = list(csv.DictReader(io.StringIO(export_csv(nla, rows).decode("utf-8"))))
    assert list(table[0])[-5:] == [
        "mse_nrm",
        "cosine_similarity",
        "fve_nrm",
        "activation_norm",
        "activation_norm_outlier",
    ]
    assert [float(t["fve_nrm"]) for t in table] == [r["fve_nrm"] for r in rows]
    assert [float(t["activation_norm"]) for t in table] == [r["activation_norm"] for r in rows]
    # a Consistency Lens' export has its own cos, and none of the NLA-only metrics
    lens = json.loads(export_json(analysis, services.rows_of(analysis)))
    assert not any(key in lens["data"][0] for key in ("mse_nrm", "fve_nrm"))
    assert "fve_nrm" not in export_csv(analysis, services.rows_of(analysis)).decode().splitlines()[0]


def test_an_nla_export_imports_and_exports_again_byte_for_byte(alice, nla):
    first = export_json(nla, services.rows_of(nla))
    (imported,) = services.do_import(alice, parse_import(first, "nla.json"), "nla.json")
    assert imported.lens_id == "tiny-nla" and imported.metadata["kind"] == "nla"
    assert services.rows_of(imported) == services.rows_of(nla)
    second = export_json(imported, services.rows_of(imported))
    assert second.split(b'\n "data": [', 1)[1] == first.split(b'\n "data": [', 1)[1]
    assert export_csv(imported, services.rows_of(imported)) == export_csv(nla, services.rows_of(nla))
    summary = imported.metadata["summary"]
    assert summary["mean_fve_nrm"] == pytest.approx(nla.metadata["summary"]["mean_fve_nrm"])


def test_a_file_with_nla_rows_and_no_kind_is_read_as_an_nla(alice, nla):
    document = json.loads(export_json(nla, services.rows_of(nla)))
    document["metadata"] = {"model_name": "someone's NLA"}
    (t,) = parse_import(json.dumps(document).encode(), "theirs.json")
    assert t.metadata["kind"] == "nla" and t.rows[3]["mse_nrm"] == document["data"][3]["mse_nrm"]


def _broken(nla, change) -> bytes:
    document = json.loads(export_json(nla, services.rows_of(nla)))
    change(document)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("cosine_similarity", 1.5, '"cosine_similarity" must be a cosine, between -1 and 1'),
        ("mse_nrm", -0.5, '"mse_nrm" must be a mean of squares, 0 or more'),
        ("fve_nrm", 3.0, '"fve_nrm" must be a fraction of variance explained, at most 1'),
        ("mse_nrm", 1e16, '"mse_nrm" must be between -1e+15 and 1e+15'),
        ("mse_nrm", "0.5", '"mse_nrm" must be a number'),
        ("fve_nrm", [0.5], '"fve_nrm" must be a number'),
        ("av_stop", 3, '"av_stop" must be a string or null'),
    ],
)
def test_import_refuses_bad_nla_values_saying_where(nla, field, value, message):
    def change(document):
        document["data"][2][field] = value

    with pytest.raises(ImportFormatError) as caught:
        parse_import(_broken(nla, change), "bad.json")
    assert "row 3" in str(caught.value) and message in str(caught.value)


def test_import_refuses_an_nla_row_without_its_metrics(nla):
    def change(document):
        del document["data"][0]["cosine_similarity"]

    with pytest.raises(ImportFormatError, match=r'row 1: the row has no "cosine_similarity"'):
        parse_import(_broken(nla, change), "bad.json")


def test_import_refuses_a_bad_candidate_metric(nla):
    def change(document):
        document["data"][1]["candidates"][0]["cosine_similarity"] = -7

    with pytest.raises(ImportFormatError, match=r'"candidates\[\]\.cosine_similarity" must be a cosine'):
        parse_import(_broken(nla, change), "bad.json")


def test_a_null_fve_imports(alice, nla):
    def change(document):
        for row in document["data"]:
            row["fve_nrm"] = None

    (t,) = parse_import(_broken(nla, change), "no-variance.json")
    assert all(r["fve_nrm"] is None for r in t.rows)


# --- compare and history ---------------------------------------------------------------------------------


def test_a_lens_and_an_nla_on_the_same_text_compare_side_by_side(owner_client, analysis, nla):
    response = owner_client.get(reverse("results:compare") + f"?a={analysis.pk}&b={nla.pk}")
    assert response.status_code == 200
    html = response.content.decode()
    rows_a, rows_b = services.rows_of(analysis), services.rows_of(nla)
    assert html.count("<tr") == len(rows_a) + 1
    head = re.search(r"<thead>.*?</thead>", html, re.S).group(0)
    assert re.findall(r">([AB] [^<]+)</th>", head) == [
        "A explanation",
        "A mse",
        "B explanation",
        "B fve",
        "B cos",
        "B mse_nrm",
    ]
    assert "Δ" not in head and "no difference is computed" in html
    for a, b in zip(rows_a, rows_b, strict=True):
        row = re.findall(r"<tr.*?</tr>", html, re.S)[a["position"] + 1]
        cells = re.findall(r'<td class="num">([^<]*)</td>', row)[1:]
        assert cells == [f"{a['mse']:.4f}", *(f"{b[m]:.4f}" for m in NLA_METRICS)]
    mean_fve = sum(r["fve_nrm"] for r in rows_b) / len(rows_b)
    assert f"mean fve <strong>{mean_fve:.4f}</strong>" in html
    assert "Consistency Lens</small>" in html and "Natural Language Autoencoder</small>" in html


def test_two_nla_analyses_compare_by_mse_nrm(owner_client, alice, nla, nla_result_k1):
    other = create_nla(alice, nla_result_k1)
    html = owner_client.get(reverse("results:compare") + f"?a={nla.pk}&b={other.pk}").content.decode()
    rows_a, rows_b = services.rows_of(nla), services.rows_of(other)
    assert '<th class="num">Δ mse_nrm</th>' in html
    delta = rows_b[8]["mse_nrm"] - rows_a[8]["mse_nrm"]
    assert f'<td class="num delta">{delta:.4f}</td>' in html


def test_history_shows_an_nlas_mean_fve(owner_client, nla, analysis):
    html = owner_client.get(reverse("results:history")).content.decode()
    row = re.search(rf'<tr id="history-{nla.pk}">.*?</tr>', html, re.S).group(0)
    mean = sum(r["fve_nrm"] for r in services.rows_of(nla)) / len(services.rows_of(nla))
    assert f"fve {mean:.4f}" in row and ">NLA</span>" in row
    lens_row = re.search(rf'<tr id="history-{analysis.pk}">.*?</tr>', html, re.S).group(0)
    assert f"{analysis.metadata['summary']['mean_mse']:.4f}" in lens_row and "fve" not in lens_row


def test_a_running_nla_analysis_shows_its_rows_so_far(owner_client, alice, nla_result):
    analysis = create_nla(alice, nla_result, status="running")
    AnalysisRow.objects.filter(analysis=analysis, position__gte=4).delete()
    html = page(owner_client, analysis)
    assert table_positions(html) == [0, 1, 2, 3] and 'data-sort="fve_nrm"' in html
