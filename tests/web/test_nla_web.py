"""Both lens families in one deployment: the tests' tiny Consistency Lens ("tiny") and tiny Natural Language
Autoencoder ("tiny-nla", tests/tinynla.py) analyse the same text through the form and the worker; each
results page and live card shows its family's metrics; the two compare side by side; an NLA analysis
exports, imports and exports again; the API names each lens' kind; the result cache keeps the families
apart and answers a repeated NLA request."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from lensweb.accounts import keys
from lensweb.analyses import services
from lensweb.analyses.models import Analysis, AnalysisRow
from lensweb.results.export import export_json
from tests.api.conftest import Api
from tests.tinynla import NLA_DESCRIPTION, NLA_ID, NLA_NAME, write_registry_with_nla

from .conftest import TINY_NAME

pytestmark = pytest.mark.django_db(transaction=True)

TEXT = "The capital of France is Paris"
FORM = {
    "text": TEXT,
    "input_format": "text",
    "best_of_k": 2,
    "temperature": 1.0,
    "seed": 5,
    "salience": "on",
}
NLA_COLUMNS = ("fve_nrm", "cosine_similarity", "mse_nrm")


@pytest.fixture
def both_lenses(tmp_path, monkeypatch):
    """The deployment serves both families: the tiny lens (default) and the tiny NLA."""
    path = write_registry_with_nla(tmp_path)
    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(path))
    return path


@pytest.fixture
def logged_in(client, alice):
    client.force_login(alice)
    return client


def rows_of(job_id: int) -> list[dict]:
    return list(
        AnalysisRow.objects.filter(analysis_id=job_id).order_by("position").values_list("data", flat=True)
    )


def header_of(html: str) -> list[str]:
    """The numeric column heads but "pos"."""
    head = re.search(r"<thead>.*?</thead>", html, re.S)[0]
    return [h for h in re.findall(r'<th class="num"[^>]*>([^<]+)</th>', head) if h != "pos"]


def submit(client, lens: str) -> Analysis:
    before = set(Analysis.objects.values_list("pk", flat=True))
    response = client.post(reverse("analyses:submit"), {**FORM, "lens": lens}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "errorlist" not in response.content.decode()
    (job,) = Analysis.objects.exclude(pk__in=before)
    return job


def test_an_nla_and_a_lens_analyse_the_same_text_and_compare(both_lenses, logged_in, run_jobs):
    index = logged_in.get(reverse("analyses:index")).content.decode()
    assert f'<option value="{NLA_ID}">{NLA_NAME}</option>' in index
    assert f"<strong>{NLA_NAME}</strong> — <em>a Natural Language Autoencoder</em>" in index
    assert re.search(rf"<strong>{TINY_NAME}</strong>\.", index)  # the lens' line as it was

    lens_job, nla_job = submit(logged_in, "tiny"), submit(logged_in, NLA_ID)
    # a queued card has no metadata yet: its header comes from the registry's kind, before any row
    queued = logged_in.get(reverse("analyses:card", args=[nla_job.pk])).content.decode()
    assert header_of(queued) == ["fve", "cos", "mse_nrm"]  # KL only when asked for (FORM does not)
    assert header_of(logged_in.get(reverse("analyses:card", args=[lens_job.pk])).content.decode()) == [
        "mse",
        "rel. RMSE",
    ]

    assert sorted(run_jobs()) == sorted([("analysis", lens_job.pk), ("analysis", nla_job.pk)])
    lens_job.refresh_from_db()
    nla_job.refresh_from_db()
    assert lens_job.status == nla_job.status == "done", (lens_job.error, nla_job.error)
    assert nla_job.metadata["kind"] == "nla" and "kind" not in lens_job.metadata
    nla_rows, lens_rows = rows_of(nla_job.pk), rows_of(lens_job.pk)
    assert [r["token_id"] for r in nla_rows] == [r["token_id"] for r in lens_rows]  # one tokenizer
    assert all(isinstance(r[m], float) for r in nla_rows for m in NLA_COLUMNS)
    assert not any(m in r for r in lens_rows for m in ("fve_nrm", "mse_nrm"))  # cos is on both families' rows
    summary = nla_job.metadata["summary"]
    assert summary["mean_cosine_similarity"] == pytest.approx(
        sum(r["cosine_similarity"] for r in nla_rows) / len(nla_rows)
    )

    # the live card: the NLA's cells under its header, one per column
    card = logged_in.get(reverse("analyses:card", args=[nla_job.pk])).content.decode()
    first = re.search(rf'<tr id="row-{nla_job.pk}-0".*?</tr>', card, re.S)[0]
    cells = re.findall(r'<td class="num">([^<]*)</td>', first)[1:]
    assert cells == [f"{nla_rows[0][m]:.4f}" for m in NLA_COLUMNS]
    assert "mean fve <strong>" in card and "max mse" not in card

    # the results pages: each family's columns
    nla_page = logged_in.get(reverse("results:detail", args=[nla_job.pk])).content.decode()
    lens_page = logged_in.get(reverse("results:detail", args=[lens_job.pk])).content.decode()
    assert [
        c for c in ("fve_nrm", "cosine_similarity", "mse_nrm", "mse") if f'data-sort="{c}"' in nla_page
    ] == [
        "fve_nrm",
        "cosine_similarity",
        "mse_nrm",
    ]
    assert 'data-sort="mse"' in lens_page and 'data-sort="fve_nrm"' not in lens_page
    assert f"{nla_rows[3]['fve_nrm']:.4f}" in nla_page

    # compare: A the lens, B the NLA, aligned by position, each in its own metrics
    response = logged_in.get(reverse("results:compare") + f"?a={lens_job.pk}&b={nla_job.pk}")
    assert response.status_code == 200
    html = response.content.decode()
    assert header_of(html) == ["A mse", "B fve", "B cos", "B mse_nrm"]
    assert html.count('<td class="num delta">') == 0 and html.count("<tr") == len(nla_rows) + 1
    row = re.findall(r"<tr.*?</tr>", html, re.S)[4]
    assert re.findall(r'<td class="num">([^<]*)</td>', row) == [
        "3",
        f"{lens_rows[3]['mse']:.4f}",
        *(f"{nla_rows[3][m]:.4f}" for m in NLA_COLUMNS),
    ]


def test_an_nla_analysis_exports_imports_and_exports_again(both_lenses, logged_in, alice, run_jobs):
    job = submit(logged_in, NLA_ID)
    run_jobs()
    first = logged_in.get(reverse("results:export_json", args=[job.pk])).content
    data = json.loads(first)["data"]
    assert [r["fve_nrm"] for r in data] == [r["fve_nrm"] for r in rows_of(job.pk)]
    response = logged_in.post(
        reverse("results:import"), {"file": SimpleUploadedFile("nla.json", first, "application/json")}
    )
    assert response.status_code == 302
    imported = Analysis.objects.exclude(pk=job.pk).get()
    assert imported.metadata["kind"] == "nla" and imported.metadata["imported"] is True
    assert rows_of(imported.pk) == rows_of(job.pk)
    second = export_json(imported, rows_of(imported.pk))
    assert second.split(b'\n "data": [', 1)[1] == first.split(b'\n "data": [', 1)[1]
    page = logged_in.get(reverse("results:detail", args=[imported.pk])).content.decode()
    assert 'data-sort="fve_nrm"' in page and "imported</span>" in page
    history = logged_in.get(reverse("results:history")).content.decode()
    assert history.count(">NLA</span>") == 2


def test_the_api_names_each_lens_kind_and_serves_nla_rows(both_lenses, client, alice, run_jobs):
    api = Api(client)
    key = keys.create_key(alice, "laptop")[1]
    lenses = api.get("/api/v1/lenses", key=key).json_body["lenses"]  # checked against the OpenAPI schema
    assert [(lens["id"], lens["kind"]) for lens in lenses] == [("tiny", "lens"), (NLA_ID, "nla")]
    assert lenses[1]["description"] == NLA_DESCRIPTION and lenses[0]["default"] is True
    worker = services.register_worker(channel_name="", device="cpu")  # the API queues only for a live one
    body = {"lens": NLA_ID, "text": TEXT, "options": {"best_of_k": 1}}
    submitted = api.post("/api/v1/analyses", body, key=key)
    assert submitted.status_code == 202, submitted.json_body
    run_jobs(worker)
    body = api.get(f"/api/v1/analyses/{submitted.json_body['id']}", key=key).json_body
    assert body["status"] == "done" and body["metadata"]["kind"] == "nla"
    assert all(set(NLA_COLUMNS) <= set(row) for row in body["rows"])


def test_nla_results_are_cached_under_their_own_keys(both_lenses, settings, alice, run_jobs):
    from lensweb.cache.models import CachedResult

    settings.LENSWEB_RESULT_CACHE = True
    settings.LENSWEB_CACHE_MAX_AGE_DAYS = 30
    settings.LENSWEB_CACHE_MAX_BYTES = 0
    settings.LENSWEB_CACHE_FRONT = ""
    options = {"best_of_k": 2, "temperature": 1.0, "seed": 7, "salience": True}
    first = services.do_submit(alice, NLA_ID, {"text": TEXT}, dict(options))
    assert first.status == "queued"
    run_jobs()
    entry = CachedResult.objects.get()
    assert entry.lens_id == NLA_ID and entry.hits == 0

    again = services.do_submit(alice, NLA_ID, {"text": TEXT}, dict(options))  # her own cache
    assert again.status == "done" and again.metadata["cached"] is True and again.started_at is None
    assert again.metadata["kind"] == "nla" and rows_of(again.pk) == rows_of(first.pk)
    assert CachedResult.objects.get().hits == 1 and run_jobs() == []

    # the same text and options with the Consistency Lens: another key, computed, cached beside it
    lens_job = services.do_submit(alice, "tiny", {"text": TEXT}, dict(options))
    assert lens_job.status == "queued"
    assert run_jobs() == [("analysis", lens_job.pk)]
    entries = {e.lens_id: e.key for e in CachedResult.objects.all()}
    assert set(entries) == {"tiny", NLA_ID} and entries["tiny"] != entries[NLA_ID]


def test_an_nla_files_stamp_sees_a_replaced_value_head_or_sidecar(tmp_path):
    """A value head or sidecar replaced in place must load anew and key the cache anew (its stamp)."""
    import shutil

    from inference.registry import LensSpec
    from lensweb.analyses.engine import files_stamp
    from tests.tinynla import tiny_nla

    pair = tmp_path / "pair"
    shutil.copytree(tiny_nla().folder, pair)
    folder_spec = LensSpec(id="x", name="x", kind="nla", checkpoint=str(pair))
    named_spec = LensSpec(
        id="y", name="y", checkpoint="", kind="nla", av=str(pair / "av"), ar=str(pair / "ar")
    )
    before = files_stamp(folder_spec), files_stamp(named_spec)
    head = pair / "ar" / "value_head.safetensors"
    head.write_bytes(head.read_bytes() + b"\0")
    after_head = files_stamp(folder_spec), files_stamp(named_spec)
    assert after_head[0] != before[0] and after_head[1] != before[1]
    sidecar = pair / "av" / "nla_meta.yaml"
    sidecar.write_text(sidecar.read_text() + "\n# edited\n")
    assert (files_stamp(folder_spec), files_stamp(named_spec)) != after_head


def test_probes_serve_an_nla_too(alice, both_lenses, run_jobs):
    """Scores, activations, describe and compare through the queue for the other family: a row's own
    explanation ids give its numbers again (the AR's mse, mse_nrm and fve), its activation described greedily
    is explained, and a difference is explained."""
    job = services.do_submit(alice, NLA_ID, {"text": TEXT}, {"seed": 5, "salience": True})
    run_jobs()
    own = rows_of(job.pk)[3]
    score = services.do_submit_probe(
        alice, job.pk, "score", {"position": 3, "explanation_token_ids": own["explanation_token_ids"]}
    )
    read = services.do_submit_probe(alice, job.pk, "activations", {"positions": [3, 4]})
    run_jobs()
    score.refresh_from_db()
    read.refresh_from_db()
    for name in ("mse", "mse_nrm", "fve_nrm", "relative_rmse"):
        assert score.result["row"][name] == pytest.approx(own[name], rel=1e-4), name
    vectors = read.result["activations"]
    described = services.do_submit_describe(alice, NLA_ID, vectors, {"temperature": 0})
    compared = services.do_submit_compare(
        alice, {"analysis_id": job.pk, "position": 3}, {"vector": vectors[1]}, None, {"temperature": 0}
    )
    run_jobs()
    described.refresh_from_db()
    compared.refresh_from_db()
    assert [row["position"] for row in described.result["rows"]] == [0, 1]
    assert "mse_nrm" in described.result["rows"][0] and described.lens_id == NLA_ID
    assert compared.status == "done" and compared.result["diff_norm"] > 0
