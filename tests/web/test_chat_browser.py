"""Debian's Chromium against a live `manage.py serve` (daphne, embedded worker, tiny test lens): a chat built
in the chat builder, its reply streamed into a generation card and appended to the chat, then analysed;
and "Generate, then analyse" as one card that becomes its analysis' card."""

from __future__ import annotations

import re

import pytest

from inference.types import CHAT_TEMPERATURE
from tests.live import chromium, live_server, sign_in

from .conftest import scaled, write_tiny_registry

pytestmark = [pytest.mark.browser]

# Set before "Get reply": whether a generation card showed text while it was still running (tokens
# streamed), seen by a MutationObserver on every swap the socket makes.
WATCH_STREAMING = """() => {
  window.streamedWhileRunning = false;
  new MutationObserver(() => {
    for (const text of document.querySelectorAll('.gen[data-status=running] .gen-text')) {
      if (text.textContent.length > 0) window.streamedWhileRunning = true;
    }
  }).observe(document.getElementById('jobs'), {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chat-live")
    with live_server(
        tmp,
        setup=[["ensure_demo_user"]],
        LENSWEB_LENS_REGISTRY=str(write_tiny_registry(tmp)),
        LENSWEB_POLL_INTERVAL="0.5",
        LENSWEB_HEARTBEAT_INTERVAL="1",
    ) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser, server):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(scaled(60) * 1000)
    sign_in(page, server, then="#socket-state.live")
    yield page
    context.close()


def turns(page) -> list[tuple[str, str]]:
    pairs = page.eval_on_selector_all(
        "#chat-turns [data-turn]",
        "els => els.map(e => [e.querySelector('select').value, e.querySelector('textarea').value])",
    )
    return [tuple(pair) for pair in pairs]


def build_chat(page, system: str, user: str) -> None:
    """Two turns, built the way a person would: a role chosen, a turn added, one added and moved and
    deleted again."""
    page.get_by_role("tab", name="Generate or chat").click()
    page.locator("input[name='gen-mode'][value=chat]").check()
    builder = page.locator("#chat-builder")
    first = builder.locator("[data-turn]").nth(0)
    first.get_by_label("Role").select_option("system")
    first.get_by_label("Text").fill(system)
    builder.get_by_role("button", name="Add a turn").click()
    second = builder.locator("[data-turn]").nth(1)
    assert second.get_by_label("Role").input_value() == "user"  # after a system turn, the user's
    second.get_by_label("Text").fill(user)
    builder.get_by_role("button", name="Add a turn").click()
    builder.locator("[data-turn]").nth(2).get_by_label("Text").fill("scratch")
    builder.locator("[data-turn]").nth(2).get_by_role("button", name="Move up").click()
    assert turns(page) == [("system", system), ("assistant", "scratch"), ("user", user)]
    builder.locator("[data-turn]").nth(1).get_by_role("button", name="Delete turn").click()
    assert turns(page) == [("system", system), ("user", user)]


def queued(page, what: str) -> int:
    """The number in the form's "<what> #N queued" once the form comes back."""
    flash = page.locator("#generation-form .flash.ok", has_text=f"{what} #")
    return int(re.search(r"#(\d+)", flash.inner_text()).group(1))


def test_chat_get_reply_watch_it_stream_then_analyse_it(page):
    build_chat(page, "You answer in one short sentence.", "Where is the Eiffel Tower?")
    # the empty temperature shows what a reply takes (a continuation's 1 in plain-text mode)
    assert page.get_attribute("#id_gen-temperature", "placeholder") == f"{CHAT_TEMPERATURE:g}"
    page.fill("#id_gen-max_new_tokens", "48")
    page.eval_on_selector("#jobs", WATCH_STREAMING)
    page.get_by_role("button", name="Get reply", exact=True).click()
    generation = queued(page, "Generation")
    card = page.locator(f"#gen-{generation}")
    card.and_(page.locator("[data-status=done]")).wait_for()
    assert page.evaluate("window.streamedWhileRunning"), "the card should show tokens before it is done"
    reply = card.locator(".gen-text").inner_text()
    assert reply.strip(), "the tiny lens should reply with some text for this chat and seed"
    # the reply is appended to the chat as an assistant turn, editable
    page.wait_for_function("() => document.querySelectorAll('#chat-turns [data-turn]').length === 3")
    system_user_reply = turns(page)
    assert system_user_reply[:2] == [
        ("system", "You answer in one short sentence."),
        ("user", "Where is the Eiffel Tower?"),
    ]
    assert system_user_reply[2][0] == "assistant" and system_user_reply[2][1].strip() == reply.strip()
    assert page.locator("#chat-turns [data-turn]").nth(2).get_by_label("Text").is_editable()
    # Analyse: its analysis card arrives over the socket and its rows stream in
    card.get_by_role("button", name="Analyse", exact=True).click()
    note = card.locator(f"#gen-{generation}-note-0", has_text="Analysis #")
    analysis = int(re.search(r"#(\d+)", note.inner_text()).group(1))
    page.locator(f"#status-{analysis} .badge-done").wait_for()
    assert page.locator(f"#rows-{analysis} tr").count() >= 5
    assert "assistant:" in page.locator(f"#job-{analysis} .job-input").inner_text()


def test_generate_then_analyse_is_one_card(page):
    build_chat(page, "You are terse.", "Name a river.")
    page.fill("#id_gen-max_new_tokens", "12")
    page.get_by_role("button", name="Generate, then analyse", exact=True).click()
    generation = queued(page, "Generation")
    page.locator(f"#gen-{generation}").wait_for()
    # the generation's card is replaced by its analysis' card (no second card), which runs to done
    follow_up = page.locator(".job", has_text=f"after generation #{generation}")
    follow_up.locator(".badge-done").wait_for()
    assert page.locator(f"#gen-{generation}").count() == 0
    analysis = int(follow_up.get_attribute("id").removeprefix("job-"))
    assert page.locator(f"#rows-{analysis} tr").count() >= 5
    # its reply joined the chat builder, as "Get reply"'s does
    page.wait_for_function("() => document.querySelectorAll('#chat-turns [data-turn]').length === 3")
    assert turns(page)[2][0] == "assistant" and turns(page)[2][1].strip()


def test_continuations_and_use_as_input(page):
    page.get_by_role("tab", name="Generate or chat").click()
    page.fill("#id_gen-prompt", "The old lighthouse keeper")
    page.fill("#id_gen-n", "2")
    page.fill("#id_gen-max_new_tokens", "8")
    page.get_by_role("button", name="Generate", exact=True).click()
    generation = queued(page, "Generation")
    card = page.locator(f"#gen-{generation}")
    card.and_(page.locator("[data-status=done]")).wait_for()
    samples = card.locator(".gen-text").all_inner_texts()
    assert len(samples) == 2
    # the second completion, with its prompt, becomes the analysis form's text
    card.locator(".gen-sample").nth(1).get_by_role("button", name="Use as input").click()
    page.locator("#analysis-form:not([hidden])").wait_for()
    text = page.locator("#id_text")
    page.wait_for_function("() => document.querySelector('#id_text').value.length > 0")
    assert text.input_value() == "The old lighthouse keeper" + card.locator(".gen-text").nth(1).text_content()
    assert page.is_checked("input[name=input_format][value=text]")
