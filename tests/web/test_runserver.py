"""`manage.py runserver` as developers start it serves ASGI (daphne): the WebSocket works, and with the
in-memory layer the lens worker runs inside the serving process, as under `manage.py serve`. (Django's own
runserver served WSGI: the socket's handshake got a 404 and nothing ran the job.)"""

from __future__ import annotations

import asyncio
import re

from tests.conftest import scaled
from tests.live import live_server

from .conftest import write_tiny_registry
from .test_consumers import row_positions
from .test_socket_frames import RawSocket, signed_in_session

TEXT = "The quick brown fox jumps over the lazy dog."
MAKE_USER = "from django.contrib.auth import get_user_model; get_user_model().objects.create_user('many', password='many-pw')"


def submit(session, base: str) -> int:
    session.get(f"{base}/", timeout=30)
    response = session.post(
        f"{base}/analyses/",
        data={
            "text": TEXT,
            "input_format": "text",
            "best_of_k": 1,
            "temperature": 1.0,
            "seed": 42,
            "lens": "tiny",
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Origin": base, "Referer": f"{base}/", "HX-Request": "true"},
        timeout=30,
    )
    queued = re.search(r"Analysis #(\d+) queued", response.text)
    assert queued, f"the submission should be accepted: {response.status_code} {response.text[:500]}"
    return int(queued.group(1))


def test_runserver_serves_the_socket_and_runs_the_worker(tmp_path):
    with live_server(
        tmp_path,
        setup=[["shell", "--no-imports", "-c", MAKE_USER]],
        command=("runserver", "127.0.0.1:{port}", "--noreload"),
        browser=False,
        LENSWEB_LENS_REGISTRY=str(write_tiny_registry(tmp_path)),
        LENSWEB_EMBEDDED_WORKER="on",
        LENSWEB_POLL_INTERVAL="0.5",
        LENSWEB_HEARTBEAT_INTERVAL="1",
    ) as base:  # /readyz answered: the embedded worker has heart-beaten
        port = int(base.rsplit(":", 1)[1])
        session = signed_in_session(base)
        headers = {"Origin": base, "Cookie": f"sessionid={session.cookies['sessionid']}"}

        async def scenario() -> tuple[int, list[str]]:
            ws = await RawSocket.open("127.0.0.1", port, "/ws/analyses/", headers)
            try:
                job = await asyncio.to_thread(submit, session, base)
                live: list[str] = []
                while not (live and f'id="status-{job}"' in live[-1] and "badge-done" in live[-1]):
                    message = await ws.receive(timeout=scaled(120))
                    assert message is not None, f"the socket closed ({ws.close_code}) while job #{job} ran"
                    live.append(message)
                return job, live
            finally:
                ws.close()

        job, live = asyncio.run(scenario())
    assert f'<section id="job-{job}"' in "".join(live), "the new job's card came over the socket"
    assert row_positions(job, live), "its rows came over the socket, computed by the embedded worker"
    assert "worker runs in this process" in (tmp_path / "serve.log").read_text()
