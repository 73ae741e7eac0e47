"""Imports are metered and bounded (issue 9, item 9): a per-user rate, the daily positions quota, at most
LENSWEB_MAX_TOKENS rows per transcript and LENSWEB_MAX_IMPORT_ROWS per file, rows written in batches.
And every malformed file gets a clear 400 naming where and what, never a 500 (item 12): out-of-range
numbers, NaN and Infinity, salience that does not pair with the explanation, candidates that are not
text, lone surrogates, deep nesting."""

from __future__ import annotations

import html
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from lensweb.analyses.models import Analysis, AnalysisRow
from lensweb.analyses.quotas import positions_today
from lensweb.results import services
from lensweb.results.export import export_json
from lensweb.results.imports import parse_import
from tests.accounts.conftest import clear_ratelimits  # noqa: F401  (autouse: every test starts uncounted)

pytestmark = pytest.mark.django_db


@pytest.fixture
def good(analysis) -> bytes:
    return export_json(analysis, services.rows_of(analysis))


@pytest.fixture
def n_rows(analysis) -> int:
    return len(services.rows_of(analysis))


def post(client, content: bytes, name: str = "mine.json"):
    return client.post(reverse("results:import"), {"file": SimpleUploadedFile(name, content)})


def page_text(response) -> str:
    return html.unescape(response.content.decode())


def imported(user) -> int:
    return Analysis.objects.filter(owner=user, metadata__imported=True).count()


def synthetic(n_rows: int, transcripts: int = 1) -> bytes:
    """A research-site file of `transcripts` transcripts of `n_rows` rows each, built without the engine."""
    rows = [
        {"position": i, "token": " x", "explanation_structured": [" a", " b"], "token_salience": [0.1, -0.1]}
        | {"mse": 1.0, "relative_rmse": 0.5, "kl_divergence": -1.0}
        for i in range(n_rows)
    ]
    return b"\n".join(
        json.dumps({"metadata": {"model_id": "x"}, "data": rows}).encode() for _ in range(transcripts)
    )


# --- the rate ---------------------------------------------------------------------------------------------


def test_imports_are_rate_limited_per_user(client, alice, bob, good, settings):
    settings.LENSWEB_IMPORT_RATE = "2/m"
    client.force_login(alice)
    assert [post(client, good).status_code for _ in range(2)] == [302, 302]
    refused = post(client, good)
    assert refused.status_code == 429, "the third import in a minute is over a 2/m rate"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "You are importing too fast; wait" in page_text(refused)
    assert imported(alice) == 2
    assert client.get(reverse("results:import")).status_code == 200  # the page itself is not counted
    client.force_login(bob)  # per user: bob has his own count
    assert post(client, good).status_code == 302 and imported(bob) == 1


def test_refused_files_count_against_the_rate_too(client, alice, settings):
    settings.LENSWEB_IMPORT_RATE = "2/m"
    client.force_login(alice)
    assert [post(client, b"{nope", "bad.json").status_code for _ in range(3)] == [400, 400, 429]


# --- the daily quota --------------------------------------------------------------------------------------


def test_imported_rows_count_against_the_daily_positions_quota(
    client, alice, analysis, good, n_rows, settings
):
    # the fixture's analysis (n_rows positions, created today) already counts
    settings.LENSWEB_MAX_POSITIONS_PER_DAY = 2 * n_rows
    client.force_login(alice)
    assert post(client, good).status_code == 302
    assert positions_today(alice) == 2 * n_rows
    refused = post(client, good, "again.json")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    text = page_text(refused)
    assert "Not imported: each imported row counts as an analysed position" in text
    assert f"you have used {2 * n_rows:,} of your {2 * n_rows:,} positions today" in text
    assert imported(alice) == 1 and positions_today(alice) == 2 * n_rows


