"""The client's Server-Sent Events parser against the HTML standard's event stream rules."""

from __future__ import annotations

import pytest
from lensweb_client.sse import EventStreamParser, MessageEvent, iter_lines, parse_events


def events(text: str, parser: EventStreamParser | None = None) -> list[MessageEvent]:
    return list(parse_events([text.encode()], parser))


def test_data_lines_join_with_newlines_and_a_blank_line_dispatches():
    assert events("event: rows\ndata: first\ndata: second\n\ndata: next\n\n") == [
        MessageEvent("rows", "first\nsecond", None),
        MessageEvent("message", "next", None),  # the event type does not carry over
    ]


def test_comments_and_unknown_fields_are_ignored():
    text = ": keep-alive\n\n:another\nevent: status\nfoo: bar\ndata: {}\n: inside\n\n"
    assert events(text) == [MessageEvent("status", "{}", None)]


def test_only_one_space_after_the_colon_is_syntax():
    assert [e.data for e in events("data:x\n\ndata:  two spaces\n\ndata:\n\n")] == ["x", " two spaces", ""]


def test_a_field_name_without_a_colon_has_an_empty_value():
    assert events("data\n\n") == [MessageEvent("message", "", None)]
    assert events("data\ndata\n\n") == [MessageEvent("message", "\n", None)]


def test_an_event_without_data_is_not_dispatched_but_its_id_is_kept():
    parser = EventStreamParser()
    assert events("event: status\nid: 7\n\n", parser) == []
    assert parser.last_event_id == "7"
    assert events("data: x\n\n", parser) == [MessageEvent("message", "x", "7")]


def test_the_last_event_id_persists_until_the_server_changes_or_clears_it():
    parser = EventStreamParser()
    got = events("id: 3\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: 9\ndata: d\n\n", parser)
    assert [e.id for e in got] == ["3", "3", None, "9"]
    assert parser.last_event_id == "9"


def test_an_id_with_a_null_is_ignored():
    parser = EventStreamParser()
    assert [e.id for e in events("id: 4\ndata: a\n\nid: 5\x006\ndata: b\n\n", parser)] == ["4", "4"]


def test_retry_takes_digits_only():
    parser = EventStreamParser()
    events("retry: 2500\n\n", parser)
    assert parser.retry == 2500
    events("retry: 3s\n\nretry: -1\n\nretry: ١٢\n\n", parser)  # not ASCII digits
    assert parser.retry == 2500


def test_an_event_cut_off_by_the_end_of_the_stream_is_dropped():
    assert events("data: complete\n\ndata: cut off\n") == [MessageEvent("message", "complete", None)]
    assert events("data: no line ending") == []


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_every_line_ending_of_the_standard(ending):
    text = ending.join(["event: done", "data: {}", "", "data: 2", "", ""])
    assert events(text) == [MessageEvent("done", "{}", None), MessageEvent("message", "2", None)]


def test_lines_across_chunk_boundaries():
    chunks = [b"da", b"ta: a\r", b"\nda", b"ta: \xc3", b"\xa9t\xc3\xa9\r", b"data: x\n", b"\n"]
    assert list(iter_lines(chunks)) == ["data: a", "data: ét\u00e9", "data: x", ""]
    # a CR ending one chunk and a LF opening the next are one line ending, not a blank line between
    assert list(iter_lines([b"a\r", b"\n", b"b\n"])) == ["a", "b"]
    assert list(iter_lines([b"a\r", b"\r", b"b\n"])) == ["a", "", "b"]


def test_byte_by_byte_equals_whole():
    text = b': hi\r\nevent: rows\r\nid: 12\r\ndata: {"rows": [1]}\r\n\r\nevent: done\rdata: {}\r\r'
    whole = list(parse_events([text]))
    assert whole == list(parse_events(text[i : i + 1] for i in range(len(text))))
    assert [e.event for e in whole] == ["rows", "done"]


def test_a_leading_byte_order_mark_is_dropped_once():
    assert list(iter_lines([b"\xef\xbb\xbfdata: a\n", b"\xef\xbb\xbfx\n"])) == ["data: a", "\ufeffx"]
