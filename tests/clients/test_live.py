"""The Python client against the real lensweb: `manage.py serve` (daphne, embedded worker, the tiny test
lens, one position per batch so that a job streams in several batches), a user and an API key made by
`manage.py ensure_demo_user` and `manage.py create_api_key`. One server for the module."""

from __future__ import annotations

import csv
import http.cookiejar
import io
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from lensweb_client import (
    Analysis,
    AuthenticationError,
    Client,
    Generation,
    InvalidRequest,
    JobCancelled,
    NotFound,
    Probe,
)

from tests.conftest import SLOW_TEXT, scaled, write_tiny_registry
from tests.live import live_server

TEXT = "The capital of France is Paris."
T = TypeVar("T")


def make_key(path) -> list[str]:
    """A setup step: the demo user's API key, as `manage.py create_api_key` prints it, into `path`."""
    code = (
        "import io, pathlib; from django.core.management import call_command; out = io.StringIO(); "
        "call_command('create_api_key', 'demo', '--name', 'client tests', stdout=out, stderr=io.StringIO()); "
        f"pathlib.Path({str(path)!r}).write_text(out.getvalue().strip().splitlines()[-1])"
    )
    return ["shell", "--no-imports", "-c", code]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client-live")
    key = tmp / "api-key"
    with live_server(
        tmp,
        setup=[["ensure_demo_user"], make_key(key)],
        browser=False,
        LENSWEB_LENS_REGISTRY=str(write_tiny_registry(tmp)),
        LENSWEB_ROWS_BUDGET="1",
        LENSWEB_POLL_INTERVAL="0.5",
        LENSWEB_HEARTBEAT_INTERVAL="1",
    ) as base:
        yield base, key.read_text()


@pytest.fixture(scope="module")
def client(live) -> Client:
    base, key = live
    return Client(base, key, timeout=scaled(30))


def within(seconds: float, work: Callable[[], T]) -> T:
    """`work()`, failing (not hanging) if it takes longer than `seconds`: a stream has no timeout of its own."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"not finished within {seconds:.0f} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture(scope="module")
def streamed(client) -> tuple[Analysis, dict, list]:
    """(the analysis, its submission answer, the events its stream gave) of one job followed live. The
    first stream is left after its first rows (the connection closes); the second resumes from there."""
    analysis = client.analyze(TEXT, seed=1)
    submitted = dict(analysis.data)

    def follow() -> list:
        events = []
        for event in analysis.stream():
            events.append(event)
            if event.event == "rows":
                break
        return events + list(analysis.stream())

    return analysis, submitted, within(scaled(120), follow)


def test_submit_then_stream_status_rows_and_done(streamed):
    analysis, submitted, events = streamed
    assert submitted["status"] in ("queued", "running") and set(submitted) >= {"id", "url", "html_url"}
    names = [event.event for event in events]
    assert names[0] == "status" and names[-1] == "done" and "rows" in names
    assert names.count("status") >= 2, "the resumed stream starts with the status again"
    for event in events:
        if event.event == "rows":
            assert event.id == str(event.data["rows"][-1]["position"]), (
                "a rows event's id is its last position"
            )
    sent = [row["position"] for event in events if event.event == "rows" for row in event.data["rows"]]
    assert sent == list(range(len(sent))) and sent, "resumed with Last-Event-ID: no row missed, none twice"
    assert [row["position"] for row in analysis.rows] == sent
    assert analysis.status == "done" and analysis.is_final
    assert analysis.progress == (len(sent), len(sent))
    assert events[-1].data["id"] == analysis.id and "rows" not in events[-1].data


def test_streamed_rows_equal_the_rows_of_get(client, streamed):
    analysis, _, _ = streamed
    fresh = client.analysis(analysis.id)
    assert fresh.rows == analysis.rows
    assert {"position", "token", "explanation", "mse"} <= set(fresh.rows[0])


def test_to_pandas_has_one_row_per_position(streamed):
    import pandas  # noqa: F401  (a dev dependency: the round trip must reach the DataFrame)

    analysis, _, _ = streamed
    frame = analysis.to_pandas()
    assert len(frame) == len(analysis.rows) and list(frame["position"]) == [
        r["position"] for r in analysis.rows
    ]


class _Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None  # the 3xx comes back as an HTTPError, to be looked at


def signed_in(base: str) -> urllib.request.OpenerDirector:
    """A browser's session of the demo user: the login form, its CSRF cookie and token, the session cookie."""
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    browser.open(f"{base}/accounts/login/", timeout=scaled(30)).close()
    token = next(cookie.value for cookie in jar if cookie.name == "csrftoken")
    form = {"username": "demo", "password": "lensweb-demo", "csrfmiddlewaretoken": token}
    login = urllib.request.Request(
        f"{base}/accounts/login/",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Origin": base, "Referer": f"{base}/accounts/login/"},
    )
    browser.open(login, timeout=scaled(30)).close()
    assert any(cookie.name == "sessionid" for cookie in jar), "the demo user should be signed in"
    return browser


def test_html_url_is_the_results_page(live, streamed):
    base, _ = live
    analysis, _, _ = streamed
    assert analysis.html_url == f"{base}/analyses/{analysis.id}/"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.build_opener(_Stay).open(analysis.html_url, timeout=scaled(30))
    assert anonymous.value.code == 302 and "/accounts/login/" in anonymous.value.headers["Location"]
    with signed_in(base).open(analysis.html_url, timeout=scaled(30)) as page:
        assert page.status == 200 and page.url == analysis.html_url, "the owner's session opens the page"
        html = page.read().decode()
    assert f"Analysis #{analysis.id}" in html and TEXT in html


