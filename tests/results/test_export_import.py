"""The research site's file format both ways: export fields, export -> import -> export round trips, and
clear refusals of malformed files."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from lensweb.accounts import keys
from lensweb.analyses.models import Analysis
from lensweb.results import services
from lensweb.results.export import export_csv, export_json
from lensweb.results.imports import ImportFormatError, parse_import

from .conftest import create_analysis, golden_dir

pytestmark = pytest.mark.django_db


def data_part(content: bytes) -> list:
    return json.loads(content)["data"]


def data_bytes(content: bytes) -> bytes:
    """The file's data part, byte for byte (everything after the metadata line)."""
    return content.split(b'\n "data": [', 1)[1]


def reimport(owner, content: bytes, filename="analysis.json") -> list[Analysis]:
    return services.do_import(owner, parse_import(content, filename), filename)


# --- export ---------------------------------------------------------------------------------------------


def test_export_json_has_the_research_row_fields_and_ours(analysis):
    rows = services.rows_of(analysis)
    document = json.loads(export_json(analysis, rows))
    assert set(document) == {"metadata", "data"}
    meta = document["metadata"]
    assert (
        meta["best_of_k"] == 2 and meta["layer"] == 1 and meta["t_text"] == 6 and meta["model_id"] == "tiny"
    )
    assert meta["input"] == {"text": analysis.input["text"]}
    first = document["data"][3]
    source = rows[3]
    assert list(first)[:8] == [
        "position",
        "token",
        "explanation",
        "explanation_structured",
        "token_salience",
        "mse",
        "relative_rmse",
        "kl_divergence",
    ]
    # the explanation is the explanation, though the tiny lens adds the current token (the research file
    # carries "[token]": below)
    assert meta["research_shape"] is False and "null" in meta["conventions"]["kl_divergence"]
    assert first["explanation"] == source["explanation"] and meta["add_current_token"] is True
    assert first["explanation_structured"] == source["explanation_tokens"]
    assert first["token_salience"] == source["token_salience"] and len(first["token_salience"]) == 6
    assert first["mse"] == source["mse"] and first["kl_divergence"] == source["kl"]
    assert first["token_id"] == source["token_id"]
    assert first["explanation_token_ids"] == source["explanation_token_ids"]
    assert first["logit_lens_tokens"] == source["logit_lens_top"]
    assert first["logit_lens_top"] == "".join(source["logit_lens_top"])
    assert first["candidates"] == source["candidates"]


def api_get(client, user, path):
    key = keys.create_key(user, "test")[1]
    return client.get(f"/api/v1/{path}", HTTP_AUTHORIZATION=f"Bearer {key}")


def test_a_kl_not_computed_is_null_and_minus_one_only_in_the_research_file(alice, tiny_result_k1, client):
    analysis = create_analysis(alice, tiny_result_k1)
    rows = services.rows_of(analysis)
    ours = data_part(export_json(analysis, rows))
    # the export agrees with the API: no number for what was not computed
    from_api = api_get(client, alice, f"analyses/{analysis.pk}").json()["rows"]
    assert all(row["kl_divergence"] is None for row in ours) and all(r.get("kl") is None for r in from_api)
    assert [r["explanation"] for r in ours] == [r["explanation"] for r in from_api]
    assert all(row["logit_lens_tokens"] is None and row["logit_lens_top"] == "" for row in ours)
    table = list(csv.DictReader(io.StringIO(export_csv(analysis, rows).decode("utf-8"))))
    assert {row["kl_divergence"] for row in table} == {""}
    assert [r["explanation"] for r in table] == [r["explanation"] for r in ours]
    document = json.loads(export_json(analysis, rows, research=True))
    research = document["data"]
    assert all(row["kl_divergence"] == -1.0 for row in research)
    assert [r["explanation"] for r in research] == [f"{r['explanation']}[{r['token']}]" for r in ours]
    meta = document["metadata"]
    assert meta["research_shape"] is True and "-1.0" in meta["conventions"]["kl_divergence"]
    # both read back to the same rows
    (mine,), (theirs,) = (
        parse_import(export_json(analysis, rows, research=r), "a.json") for r in (False, True)
    )
    assert mine.rows == theirs.rows and mine.rows[1]["explanation"] == rows[1]["explanation"]


