"""No console error while rows stream, on a reload and a reconnect mid-stream, and while filtering, sorting and
switching views: the server sends updates only for what the page shows (htmx:oobErrorNoTarget otherwise)."""

from __future__ import annotations

import re

import pytest

from tests.live import chromium, live_server

from .conftest import scaled, write_tiny_registry

pytestmark = [pytest.mark.browser]

TEXT = "The capital of France is Paris, famous for the Eiffel Tower and its long history of art and science."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    with live_server(
        tmp,
        setup=[["ensure_demo_user"]],
        LENSWEB_LENS_REGISTRY=str(write_tiny_registry(tmp)),
        LENSWEB_ROWS_BUDGET="1",  # one position a batch: the rows stream for a while
        LENSWEB_POLL_INTERVAL="0.5",
        LENSWEB_SHARED_JOBS="1",  # one job at a time: the others wait in the queue, their places moving
    ) as base:
        yield base


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


def submit(page, text: str) -> int:
    previous = page.locator("#analysis-form .flash.ok").all_inner_texts()
    page.fill("#id_text", text)
    page.click("#analysis-form button[type=submit]")
    page.wait_for_function(
        "old => { const f = document.querySelector('#analysis-form .flash.ok');"
        " return f && !old.includes(f.innerText); }",
        arg=previous,
    )
    return int(re.search(r"#(\d+)", page.inner_text("#analysis-form .flash.ok")).group(1))


def test_no_console_error_while_streaming_reconnecting_and_filtering(server):
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