def test_list_finds_the_job(client, streamed):
    analysis, _, _ = streamed
    assert analysis.id in [found.id for found in client.list(limit=20)]
    [found] = [
        a for a in client.list(status="done", q="capital of France", page_size=1) if a.id == analysis.id
    ]
    assert found.rows == analysis.rows, "a listed job fetches its rows when asked"
    hour = timedelta(hours=1)
    assert analysis.id in [a.id for a in client.list(created_after=datetime.now(UTC) - hour)]
    assert analysis.id not in [a.id for a in client.list(created_after=datetime.now(UTC) + hour)]


def test_exports_are_the_same_bytes_twice(client, streamed):
    analysis, _, _ = streamed
    first = client.export(analysis, "json")
    assert first == analysis.export("json") and json.loads(first)
    table = client.export(analysis.id, "csv")
    assert table == analysis.export("csv")
    assert len(list(csv.reader(io.StringIO(table.decode("utf-8-sig"))))) > len(analysis.rows)


def test_analyze_many_one_good_one_bad(client):
    good, bad = client.analyze_many([{"text": "A short text."}, {"text": "x", "options": {"best_of_k": 0}}])
    assert isinstance(good, Analysis)
    assert isinstance(bad, InvalidRequest) and (bad.code, bad.field) == (
        "invalid_option",
        "options.best_of_k",
    )
    assert good.wait(timeout=scaled(120)).rows


def test_errors_map_to_their_exceptions(live, client):
    with pytest.raises(NotFound) as caught:
        client.analysis(10**9)
    assert caught.value.code == "not_found" and caught.value.status == 404
    with pytest.raises(InvalidRequest) as caught:
        client.analyze("x", temperature=-1)  # 0 is greedy; below it nothing
    assert (caught.value.code, caught.value.field) == ("invalid_option", "options.temperature")
    with pytest.raises(InvalidRequest) as caught:
        client.analyze("x", lens="no-such-lens")
    assert caught.value.code == "unknown_lens" and "unknown_lens" in str(caught.value)
    base, key = live
    with pytest.raises(AuthenticationError) as caught:
        Client(base, key[:-4] + "xxxx").lenses()
    assert caught.value.code == "unauthenticated"


def test_lenses_and_the_rate_limit_headers(client):
    [lens] = client.lenses()
    assert (lens.id, lens.default, lens.kind) == ("tiny", True, "lens")
    assert isinstance(client.last_rate_limit, int) and client.last_rate_limit >= 0
    assert isinstance(client.last_quota_remaining, int), "the default settings give a daily positions quota"


def test_status_after_a_job_says_the_lens_is_loaded(client, streamed):
    status = client.status()
    assert status.workers_online == 1  # the server's embedded worker
    tiny = status.lens("tiny")
    assert tiny is not None and tiny.state == "loaded" and tiny.workers == 1
    assert tiny.load_seconds is not None and tiny.load_seconds >= 0


def test_wait_with_a_progress_bar(client, capsys):
    analysis = client.analyze("Bees make honey in the summer.", seed=2)
    assert analysis.wait(progress=True, timeout=scaled(120)) is analysis
    total = len(analysis.rows)
    assert analysis.status == "done" and total and analysis.progress == (total, total)
    assert f"{total}/{total}" in capsys.readouterr().err


def test_cancel_a_running_job(client):
    analysis = client.analyze(SLOW_TEXT, seed=3)
    analysis.cancel()
    assert analysis.data["cancel_requested"] is True or analysis.status == "cancelled"
    with pytest.raises(JobCancelled):
        analysis.wait(timeout=scaled(120))
    assert analysis.status == "cancelled"


def test_generation_then_its_analysis(client):
    generation = client.generate("Once upon a time", max_new_tokens=3, temperature=0, then_analyse=True)
    assert isinstance(generation, Generation) and generation.id
    assert generation.wait(timeout=scaled(120), poll=0.2).status == "done"
    assert len(generation.samples) == 1
    follow_up = generation.analysis()
    assert follow_up is not None and follow_up.wait(timeout=scaled(120)).rows


def test_score_your_own_words_and_read_activations(client, streamed):
    analysis, _, _ = streamed
    row = client.analysis(analysis.id).rows[1]
    own = client.score(analysis, 1, explanation_token_ids=row["explanation_token_ids"])
    assert isinstance(own, Probe) and own.wait(timeout=scaled(120)).status == "done"
    assert own.row["mse"] == pytest.approx(row["mse"], rel=1e-4) and abs(own.delta_mse) <= 1e-4 * row["mse"]
    words = client.score(analysis.id, -1, "a word of my own").wait(timeout=scaled(120))
    assert words.row["explanation"] == "a word of my own" and words.delta_mse is not None
    read = client.activations(analysis, [0, 1]).wait(timeout=scaled(120))
    assert len(read.activations) == 2 and client.probe(read.id).activations == read.activations
    with pytest.raises(InvalidRequest, match="outside"):
        client.score(analysis, 500, "x")  # within the schema's bound, past the text
    described = client.describe(read.activations, temperature=0).wait(timeout=scaled(120))
    assert [row["position"] for row in described.rows] == [0, 1] and described.rows[0]["explanation"]
    with pytest.raises(InvalidRequest, match="activations have"):
        client.describe([[0.5, 0.5]])
    same = client.compare({"analysis_id": analysis.id, "position": 0}, {"vector": read.activations[1]})
    assert same.wait(timeout=scaled(120)).diff_norm > 0 and same.row["explanation"]