def test_the_research_file_is_served_beside_the_others(client, alice, analysis):
    client.force_login(alice)
    page = client.get(reverse("results:detail", args=[analysis.pk])).content.decode()
    url = reverse("results:export_research_json", args=[analysis.pk])
    assert url in page
    response = client.get(url)
    assert response["Content-Disposition"] == f'attachment; filename="analysis-{analysis.pk}.research.json"'
    from_api = api_get(client, alice, f"analyses/{analysis.pk}/export.research.json")
    assert from_api.content == response.content and json.loads(response.content)["metadata"]["research_shape"]


def test_export_csv_one_line_per_position(analysis):
    rows = services.rows_of(analysis)
    table = list(csv.DictReader(io.StringIO(export_csv(analysis, rows).decode("utf-8"))))
    assert len(table) == len(rows)
    assert [int(r["position"]) for r in table] == [r["position"] for r in rows]
    assert table[3]["token"] == rows[3]["token"]
    assert float(table[3]["mse"]) == rows[3]["mse"]
    assert json.loads(table[3]["token_salience"]) == rows[3]["token_salience"]
    assert json.loads(table[3]["explanation_token_ids"]) == rows[3]["explanation_token_ids"]


def test_export_views_are_downloads(client, alice, analysis):
    client.force_login(alice)
    response = client.get(reverse("results:export_json", args=[analysis.pk]))
    assert response["Content-Disposition"] == f'attachment; filename="analysis-{analysis.pk}.json"'
    analysis.refresh_from_db()  # as the view reads it (PostgreSQL's jsonb orders keys its own way)
    assert response.content == export_json(analysis, services.rows_of(analysis))
    response = client.get(reverse("results:export_csv", args=[analysis.pk]))
    assert response["Content-Type"].startswith("text/csv")


# --- round trips ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["tiny_result", "tiny_result_k1"])
def test_export_import_export_is_byte_for_byte_on_the_data(request, alice, which):
    original = create_analysis(alice, request.getfixturevalue(which))
    first = export_json(original, services.rows_of(original))
    (imported,) = reimport(alice, first)
    second = export_json(imported, services.rows_of(imported))
    assert data_bytes(second) == data_bytes(first)
    # and once more, from the imported copy
    (again,) = reimport(alice, second)
    assert data_bytes(export_json(again, services.rows_of(again))) == data_bytes(first)
    assert services.rows_of(imported) == services.rows_of(original)
    assert export_csv(imported, services.rows_of(imported)) == export_csv(
        original, services.rows_of(original)
    )


def test_imported_analyses_are_done_read_only_and_keep_their_metadata(alice, analysis):
    (imported,) = reimport(alice, export_json(analysis, services.rows_of(analysis)), "mine.json")
    assert imported.status == "done" and imported.owner == alice
    assert imported.metadata["imported"] is True and imported.metadata["imported_from"] == "mine.json"
    assert imported.input == analysis.input and imported.options == analysis.options
    assert imported.lens_id == "tiny" and imported.metadata["layer"] == 1
    assert imported.timings == analysis.timings
    assert imported.metadata["summary"]["mean_mse"] == pytest.approx(analysis.metadata["summary"]["mean_mse"])


def test_several_transcripts_per_file_jsonl_concatenated_and_lists(alice, analysis, tiny_result_k1):
    other = create_analysis(alice, tiny_result_k1)
    one = export_json(analysis, services.rows_of(analysis))
    two = export_json(other, services.rows_of(other))
    jsonl = json.dumps(json.loads(one)).encode() + b"\n" + json.dumps(json.loads(two)).encode() + b"\n"
    n = len(services.rows_of(analysis))  # one row per token of TEXT
    assert [len(t.rows) for t in parse_import(jsonl, "two.jsonl")] == [n, n]
    assert (
        len(parse_import(one + two, "concatenated.json")) == 2
    )  # the research site's own multi-object files
    as_list = json.dumps([json.loads(one), json.loads(two)]).encode()
    assert [t.options["best_of_k"] for t in parse_import(as_list, "list.json")] == [2, 1]


