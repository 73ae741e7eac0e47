"""A tiny real HTTP server on 127.0.0.1 that answers canned replies, for the client's unit tests: the edge
is the socket, so the client's urllib, headers, retries and stream reading all run for real."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import scaled

KEY = "lw_abcd1234_s3cr3t-value-never-shown"


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # A stream: each bytes item is written and flushed in turn, a float pauses that many seconds; then the
    # connection closes (no Content-Length: HTTP/1.0 ends the body there).
    chunks: list[bytes | float] | None = None
    hang_up: bool = False  # close the connection without any answer


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: Message  # names compare case-insensitively, as HTTP's do
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class CannedServer:
    """Replies per (method, path): each request takes the next one; the last one repeats."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with server.lock:
                    server.seen.append(Seen(self.command, parts.path, parts.query, self.headers, body))
                    queue = server.routes.get((self.command, parts.path))
                    reply = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else None
                if reply is None:
                    reply = Reply(404, {"error": {"code": "not_found", "message": f"no canned {parts.path}"}})
                if reply.hang_up:
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.chunks is not None:
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    try:
                        for chunk in reply.chunks:
                            if isinstance(chunk, float):
                                time.sleep(chunk)
                            else:
                                self.wfile.write(chunk)
                                self.wfile.flush()
                    except OSError:  # the client went away: what a real server sees too
                        pass
                    return
                payload = json.dumps(reply.json).encode() if reply.json is not None else reply.body
                if reply.json is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def requests(self, method: str, path: str) -> list[Seen]:
        with self.lock:
            return [seen for seen in self.seen if seen.method == method and seen.path == path]


@pytest.fixture(autouse=True)
def tiny_lens_registry():
    """The client's unit tests need no lens: skip building the suite's tiny one (tests/conftest.py) for
    them. The live tests build it themselves (write_tiny_registry)."""
    return None


@pytest.fixture
def server():
    canned = CannedServer()
    thread = threading.Thread(target=canned.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield canned
    canned.httpd.shutdown()
    canned.httpd.server_close()
    thread.join(scaled(5))


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(server, sleeps):
    from lensweb_client import Client

    client = Client(server.url, KEY, timeout=scaled(5), max_retries=3)
    client.sleep = sleeps.append  # the waits are recorded, not slept
    return client


def sse(event: str, data: Any, id: str | None = None) -> bytes:
    """One event on the wire."""
    lines = [f"event: {event}"]
    if id is not None:
        lines.append(f"id: {id}")
    lines += [f"data: {line}" for line in json.dumps(data).split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def row(position: int, token: str = "t") -> dict:
    return {"position": position, "token": token, "explanation": f"about {token}", "mse": 0.5 + position}