def test_a_file_over_the_quota_on_its_own_is_refused_whole(alice, good, n_rows, settings):
    from lensweb.analyses.errors import QuotaExceeded

    settings.LENSWEB_MAX_POSITIONS_PER_DAY = 2 * n_rows  # the fixture's n_rows + one more transcript
    transcripts = parse_import(good + good, "two.json")
    with pytest.raises(QuotaExceeded):
        services.do_import(alice, transcripts, "two.json")
    assert imported(alice) == 0  # all or nothing: not the first transcript alone


def test_a_file_cannot_claim_to_be_a_cache_answer_to_skip_the_quota(alice, good, n_rows):
    document = json.loads(good)
    document["metadata"]["cached"] = True  # the quota does not count what the result cache answered
    before = positions_today(alice)
    (analysis,) = services.do_import(alice, parse_import(json.dumps(document).encode(), "x.json"), "x.json")
    assert "cached" not in analysis.metadata
    assert positions_today(alice) == before + n_rows


# --- rows: per transcript, per file, in batches -----------------------------------------------------------


def test_a_transcript_longer_than_the_token_bound_is_refused_not_cut(client, alice, good, n_rows, settings):
    settings.LENSWEB_MAX_TOKENS = n_rows - 1
    client.force_login(alice)
    response = post(client, good)
    assert response.status_code == 400
    assert (
        f"mine.json: {n_rows} rows; the limit is {n_rows - 1} rows per transcript (one row per token, and an "
        f"analysis has at most {n_rows - 1} tokens)"
    ) in page_text(response)
    assert imported(alice) == 0


def test_the_row_bound_is_the_token_bound(settings):
    bound = settings.LENSWEB_MAX_TOKENS  # 1,024 unless the environment says otherwise
    (t,) = services.parse_upload(synthetic(bound), "full.json")
    assert len(t.rows) == bound
    with pytest.raises(
        services.imports.ImportFormatError, match=f"{bound + 1:,} rows; the limit is {bound:,} rows"
    ):
        services.parse_upload(synthetic(bound + 1), "long.json")


def test_a_file_with_too_many_rows_in_all_is_refused(client, alice, settings):
    settings.LENSWEB_MAX_IMPORT_ROWS = 1_000
    client.force_login(alice)
    response = post(client, synthetic(400, transcripts=3), "three.json")
    assert response.status_code == 400
    assert "three.json holds 1,200 rows in all; the limit is 1,000 rows per file" in page_text(response)
    assert imported(alice) == 0
    assert post(client, synthetic(400, transcripts=2), "two.json").status_code == 302