def test_research_site_files_without_our_fields(alice, analysis):
    """A file as the research site writes it: research fields only, column-oriented or row lists."""
    rows = data_part(export_json(analysis, services.rows_of(analysis), research=True))
    research = [{k: r[k] for k in list(r)[:8]} for r in rows]
    (t,) = parse_import(
        json.dumps({"metadata": {"model_name": "gemma"}, "data": research}).encode(), "x.json"
    )
    assert t.lens_id == "gemma" and t.metadata["add_current_token"] is True
    assert t.rows[3]["explanation_tokens"] == rows[3]["explanation_tokens"]
    assert t.rows[3]["explanation"] == rows[3]["explanation"][: -len(f"[{rows[3]['token']}]")]
    assert t.rows[3]["kl"] == rows[3]["kl_divergence"] and t.input == {"text": analysis.input["text"]}
    columns = {key: {str(i): r[key] for i, r in enumerate(research)} for key in research[0]}
    (c,) = parse_import(json.dumps({"metadata": None, "data": columns}).encode(), "columns.json")
    assert [r["mse"] for r in c.rows] == [r["mse"] for r in research]
    # and back out: the research fields come back as they went in
    (imported,) = services.do_import(alice, [t], "x.json")
    again = data_part(export_json(imported, services.rows_of(imported), research=True))
    assert [{k: r[k] for k in list(r)[:8]} for r in again] == research


def test_a_golden_research_output_imports(alice):
    path = golden_dir() / "outputs" / "tiny_patch2_percur__T1__k1_t0.01.json"
    golden = json.loads(path.read_bytes())
    (t,) = parse_import(path.read_bytes(), path.name)
    assert len(t.rows) == len(golden["rows"])
    assert t.rows[3]["explanation_token_ids"] == golden["rows"][3]["explanation_token_ids"]
    assert t.rows[3]["kl"] is None  # -1.0 there: not computed
    (imported,) = services.do_import(alice, [t], path.name)
    out = data_part(export_json(imported, services.rows_of(imported), research=True))
    for mine, theirs in zip(out, golden["rows"], strict=True):
        for key in (
            "position",
            "token",
            "explanation",
            "explanation_structured",
            "token_salience",
            "mse",
            "relative_rmse",
            "kl_divergence",
            "logit_lens_top",
            "A_l2_norm",
        ):
            assert mine[key] == theirs[key], key


# --- malformed files ------------------------------------------------------------------------------------


@pytest.fixture
def good(analysis) -> bytes:
    return export_json(analysis, services.rows_of(analysis))


def broken(good: bytes, change) -> bytes:
    document = json.loads(good)
    change(document)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d["data"][2].update(mse="1.5"), 'row 3: "mse" must be a number, got a string'),
        (
            lambda d: d["data"][0].update(position=-1),
            '"position" must be a whole number from 0 to 2,147,483,647',
        ),
        (lambda d: d["data"][1].update(token=7), '"token" must be a string'),
        (lambda d: d["data"][4].update(token_salience=["a"]), '"token_salience" must be a list of numbers'),
        (lambda d: d["data"][4].pop("mse"), 'row 5: the row has no "mse"'),
        (lambda d: d.update(data={"rows": 1}), '"data" must be a list of rows, got an object'),
        (lambda d: d.update(data=[]), '"data" has no rows'),
        (lambda d: d.update(metadata=[1]), '"metadata" must be an object'),
        (lambda d: d["data"].append(dict(d["data"][0])), "position 0 appears twice"),
        (
            lambda d: d["data"][0].pop("explanation") and d["data"][0].pop("explanation_structured"),
            'neither "explanation" nor "explanation_structured"',
        ),
        (lambda d: d["data"].__setitem__(0, "row"), '"row" must be an object'),
        (lambda d: d.pop("data"), 'expected an object with "metadata" and "data"'),
    ],
)
def test_wrong_types_and_missing_fields_are_refused_with_where_and_what(good, change, message):
    with pytest.raises(ImportFormatError) as caught:
        parse_import(broken(good, change), "bad.json")
    assert message in str(caught.value)
    assert str(caught.value).startswith("bad.json")


@pytest.mark.parametrize("cut", [10, 500, -40, -2])
def test_truncated_json_is_refused(good, cut):
    with pytest.raises(ImportFormatError, match=r"is cut off \(truncated\)|is not valid JSON"):
        parse_import(good[:cut], "cut.json")


