"""A Server-Sent Events parser, line by line as the HTML standard's "event stream interpretation" says:
fields `event`, `data` (several lines joined with "\\n"), `id`, `retry`; lines starting with ":" are
comments; a blank line dispatches the event; an event cut off by the end of the stream is dropped."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MessageEvent:
    """One dispatched event as the standard defines it: its data is still text."""

    event: str
    data: str
    id: str | None


@dataclass(frozen=True)
class Event:
    """One lensweb event: `status`, `rows`, `done`, `failed` or `cancelled`, its JSON data decoded."""

    event: str
    data: dict[str, Any]
    id: str | None


class EventStreamParser:
    """Feed it lines (without their line ending); it returns an event when a blank line completes one.

    `last_event_id` persists across events (what a reconnection sends as Last-Event-ID); `retry` is the
    server's reconnection time in milliseconds, or None if it never sent one."""

    def __init__(self) -> None:
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self._event = ""
        self._data: list[str] = []
        self._id_buffer: str | None = None

    def feed(self, line: str) -> MessageEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]  # exactly one space is part of the syntax, any further ones are data
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:  # the standard ignores an id with NUL (not sendable back)
            self._id_buffer = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        # any other field name is ignored
        return None

    def _dispatch(self) -> MessageEvent | None:
        if self._id_buffer is not None:
            # The id is taken on dispatch even when the event has no data (the standard's order).
            self.last_event_id = self._id_buffer or None
            self._id_buffer = None
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return MessageEvent(event=event, data="\n".join(data), id=self.last_event_id)


def iter_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Decode UTF-8 chunks and split them on CRLF, LF or CR, whichever the server uses; a CRLF split across
    two chunks counts once. A leading byte order mark is dropped. An unterminated last line is not yielded:
    a line is complete only once its ending arrives."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    started = False
    after_cr = False  # the previous chunk ended on CR: a LF opening the next one is the same line ending
    for chunk in chunks:
        text = decoder.decode(chunk)
        if not text:
            continue
        if not started:
            started = True
            text = text.removeprefix("\ufeff")
        if after_cr and text.startswith("\n"):
            text = text[1:]
        pending += text
        *lines, pending = _LINE_END.split(pending)
        yield from lines
        after_cr = bool(lines) and text.endswith("\r")


_LINE_END = re.compile(r"\r\n|\r|\n")


def parse_events(chunks: Iterable[bytes], parser: EventStreamParser | None = None) -> Iterator[MessageEvent]:
    """The events of a byte stream (e.g. chunks read from an HTTP response), dispatched as they complete."""
    parser = parser or EventStreamParser()
    for line in iter_lines(chunks):
        event = parser.feed(line)
        if event is not None:
            yield event
