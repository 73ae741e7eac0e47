"""No console error while rows stream, on a reload and a reconnect mid-stream, and while filtering, sorting and
switching views: the server sends updates only for what the page shows (htmx:oobErrorNoTarget otherwise)."""

from __future__ import annotations

import pytest

from tests.live import chromium

from .conftest import scaled
from .test_browser import server, submit  # noqa: F401, F811  (server: a fixture: one job at a time, one row a batch)

pytestmark = [pytest.mark.browser]

TEXT = "The capital of France is Paris, famous for the Eiffel Tower and its long history of art and science."


DROP = """() => {
  const wrapper = document.getElementById('live')['htmx-internal-data'].webSocket;
  const socket = wrapper.socket, lost = socket.onclose;
  socket.onclose = null;
  socket.close();
  lost(new CloseEvent('close', {code: 1006}));
}"""


def watch(page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    return errors


def test_no_console_error_while_streaming_reconnecting_and_filtering(server):  # noqa: F811
    with chromium() as browser:
        page = browser.new_page()
        page.set_default_timeout(scaled(90) * 1000)
        errors = watch(page)
        page.goto(f"{server}/")
        page.fill("#id_username", "demo")
        page.fill("#id_password", "lensweb-demo")
        page.click("button[type=submit]")
        page.wait_for_selector("#socket-state.live")
        jobs = [submit(page, f"{TEXT} ({i})") for i in range(4)]
        page.wait_for_selector(f"#rows-{jobs[0]} tr")  # streaming
        page.reload()  # a page load mid-stream: the replay
        page.wait_for_selector("#socket-state.live")
        page.wait_for_selector(f"#job-{jobs[1]}")
        # a reconnect mid-stream: the socket drops as a lost network drops it (1006, abnormal closure), and
        # htmx's extension opens a new one, which the server answers with its replay
        page.evaluate(DROP)
        page.wait_for_selector("#socket-state.down")
        page.wait_for_selector("#socket-state.live")
        # the last one done (the page keeps only the last few finished cards: earlier ones leave it)
        page.wait_for_selector(f"#status-{jobs[-1]} .badge-done", timeout=scaled(240) * 1000)
        page.goto(f"{server}/analyses/{jobs[0]}/")
        page.fill("#id_q", "Paris")
        page.keyboard.press("Enter")
        page.wait_for_load_state("networkidle")
        page.select_option("#id_sort", index=1)
        page.wait_for_load_state("networkidle")
        page.click("label.tab:has(input[value=fulltext])")
        page.wait_for_load_state("networkidle")
        page.goto(f"{server}/analyses/history/")
        page.wait_for_load_state("networkidle")
        assert errors == []