def test_truncated_at_the_end_says_truncated(good):
    with pytest.raises(ImportFormatError, match=r"cut off \(truncated\) at line \d+, column \d+"):
        parse_import(good[: len(good) // 2], "cut.json")


def test_other_malformed_files(good):
    for content, name, message in [
        (b"", "empty.json", "is empty"),
        (b"   \n ", "blank.json", "is empty"),
        (b"\xff\xfe{", "utf16.json", "is not UTF-8"),
        (b"42", "number.json", "expected an object or a list, got a whole number"),
        (b"position,token\n0,a\n", "x.csv", "CSV files carry no metadata"),
        (b"{nope}", "nope.json", "is not valid JSON"),
    ]:
        with pytest.raises(ImportFormatError, match=message):
            parse_import(content, name)


def test_huge_files_are_refused_by_size(good):
    with pytest.raises(ImportFormatError, match=r"big.json is \d+ KB; the limit is 1000 bytes"):
        parse_import(good, "big.json", max_bytes=1000)
    with pytest.raises(ImportFormatError, match=r"transcripts; the limit is 1"):
        parse_import(good + good, "two.json", max_transcripts=1)


# --- the import page ------------------------------------------------------------------------------------


def test_import_page_adds_to_history(client, alice, good):
    client.force_login(alice)
    response = client.post(reverse("results:import"), {"file": SimpleUploadedFile("mine.json", good + good)})
    assert response.status_code == 302 and response.url == reverse("results:history")
    imported = Analysis.objects.filter(owner=alice, metadata__imported=True)
    assert imported.count() == 2
    history = client.get(reverse("results:history")).content.decode()
    assert "imported" in history and "Imported 2 analyses." in history


def test_import_page_shows_errors_and_imports_nothing(client, alice, good):
    client.force_login(alice)
    before = Analysis.objects.count()
    bad = good[:-200]
    response = client.post(reverse("results:import"), {"file": SimpleUploadedFile("cut.json", bad)})
    assert response.status_code == 400
    assert "cut.json is cut off (truncated)" in response.content.decode()
    # a good transcript followed by a bad one: all or nothing
    response = client.post(
        reverse("results:import"),
        {"file": SimpleUploadedFile("half.json", good + b'{"data": [{"position": 0}]}')},
    )
    assert response.status_code == 400
    assert "half.json, document 2, row 1: the row has no &quot;token&quot;" in response.content.decode()
    assert Analysis.objects.count() == before


def test_import_page_refuses_a_file_over_the_size_setting(client, alice, good, settings):
    settings.LENSWEB_MAX_IMPORT_BYTES = 2048
    client.force_login(alice)
    response = client.post(reverse("results:import"), {"file": SimpleUploadedFile("big.json", good)})
    assert response.status_code == 400
    assert "The file is over the import limit of 2 KB" in response.content.decode()
    assert not Analysis.objects.filter(metadata__imported=True).exists()
    settings.LENSWEB_MAX_IMPORT_BYTES = 20 * 2**20
    assert "at most 20 MB" in client.get(reverse("results:import")).content.decode()


def test_import_page_checks_csrf(alice, good):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(reverse("results:import"), {"file": SimpleUploadedFile("mine.json", good)})
    assert response.status_code == 403
    assert not Analysis.objects.filter(metadata__imported=True).exists()


def test_hostile_envelopes_are_cleaned_not_stored(good):
    document = json.loads(good)
    document["metadata"]["input"] = {"messages": [1, "x"]}
    document["metadata"]["options"] = {"best_of_k": "many", "salience": "yes", "seed": 7, "evil": 1}
    (t,) = parse_import(json.dumps(document).encode(), "x.json")
    assert "messages" not in t.input and isinstance(t.input["text"], str)
    assert t.options["best_of_k"] == 2 and t.options["salience"] is True and t.options["seed"] == 7
    assert "evil" not in t.options
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ImportFormatError, match="nested too deeply|not valid JSON"):
        parse_import(deep, "deep.json")


def test_imported_chats_keep_their_messages(alice, analysis):
    document = json.loads(export_json(analysis, services.rows_of(analysis)))
    document["metadata"]["input"] = {"messages": [{"role": "user", "content": "Hi"}]}
    (imported,) = services.do_import(
        alice, parse_import(json.dumps(document).encode(), "chat.json"), "chat.json"
    )
    assert imported.is_chat and imported.input_preview == "user: Hi"
