"""The job objects against canned answers: rows fetched when needed and incrementally, the event stream
resumed with Last-Event-ID, waiting (stream for analyses, polling for generations), pages, batches,
exports."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pytest
from lensweb_client import (
    Analysis,
    ConnectionFailed,
    Generation,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    RateLimited,
)

from .conftest import Reply, row, sse

API = "/api/v1"
EVENTS = f"{API}/analyses/7/events"
SUBMITTED = {
    "id": 7,
    "status": "queued",
    "queue_position": 1,
    "cached": False,
    "url": "http://x/api/v1/analyses/7",
    "html_url": "http://x/analyses/7/",
}


def analysis_json(status: str, rows: list[dict] | None = None, **more) -> dict:
    data = {
        "id": 7,
        "status": status,
        "lens": "tiny",
        "progress": {"done": len(rows or []), "total": 3},
        "error": None,
        **more,
    }
    if rows is not None:
        data["rows"] = rows
    return data


def status_event(status: str, done: int) -> bytes:
    return sse(
        "status", {"id": 7, "status": status, "queue_position": None, "progress": {"done": done, "total": 3}}
    )


@pytest.fixture
def submitted(server, client) -> Analysis:
    server.on("POST", f"{API}/analyses", Reply(202, SUBMITTED))
    return client.analyze("Hello", lens="tiny", default_system_prompt=False, best_of_k=2, kl=True)


def test_analyze_sends_the_contract_body_and_rows_are_fetched_when_needed(server, submitted):
    assert server.requests("POST", f"{API}/analyses")[0].json() == {
        "text": "Hello",
        "lens": "tiny",
        "default_system_prompt": False,
        "options": {"best_of_k": 2, "kl": True},
    }
    assert (submitted.id, submitted.status, submitted.html_url) == (7, "queued", "http://x/analyses/7/")
    assert server.requests("GET", f"{API}/analyses/7") == [], "nothing fetched before it is needed"
    server.on(
        "GET",
        f"{API}/analyses/7",
        Reply(200, analysis_json("running", [row(0), row(1)])),
        Reply(200, analysis_json("done", [row(2)])),
    )
    assert [r["position"] for r in submitted.rows] == [0, 1]
    assert submitted.status == "running" and submitted.progress == (2, 3)
    submitted.refresh()
    assert [r["position"] for r in submitted.rows] == [0, 1, 2]
    queries = [seen.query for seen in server.requests("GET", f"{API}/analyses/7")]
    assert queries == ["", "after=1"], "a refresh asks only for the rows after those held"
    assert submitted.is_final and "rows" not in submitted.data


def test_chat_analysis_body(server, client):
    server.on("POST", f"{API}/analyses", Reply(200, {**SUBMITTED, "status": "done", "cached": True}))
    chat = [{"role": "user", "content": "Hi"}]
    assert client.analyze(messages=chat, last_n_messages=None).is_final
    assert server.requests("POST", f"{API}/analyses")[0].json() == {
        "messages": chat,
        "options": {"last_n_messages": None},
    }


def test_the_stream_resumes_with_last_event_id_after_the_server_closes(server, submitted):
    server.on(
        "GET",
        EVENTS,
        Reply(
            chunks=[
                b": keep-alive\n\n",
                status_event("running", 0),
                sse("rows", {"rows": [row(0), row(1)]}, id="1"),
            ]
        ),
        # the second connection resends position 1 (as a server might around a batch edge): kept once
        Reply(chunks=[sse("rows", {"rows": [row(1), row(2)]}, id="2"), sse("done", analysis_json("done"))]),
    )
    seen = [(event.event, event.id) for event in submitted.stream()]
    assert seen == [("status", None), ("rows", "1"), ("rows", "2"), ("done", "2")]
    assert [r["position"] for r in submitted.rows] == [0, 1, 2]
    assert submitted.status == "done" and submitted.data["lens"] == "tiny"
    first, second = server.requests("GET", EVENTS)
    assert "Last-Event-ID" not in first.headers and second.headers["Last-Event-ID"] == "1"
    assert first.headers["Accept"] == "text/event-stream"
    assert server.requests("GET", f"{API}/analyses/7") == [], "the stream alone brought every row"


def test_an_event_cut_off_mid_way_is_not_applied_and_comes_again(server, submitted, sleeps):
    server.on(
        "GET",
        EVENTS,
        Reply(
            chunks=[sse("rows", {"rows": [row(0)]}, id="0"), b'event: rows\nid: 1\ndata: {"rows": [{"posi']
        ),
        Reply(chunks=[sse("rows", {"rows": [row(1), row(2)]}, id="2"), sse("done", analysis_json("done"))]),
    )
    assert submitted.wait() is submitted
    assert [r["position"] for r in submitted.rows] == [0, 1, 2]
    assert server.requests("GET", EVENTS)[1].headers["Last-Event-ID"] == "0"
    assert sleeps == [], "a connection that brought events is resumed at once"


def test_wait_raises_on_a_failed_or_cancelled_end(server, submitted):
    server.on("GET", EVENTS, Reply(chunks=[sse("failed", analysis_json("failed", error="the lens broke"))]))
    with pytest.raises(JobFailed, match="the lens broke") as caught:
        submitted.wait()
    assert caught.value.job is submitted and submitted.error == "the lens broke"
    submitted.data["status"] = "running"
    server.on("GET", EVENTS, Reply(chunks=[sse("cancelled", analysis_json("cancelled"))]))
    with pytest.raises(JobCancelled):
        submitted.wait()


def test_a_final_job_is_not_streamed_again(server, client):
    server.on("GET", f"{API}/analyses/7", Reply(200, analysis_json("done", [row(0)])))
    assert client.analysis(7).wait().status == "done"
    assert server.requests("GET", EVENTS) == []


def test_wait_times_out_while_the_server_only_keeps_alive(server, submitted):
    server.on("GET", EVENTS, Reply(chunks=[status_event("queued", 0), *[0.05, b": keep-alive\n\n"] * 200]))
    with pytest.raises(TimeoutError, match="analysis 7 is still queued"):
        submitted.wait(timeout=0.5)


def test_a_stream_that_keeps_closing_empty_is_given_up(server, client, submitted, sleeps):
    server.on("GET", EVENTS, Reply(chunks=[]), Reply(chunks=[b"retry: 250\n\n"]), Reply(chunks=[]))
    with pytest.raises(ConnectionFailed):
        list(submitted.stream())
    # the second connection sent a byte (its retry: field, taken for later reconnections), so the count of
    # failed connections starts again after it
    assert len(server.requests("GET", EVENTS)) == 2 + client.max_retries + 1
    assert sleeps == [1.0] + [0.25] * (client.max_retries + 1)


def test_too_many_streams_is_a_429_retried_like_any_other(server, submitted, sleeps):
    limited = Reply(
        429, {"error": {"code": "rate_limited", "message": "too many streams"}}, headers={"Retry-After": "1"}
    )
    server.on("GET", EVENTS, limited, Reply(chunks=[sse("done", analysis_json("done"))]))
    assert submitted.wait().status == "done" and sleeps == [1.0]


def test_wait_with_a_progress_bar(server, submitted, capsys):
    server.on(
        "GET",
        EVENTS,
        Reply(
            chunks=[
                status_event("running", 0),
                sse("rows", {"rows": [row(0), row(1)]}, id="1"),
                sse("rows", {"rows": [row(2)]}, id="2"),
                sse("done", {**analysis_json("done"), "progress": {"done": 3, "total": 3}}),
            ]
        ),
    )
    submitted.wait(progress=True)
    err = capsys.readouterr().err
    assert "analysis 7" in err and "3/3" in err


def test_cancel(server, submitted):
    server.on("DELETE", f"{API}/analyses/7", Reply(200, analysis_json("cancelled", cancel_requested=True)))
    assert submitted.cancel() is submitted and submitted.status == "cancelled"
    assert submitted.data["cancel_requested"] is True


def test_to_pandas_one_row_per_position_lists_kept(server, client):
    import pandas

    rows = [{**row(i), "explanation_tokens": ["a", "b"], "candidates": [{"text": "x"}]} for i in range(3)]
    server.on("GET", f"{API}/analyses/7", Reply(200, analysis_json("done", rows)))
    frame = client.analysis(7).to_pandas()
    assert isinstance(frame, pandas.DataFrame) and list(frame["position"]) == [0, 1, 2]
    assert frame["explanation_tokens"][0] == ["a", "b"]


def test_to_pandas_without_pandas_says_how_to_get_it(server, client, monkeypatch):
    server.on("GET", f"{API}/analyses/7", Reply(200, analysis_json("done", [row(0)])))
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError, match=r"lensweb-client\[pandas\]"):
        client.analysis(7).to_pandas()


def test_list_follows_the_cursor_and_sends_the_filters(server, client):
    items = [analysis_json("done", id=i) for i in (9, 8, 7, 6, 5)]
    server.on(
        "GET",
        f"{API}/analyses",
        Reply(200, {"items": items[:2], "next_cursor": "c1"}),
        Reply(200, {"items": items[2:4], "next_cursor": "c2"}),
        Reply(200, {"items": items[4:], "next_cursor": None}),
    )
    after = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    got = list(
        client.list(status="done", q="Paris", created_after=after, created_before="2026-02-01", page_size=2)
    )
    assert [a.id for a in got] == [9, 8, 7, 6, 5]
    queries = [seen.query for seen in server.requests("GET", f"{API}/analyses")]
    assert queries[0] == (
        "status=done&q=Paris&created_after=2026-01-02T03%3A04%3A05%2B00%3A00&created_before=2026-02-01&limit=2"
    )
    assert queries[1].endswith("&limit=2&cursor=c1") and queries[2].endswith("&cursor=c2")


def test_list_stops_at_its_limit(server, client):
    items = [analysis_json("done", id=i) for i in range(10, 0, -1)]
    server.on(
        "GET",
        f"{API}/analyses",
        Reply(200, {"items": items[:4], "next_cursor": "c1"}),
        Reply(200, {"items": items[4:5], "next_cursor": "c2"}),
    )
    assert [a.id for a in client.list(limit=5, page_size=4)] == [10, 9, 8, 7, 6]
    queries = [seen.query for seen in server.requests("GET", f"{API}/analyses")]
    assert queries == ["limit=4", "limit=1&cursor=c1"]


def test_analyze_many_keeps_the_order_and_returns_refusals(server, client):
    refused = {
        "error": {
            "code": "invalid_option",
            "message": "temperature must be > 0",
            "field": "options.temperature",
        }
    }
    server.on("POST", f"{API}/analyses/batch", Reply(200, {"items": [SUBMITTED, refused]}))
    good, bad = client.analyze_many([{"text": "a"}, {"text": "b", "options": {"temperature": -1}}])
    assert isinstance(good, Analysis) and good.id == 7
    assert isinstance(bad, InvalidRequest) and (bad.code, bad.field) == (
        "invalid_option",
        "options.temperature",
    )
    assert server.requests("POST", f"{API}/analyses/batch")[0].json() == {
        "items": [{"text": "a"}, {"text": "b", "options": {"temperature": -1}}]
    }


def test_analyze_many_sends_at_most_100_per_request(server, client):
    def answer(n: int) -> Reply:
        return Reply(200, {"items": [{**SUBMITTED, "id": i} for i in range(n)]})

    server.on("POST", f"{API}/analyses/batch", answer(100), answer(50))
    results = client.analyze_many([{"text": str(i)} for i in range(150)])
    assert len(results) == 150
    sent = [len(seen.json()["items"]) for seen in server.requests("POST", f"{API}/analyses/batch")]
    assert sent == [100, 50]


def test_a_refused_batch_raises(server, client):
    client.max_retries = 0
    server.on(
        "POST", f"{API}/analyses/batch", Reply(429, {"error": {"code": "rate_limited", "message": "m"}})
    )
    with pytest.raises(RateLimited):
        client.analyze_many([{"text": "a"}])


def test_exports_are_bytes_from_the_right_route(server, client):
    server.on("GET", f"{API}/analyses/7/export.csv", Reply(200, body=b"position,token\r\n0,t\r\n"))
    server.on("GET", f"{API}/generations/4/export.json", Reply(200, body=b'{"kind": "generation"}'))
    assert client.export(7, "csv") == b"position,token\r\n0,t\r\n"
    generation = Generation(client, {"id": 4, "status": "done"})
    assert client.export(generation) == b'{"kind": "generation"}'
    assert client.export(4, kind="generation") == b'{"kind": "generation"}'
    with pytest.raises(ValueError):
        client.export(7, "xlsx")  # type: ignore[arg-type]
    server.on("GET", f"{API}/analyses/7/export.research.json", Reply(200, body=b'{"metadata": {}}'))
    assert client.export(7, "research.json") == b'{"metadata": {}}'
    with pytest.raises(ValueError, match="no research-shape file"):
        client.export(generation, "research.json")


def test_a_generation_is_polled_until_done(server, client, sleeps):
    generation = {"id": 4, "status": "queued", "result": None, "analysis_id": None, "error": None}
    done = {
        **generation,
        "status": "done",
        "result": {"samples": [{"text": " Paris.", "token_ids": [1], "finished": True}], "prompt": "x"},
        "analysis_id": 7,
    }
    server.on("POST", f"{API}/generations", Reply(202, generation))
    server.on(
        "GET",
        f"{API}/generations/4",
        Reply(200, {**generation, "status": "running"}),
        Reply(200, done),
    )
    server.on("GET", f"{API}/analyses/7", Reply(200, analysis_json("running", [])))
    submitted = client.generate(
        "The capital of France is", then_analyse=True, analysis_options={"seed": 1}, n=1
    )
    assert server.requests("POST", f"{API}/generations")[0].json() == {
        "text": "The capital of France is",
        "options": {"n": 1},
        "then_analyse": True,
        "analysis_options": {"seed": 1},
    }
    assert submitted.samples == [] and submitted.analysis() is None
    assert submitted.wait(poll=0.25) is submitted
    assert sleeps == [0.25, 0.25] and submitted.samples == [" Paris."]
    follow_up = submitted.analysis()
    assert isinstance(follow_up, Analysis) and follow_up.id == 7 and follow_up.status == "running"


def test_a_chat_reply_leaves_its_temperature_to_the_server(server, client):
    """Unsent, the server picks the default of what is asked for: a reply's measured one, not 1.0."""
    queued = {"id": 4, "status": "queued", "result": None, "analysis_id": None, "error": None}
    server.on("POST", f"{API}/generations", Reply(202, queued), Reply(202, queued))
    client.generate("Hi", chat_reply=True)
    client.generate("Hi", chat_reply=True, temperature=1.0)
    sent = [request.json() for request in server.requests("POST", f"{API}/generations")]
    assert sent == [
        {"text": "Hi", "options": {"chat_reply": True}},
        {"text": "Hi", "options": {"chat_reply": True, "temperature": 1.0}},
    ]


def test_a_generation_waits_with_a_progress_bar_over_its_tokens(server, client, sleeps, capsys):
    running = {
        "id": 4,
        "status": "running",
        "result": None,
        "error": None,
        "progress": {"done": 3, "total": 8},
    }
    done = {**running, "status": "done", "progress": {"done": 8, "total": 8}}
    server.on("GET", f"{API}/generations/4", Reply(200, running), Reply(200, running), Reply(200, done))
    assert client.generation(4).wait(progress=True, poll=0.1).status == "done"
    err = capsys.readouterr().err
    assert "generation 4" in err and "8/8" in err and "tok" in err


def test_a_failed_generation_raises_and_a_slow_one_times_out(server, client):
    server.on(
        "GET", f"{API}/generations/4", Reply(200, {"id": 4, "status": "failed", "error": "out of memory"})
    )
    with pytest.raises(JobFailed, match="generation 4 failed: out of memory"):
        client.generation(4).wait()
    server.on("GET", f"{API}/generations/5", Reply(200, {"id": 5, "status": "running"}))
    with pytest.raises(TimeoutError):
        client.generation(5).wait(timeout=0)