def test_rows_are_inserted_in_batches(alice):
    (t,) = services.parse_upload(synthetic(1_024), "full.json")
    with CaptureQueriesContext(connection) as queries:
        (analysis,) = services.do_import(alice, [t], "full.json")
    row_table = AnalysisRow._meta.db_table
    inserts = [q["sql"] for q in queries if q["sql"].startswith(f'INSERT INTO "{row_table}"')]
    assert len(inserts) >= -(-1_024 // services.IMPORT_BATCH_ROWS), "one INSERT per batch of rows"
    assert AnalysisRow.objects.filter(analysis=analysis).count() == 1_024


# --- malformed files: a clear 400, nothing stored ---------------------------------------------------------


def _set(path, value):
    """A change to the parsed document: set document[path...] = value."""

    def change(document):
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _deep(levels: int):
    value = 0
    for _ in range(levels):
        value = [value]
    return value


def _over_the_text_bound(document):
    document["metadata"]["input"] = {"text": "x" * 20_001}


def _salience_one_short(document):
    document["data"][4]["token_salience"] = document["data"][4]["token_salience"][:-1]


def _salience_on_a_research_row(document):
    """A research-site row (no explanation_tokens): salience pairs with explanation_structured, whose last
    entry is the "[token]" the lens adds."""
    row = document["data"][4]
    del row["explanation_tokens"]
    row["token_salience"] = row["token_salience"] + [0.0]


MALFORMED = [
    # out-of-range whole numbers: a position past the row column, token ids past int32 or int64
    (
        _set(("data", 0, "position"), 10**30),
        "the value at data[0].position is a whole number beyond 64 bits",
    ),
    (
        _set(("data", 0, "position"), 2**31),
        'row 1: "position" must be a whole number from 0 to 2,147,483,647',
    ),
    (
        _set(("data", 1, "token_id"), 2**40),
        'row 2: "token_id" must be a whole number from 0 to 2,147,483,647',
    ),
    (_set(("data", 1, "token_id"), -3), 'row 2: "token_id" must be a whole number from 0 to 2,147,483,647'),
    (_set(("data", 2, "token_id"), 2**64), "the value at data[2].token_id is a whole number beyond 64 bits"),
    (
        _set(("data", 2, "explanation_token_ids", 0), 2**63),
        "data[2].explanation_token_ids[0] is a whole number",
    ),
    (
        _set(("data", 2, "explanation_token_ids", 0), 2**33),
        '"explanation_token_ids" must be token ids from 0',
    ),
    (_set(("metadata", "seed"), -(2**70)), "the value at metadata.seed is a whole number beyond 64 bits"),
    (_set(("data", 3, "mse"), 1e17), 'row 4: "mse" must be between -1e+15 and 1e+15, got a number 1e+17'),
    (_set(("data", 3, "mse"), 10**16), 'row 4: "mse" must be between -1e+15 and 1e+15'),
    # PostgreSQL's jsonb would give this back as a 301-digit whole number
    (_set(("metadata", "name"), 1e300), "the value at metadata.name is a number beyond ±9.2e18"),
    (_set(("data", 3, "kl_divergence"), -1e16), '"kl_divergence" must be between -1e+15 and 1e+15'),
    (
        _set(("data", 3, "token_salience", 1), 1e16),
        '"token_salience" must be numbers between -1e+15 and 1e+15',
    ),
    # NaN and Infinity, which json.loads accepts (and json.dumps writes) by default
    (_set(("data", 3, "mse"), float("nan")), "the value at data[3].mse is NaN: JSON has no NaN or Infinity"),
    (_set(("data", 3, "token_salience", 0), float("inf")), "data[3].token_salience[0] is Infinity"),
    (
        _set(("metadata", "timings", "total"), float("-inf")),
        "the value at metadata.timings.total is -Infinity",
    ),
    (_set(("metadata", "layer"), float("nan")), "the value at metadata.layer is NaN"),
    # salience pairs with the explanation's tokens
    (_salience_one_short, 'row 5: "token_salience" has 5 values but the explanation has 6 tokens'),
    (_salience_on_a_research_row, 'row 5: "token_salience" has 7 values but the explanation has 6 tokens'),
    # candidates: their explanation is shown as text, their count is best-of-k's
    (_set(("data", 0, "candidates", 0, "explanation"), 5), '"candidates[].explanation" must be a string'),
    (_set(("data", 0, "candidates", 0, "explanation"), ["a"]), '"candidates[].explanation" must be a string'),
    (_set(("data", 0, "candidates", 0, "chosen"), "yes"), '"candidates[].chosen" must be true/false'),
    (
        _set(("data", 0, "candidates", 1, "explanation_token_ids"), ["x"]),
        '"explanation_token_ids" must be a list',
    ),
    (_set(("data", 0, "candidates"), [{"mse": 1.0}] * 65), '"candidates" has 65 entries; the limit is 64'),
    (
        _set(("data", 0, "logit_lens_top"), [1, 2]),
        'row 1: "logit_lens_top" must be a list of strings or null',
    ),
    # lone surrogates, in a value or in a key
    (_set(("data", 5, "token"), "a\ud800b"), "the value at data[5].token holds a lone UTF-16 surrogate"),
    (
        _set(("metadata", "note\udfff"), 1),
        "the value at metadata has a key with a lone UTF-16 surrogate ('note\\udfff')",
    ),
    (_set(("metadata", "input"), {"text": "\udc00"}), "metadata.input.text holds a lone UTF-16 surrogate"),
    # nesting deeper than any export (ours nests 6 levels)
    (_set(("metadata", "extra"), _deep(40)), "is nested more than 32 levels deep"),
    (_set(("data", 0, "rollouts"), _deep(40)), "is nested more than 32 levels deep"),
    (_over_the_text_bound, "the input has 20,001 characters; the limit is 20,000"),
]


@pytest.mark.parametrize("change,message", MALFORMED, ids=[m[:40] for _, m in MALFORMED])
def test_malformed_files_get_a_clear_400(client, alice, good, change, message):
    document = json.loads(good)
    change(document)
    content = json.dumps(document).encode()  # ensure_ascii: a lone surrogate is written as its escape
    client.force_login(alice)
    response = post(client, content, "bad.json")
    assert response.status_code == 400
    text = page_text(response)
    assert message in text
    assert 'role="alert"' in text and "bad.json" in text
    assert imported(alice) == 0


def test_file_level_breakage_gets_a_clear_400(client, alice, good):
    client.force_login(alice)
    for content, message in [
        (b"[" * 100_000 + b"]" * 100_000, "deep.json is nested too deeply to be an analysis export"),
        (b'{"metadata": {}, "data": [' * 20_000, "deep.json is nested too deeply"),
        (
            b'{"data": [{"position": ' + b"9" * 5_000 + b"}]}",
            "deep.json holds a whole number too long to read",
        ),
        (b'{"data": [{"position": 1e400, "token": "a", "mse": 1}]}', "beyond the range of a float"),
        (b'{"data": [{"position": 0, "token": "a", "mse": NaN}]}', "data[0].mse is NaN"),
        (b'{"data": [{"position": 0, "token": "\\ud800", "mse": 1}]}', "data[0].token holds a lone UTF-16"),
        (b'{"data": [{"position": 0, "token": "\xed\xa0\x80", "mse": 1}]}', "is not UTF-8 text"),
        # refused at the 101st value, not after parsing 200,000 of them
        (b"[] " * 200_000, "deep.json holds more than 100 transcripts; the limit is 100 per file"),
    ]:
        response = post(client, content, "deep.json")
        assert response.status_code == 400, content[:60]
        assert message in page_text(response), content[:60]
    assert imported(alice) == 0


def test_surrogate_pairs_and_moderate_nesting_still_import(client, alice, good):
    """What the checks must not refuse: an escaped emoji (a valid surrogate pair), a research file's own
    nested fields, and negative or tiny numbers."""
    document = json.loads(good)
    document["data"][0]["token"] = "\ud83d\ude00"  # written as "\ud83d\ude00" by json.dumps
    document["data"][0]["rollouts"] = [{"ids": [1, 2], "decode": {"top": [[0.5, -0.5]]}}]
    document["data"][1]["relative_rmse"] = -1e-300
    client.force_login(alice)
    assert post(client, json.dumps(document).encode()).status_code == 302
    analysis = Analysis.objects.get(owner=alice, metadata__imported=True)
    first = services.rows_of(analysis)[0]
    assert first["token"] == "😀" and first["imported_fields"]["rollouts"][0]["decode"]["top"] == [
        [0.5, -0.5]
    ]
    for name in ("results:detail", "results:export_json", "results:export_csv"):
        assert client.get(reverse(name, args=[analysis.pk])).status_code == 200


@pytest.mark.parametrize(
    ("where", "named"),
    [
        (("data", 0, "explanation_structured", 0), "data[0].explanation_structured[0]"),
        (("data", 1, "token"), "data[1].token"),
        (("metadata", "model_id"), "metadata.model_id"),
    ],
)
def test_a_nul_in_an_imported_value_is_a_400_naming_where_on_every_database(
    client, alice, good, where, named
):
    """PostgreSQL's jsonb refuses \\u0000 (the import answered 500 there); SQLite takes it: refused on both."""
    document = json.loads(good)
    target = document
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = "before\x00after"  # json.dumps writes it as \u0000
    client.force_login(alice)
    response = post(client, json.dumps(document).encode())
    assert response.status_code == 400
    text = page_text(response)
    assert named in text and "NUL" in text, text[-600:]
    assert imported(alice) == 0
