"""The generation form and the chat builder on the index page, generation cards over HTTP (card, cancel,
"Use as input", "Analyse") and who may do what with them: the owner everything, staff read only, anyone
else "not found"."""

from __future__ import annotations

import html
import re
import shutil

import pytest
from django.urls import reverse

from inference.types import CHAT_TEMPERATURE
from lensweb.analyses import services
from lensweb.analyses.models import Analysis, Generation
from tests.conftest import tiny_lens
from tests.tinylens import NO_SYSTEM_CHAT_TEMPLATE

from .conftest import write_tiny_registry

pytestmark = pytest.mark.django_db(transaction=True)  # the worker closes its connections after a job

HTMX = {"HTTP_HX_REQUEST": "true"}
TEXT = {
    "action": "generate",
    "gen-lens": "tiny",
    "gen-mode": "text",
    "gen-prompt": "The capital of France is",
    "gen-n": 2,
    "gen-max_new_tokens": 8,
    "gen-temperature": 0.8,
    "gen-top_p": 0.9,
    "gen-seed": 7,
}
CHAT = {**TEXT, "gen-mode": "chat", "gen-prompt": ""}
TURNS = {"gen-role": ["system", "user"], "gen-content": ["You answer briefly.", "Where is Paris?"]}


@pytest.fixture
def logged_in(client, alice):
    client.force_login(alice)
    return client


def post(client, data):
    return client.post(reverse("analyses:generate"), data, **HTMX)


def error_of(page: str, field: str) -> str:
    found = re.findall(rf'id="error-{field}">([^<]*)<', page)
    return html.unescape(" ".join(found))


def test_the_page_has_the_generation_form_and_the_builder_with_the_lens_chat_facts(logged_in):
    page = logged_in.get(reverse("analyses:index")).content.decode()
    bounds = services.limits()
    assert re.search(r'<button type="submit" name="action" value="generate"[^>]*>Generate</button>', page)
    assert re.search(r'<button type="submit" name="action" value="reply"[^>]*>Get reply</button>', page)
    assert f'name="gen-n" value="1" min="1" max="{bounds.max_samples}"' in page
    assert f'max="{bounds.max_new_tokens}"' in re.search(r"<input[^>]*gen-max_new_tokens[^>]*>", page).group(
        0
    )
    # the tiny template adds a system prompt to a chat without one, and an empty system turn leaves it out
    info = services.get_engine().chat_info(services.get_engine().default_lens())
    assert info["default_system_prompt"] and info["default_system_can_be_off"] and info["system_role"]
    assert html.escape(info["default_system_prompt"]) in page
    assert re.search(r'<input type="checkbox" name="gen-default_system_prompt"[^>]*checked', page)
    assert '<option value="system"' in page and "merged into the first user turn" not in page


def test_a_template_without_a_system_role_says_the_system_text_is_merged(logged_in, tmp_path, monkeypatch):
    """A lens whose tokenizer's template refuses system turns (Gemma's shape): chosen in the form, the
    builder offers no system role, says where a system text goes, and offers no default to turn off."""
    base = tmp_path / "no-system"
    shutil.copytree(tiny_lens().base, base)
    (base / "chat_template.jinja").write_text(NO_SYSTEM_CHAT_TEMPLATE)
    checkpoint = tiny_lens().checkpoint
    extra = (
        f'[[lens]]\nid = "nosys"\nname = "No system"\ncheckpoint = "{checkpoint}"\nbase_model = "{base}"\n'
    )
    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(write_tiny_registry(tmp_path, extra)))
    response = post(logged_in, {**CHAT, **TURNS, "action": "refresh", "gen-lens": "nosys"})
    page = response.content.decode()
    assert response.status_code == 200 and not Generation.objects.exists()
    assert "has no system role: a system turn's text is merged into the first user turn" in page
    assert "gen-default_system_prompt" not in page
    template = re.search(r'<template id="chat-turn-template">(.*?)</template>', page, re.S).group(1)
    assert '<option value="system"' not in template
    # the turns typed so far come back as they were, the system one included (the engine merges it)
    assert re.search(r'<option value="system" selected>system</option>', page)
    assert "Where is Paris?" in page and 'value="nosys" selected' in page


def test_a_broken_registry_leaves_the_page_up_without_chat(logged_in, tmp_path, monkeypatch):
    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(tmp_path / "missing.toml"))
    response = logged_in.get(reverse("analyses:index"))
    page = response.content.decode()
    assert response.status_code == 200 and "The lens registry cannot be read" in page
    assert "no chat template" in page and re.search(r'value="reply"[^>]*disabled', page)


@pytest.mark.parametrize(
    "changes, field, message",
    [
        ({"gen-n": 0}, "n", "greater than or equal to 1"),
        ({"gen-n": "many"}, "n", "whole number"),
        ({"gen-max_new_tokens": 0}, "max_new_tokens", "greater than or equal to 1"),
        ({"gen-top_p": 0}, "top_p", "greater than or equal to 0.01"),
        ({"gen-top_p": 1.5}, "top_p", "less than or equal to 1"),
        ({"gen-temperature": -1}, "temperature", "greater than or equal to 0"),
        ({"gen-seed": -1}, "seed", "greater than or equal to 0"),
        ({"gen-prompt": ""}, "prompt", "write a text to continue"),
        ({"gen-lens": "nope"}, "lens", "not one of the available choices"),
        # the service's own bound, shown beside the field it names
        ({"gen-temperature": 0, "gen-n": 2}, "n", "n must be 1 with temperature 0"),
    ],
)
def test_invalid_values_show_next_to_the_field_and_queue_nothing(logged_in, changes, field, message):
    response = post(logged_in, {**TEXT, **changes})
    assert response.status_code == 200
    assert message in error_of(response.content.decode(), field)
    assert not Generation.objects.exists()


def test_the_upper_bounds_are_the_services(logged_in):
    bounds = services.limits()
    page = post(logged_in, {**TEXT, "gen-n": bounds.max_samples + 1}).content.decode()
    assert f"less than or equal to {bounds.max_samples}" in error_of(page, "n")
    page = post(logged_in, {**TEXT, "gen-max_new_tokens": bounds.max_new_tokens + 1}).content.decode()
    assert f"less than or equal to {bounds.max_new_tokens}" in error_of(page, "max_new_tokens")
    page = post(logged_in, {**TEXT, "gen-temperature": bounds.max_temperature + 0.5}).content.decode()
    assert "less than or equal to" in error_of(page, "temperature")
    assert not Generation.objects.exists()


@pytest.mark.parametrize(
    "turns, message",
    [
        ({"gen-role": [], "gen-content": []}, "add a turn"),
        ({"gen-role": ["robot"], "gen-content": ["hi"]}, "system, user or assistant, not 'robot'"),
        ({"gen-role": ["user", "user"], "gen-content": ["hi"]}, "every turn needs a role and a text"),
    ],
)
def test_a_bad_chat_is_refused_in_the_builder(logged_in, turns, message):
    page = post(logged_in, {**CHAT, **turns}).content.decode()
    assert message in error_of(page, "messages")
    assert not Generation.objects.exists()


def test_too_many_turns_are_refused(logged_in):
    count = services.limits().max_messages + 1
    turns = {"gen-role": ["user"] * count, "gen-content": ["hi"] * count}
    page = post(logged_in, {**CHAT, **turns}).content.decode()
    assert f"at most {count - 1} turns" in error_of(page, "messages")


def test_generate_queues_continuations_with_the_form_options(logged_in, alice):
    page = post(logged_in, TEXT).content.decode()
    generation = Generation.objects.get()
    assert f"Generation #{generation.pk} queued" in page
    assert generation.owner == alice and generation.lens_id == "tiny"
    assert generation.input == {"text": "The capital of France is"}
    assert generation.options == {
        "n": 2,
        "max_new_tokens": 8,
        "temperature": 0.8,
        "top_p": 0.9,
        "seed": 7,
        "chat_reply": False,
    }
    assert generation.analysis_options is None
    assert "data-pending-reply" not in page  # a continuation is not appended to the chat
    assert 'value="The capital of France is"' in page or "The capital of France is</textarea>" in page


def test_get_reply_queues_one_reply_to_the_chat_and_marks_it_pending(logged_in):
    page = post(logged_in, {**CHAT, **TURNS, "action": "reply", "gen-default_system_prompt": "on"}).content
    generation = Generation.objects.get()
    assert generation.input == {
        "messages": [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Where is Paris?"},
        ]
    }
    assert generation.options["n"] == 1 and generation.options["chat_reply"] is True
    assert f'data-pending-reply="{generation.pk}"'.encode() in page
    # the builder comes back with the turns, for the reply to be appended to
    assert b"You answer briefly.</textarea>" in page and b"Where is Paris?</textarea>" in page


def without_temperature(data: dict) -> dict:
    return {name: value for name, value in data.items() if name != "gen-temperature"}


@pytest.mark.parametrize(
    "data, expected",
    [
        # "Get reply" with the temperature left empty: the measured chat-reply default
        ({**CHAT, **TURNS, "action": "reply"}, CHAT_TEMPERATURE),
        # a chat's replies from "Generate" are replies too; a plain text's continuations keep the declared 1.0
        ({**CHAT, **TURNS}, CHAT_TEMPERATURE),
        (TEXT, 1.0),
        ({**TEXT, "action": "then_analyse"}, 1.0),
    ],
    ids=["reply", "chat-generate", "continuation", "continuation-then-analyse"],
)
def test_an_empty_temperature_takes_the_default_of_what_is_asked(logged_in, data, expected):
    post(logged_in, {**without_temperature(data), "gen-temperature": ""})
    assert Generation.objects.get().options["temperature"] == expected


def test_a_temperature_given_wins_over_the_reply_default(logged_in):
    post(logged_in, {**CHAT, **TURNS, "action": "reply", "gen-temperature": 1.0})
    options = Generation.objects.get().options
    assert options["temperature"] == 1.0 and options["chat_reply"] is True


def test_the_temperature_field_shows_the_default_of_the_mode(logged_in):
    page = logged_in.get(reverse("analyses:index")).content.decode()
    field = re.search(r'<input[^>]*name="gen-temperature"[^>]*>', page).group(0)
    assert 'value="' not in field and 'placeholder="1"' in field  # plain text first: a continuation's
    assert f'data-default-chat="{CHAT_TEMPERATURE:g}"' in field and 'data-default-text="1"' in field
    after = page[page.index('name="gen-temperature"') :]
    help_text = html.unescape(re.search(r'<small class="help">([^<]*)<', after)[1])
    assert f"replies to a chat default to {CHAT_TEMPERATURE:g}" in help_text
    assert "bench/results/chat-temperature.md" in help_text
    # the form again in chat mode (another lens chosen): the reply default in the field
    page = post(logged_in, {**without_temperature(CHAT), **TURNS, "action": "refresh"}).content.decode()
    field = re.search(r'<input[^>]*name="gen-temperature"[^>]*>', page).group(0)
    assert f'placeholder="{CHAT_TEMPERATURE:g}"' in field and 'value="' not in field


def test_an_unticked_default_system_prompt_is_sent_as_off(logged_in):
    turns = {"gen-role": ["user"], "gen-content": ["Hello"]}
    post(logged_in, {**CHAT, **turns, "action": "reply"})  # the box is unticked: absent from the POST
    assert Generation.objects.get().input == {
        "messages": [{"role": "user", "content": "Hello"}],
        "default_system_prompt": False,
    }


def test_generate_then_analyse_carries_the_analysis_options(logged_in):
    analysis_fields = {"best_of_k": 2, "temperature": 0.5, "seed": 3, "kl": "on"}
    data = {**CHAT, **TURNS, **analysis_fields, "action": "then_analyse", "gen-last_n_messages": 2}
    post(logged_in, data)
    generation = Generation.objects.get()
    assert generation.options["n"] == 1
    assert generation.analysis_options["best_of_k"] == 2 and generation.analysis_options["kl"] is True
    assert generation.analysis_options["last_n_messages"] == 2
    assert generation.analysis_options["temperature"] == 0.5


def test_generate_then_analyse_refuses_bad_analysis_options(logged_in):
    data = {**TEXT, "best_of_k": 0, "temperature": 1, "seed": 1, "action": "then_analyse"}
    page = post(logged_in, data).content.decode()
    assert "analysis options: Best of k:" in html.unescape(page)
    assert not Generation.objects.exists()


def test_analyse_the_chat_queues_its_analysis_and_no_generation(logged_in):
    page = post(logged_in, {**CHAT, **TURNS, "action": "analyse"}).content.decode()
    analysis = Analysis.objects.get()
    assert f"Analysis #{analysis.pk} queued" in page and not Generation.objects.exists()
    assert analysis.input["messages"][-1] == {"role": "user", "content": "Where is Paris?"}


def test_without_htmx_a_refusal_renders_the_page_on_the_generate_tab(logged_in):
    response = logged_in.post(reverse("analyses:generate"), {**TEXT, "gen-n": 0})
    page = response.content.decode()
    assert response.status_code == 400 and 'id="error-n"' in page
    assert re.search(r'id="tab-generate"[^>]*aria-selected="true"', page)
    assert re.search(r'<form id="analysis-form"[^>]*\shidden>', page)
    response = logged_in.post(reverse("analyses:generate"), TEXT)
    assert response.status_code == 302 and Generation.objects.count() == 1


# --- cards ---------------------------------------------------------------------------------------------


def finished(generation, texts: list[str]) -> Generation:
    """The generation as a worker leaves it (the engine's result shape), with the given sample texts."""
    samples = [{"text": t, "token_ids": list(range(len(t.split()))), "finished": True} for t in texts]
    result = {"prompt": "p", "prompt_token_ids": [1], "samples": samples, "cancelled": False, "options": {}}
    Generation.objects.filter(pk=generation.pk).update(status="done", result=result, progress_done=3)
    return Generation.objects.get(pk=generation.pk)


def test_the_card_shows_the_generated_part_apart_escaped_with_its_newlines(logged_in, alice):
    generation = services.do_submit_generation(alice, "tiny", {"text": "Say <hi>"}, {"n": 2})
    generation = finished(generation, ["<b>bold</b>\nnext line", "second"])
    page = logged_in.get(reverse("analyses:generation_card", args=[generation.pk])).content.decode()
    texts = re.findall(r'<div class="gen-text" data-sample="\d">(.*?)</div>', page, re.S)
    assert texts == ["&lt;b&gt;bold&lt;/b&gt;\nnext line", "second"]
    assert '<p class="gen-prompt-text">Say &lt;hi&gt;</p>' in page  # the prompt apart, once
    assert page.count(">Use as input</button>") == 2 and page.count(">Analyse</button>") == 2
    assert "Cancel" not in page


def test_use_as_input_gives_the_prompt_with_the_sample(logged_in, alice):
    text = services.do_submit_generation(alice, "tiny", {"text": "Once"}, {})
    text = finished(text, [" upon a time"])
    url = reverse("analyses:generation_input", args=[text.pk])
    assert logged_in.get(url, {"sample": 0}).json() == {"text": "Once upon a time"}
    chat = services.do_submit_generation(
        alice,
        "tiny",
        {"messages": [{"role": "user", "content": "Hi"}], "default_system_prompt": False},
        {"chat_reply": True},
    )
    chat = finished(chat, ["Hello!"])
    assert logged_in.get(reverse("analyses:generation_input", args=[chat.pk]), {"sample": 0}).json() == {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        "default_system_prompt": False,
    }
    for sample in ("1", "x", "-1"):
        url = reverse("analyses:generation_input", args=[chat.pk])
        assert logged_in.get(url, {"sample": sample}).status_code == 404


def test_analyse_a_sample_with_the_analysis_form_options(logged_in, alice, run_jobs):
    generation = services.do_submit_generation(
        alice, "tiny", {"text": "The capital of France is"}, {"max_new_tokens": 5, "temperature": 0}
    )
    assert run_jobs() == [("generation", generation.pk)]
    generation = Generation.objects.get(pk=generation.pk)
    url = reverse("analyses:generation_analyse", args=[generation.pk])
    options = {"best_of_k": 2, "temperature": 1, "seed": 5, "salience": "on"}
    page = logged_in.post(url, {"sample": 0, **options}, **HTMX).content.decode()
    analysis = Analysis.objects.get()
    assert f'id="gen-{generation.pk}-note-0"' in page and f"Analysis #{analysis.pk} queued" in page
    assert analysis.input == {"text": "The capital of France is" + generation.samples[0]["text"]}
    assert analysis.options["best_of_k"] == 2 and analysis.options["salience"] is True
    assert analysis.options["kl"] is False  # an unticked box of the included form
    # no sample 3, and no options at all: the defaults
    page = logged_in.post(url, {"sample": 3}, **HTMX).content.decode()
    assert "has no sample 3" in html.unescape(page) and Analysis.objects.count() == 1
    logged_in.post(url, {"sample": 0}, **HTMX)
    assert Analysis.objects.count() == 2


def test_a_running_generation_cannot_be_analysed_yet(logged_in, alice):
    generation = services.do_submit_generation(alice, "tiny", {"text": "x"}, {})
    worker = services.register_worker()
    services.claim_next_job(worker)
    services.do_record_tokens(generation.pk, worker.pk, [{"text": " y", "token_ids": [5]}], 1)
    page = logged_in.get(reverse("analyses:generation_card", args=[generation.pk])).content.decode()
    assert "generating" in page and ">Analyse</button>" not in page and "1/64 tokens" in page
    url = reverse("analyses:generation_analyse", args=[generation.pk])
    page = logged_in.post(url, {"sample": 0}, **HTMX).content.decode()
    assert "still running" in page and not Analysis.objects.exists()


def test_the_owner_cancels_over_http(logged_in, alice):
    generation = services.do_submit_generation(alice, "tiny", {"text": "x"}, {})
    card = logged_in.get(reverse("analyses:generation_card", args=[generation.pk])).content.decode()
    assert '<input type="hidden" name="kind" value="generation">' in card and ">Cancel</button>" in card
    response = logged_in.post(reverse("analyses:generation_cancel", args=[generation.pk]), **HTMX)
    assert response.status_code == 200 and "badge-cancelled" in response.content.decode()
    assert Generation.objects.get(pk=generation.pk).status == "cancelled"


def test_another_user_can_neither_see_nor_touch_a_generation(client, alice, bob, run_jobs):
    generation = services.do_submit_generation(alice, "tiny", {"text": "x"}, {"max_new_tokens": 3})
    client.force_login(bob)
    queued_urls = [
        ("get", reverse("analyses:generation_card", args=[generation.pk])),
        ("post", reverse("analyses:generation_cancel", args=[generation.pk])),
    ]
    for method, url in queued_urls:
        assert getattr(client, method)(url, **HTMX).status_code == 404
    assert Generation.objects.get(pk=generation.pk).status == "queued"
    run_jobs()
    for method, url, data in [
        ("get", reverse("analyses:generation_input", args=[generation.pk]), {"sample": 0}),
        ("post", reverse("analyses:generation_analyse", args=[generation.pk]), {"sample": 0}),
    ]:
        assert getattr(client, method)(url, data, **HTMX).status_code == 404
    assert not Analysis.objects.exists()
    # and bob's page does not list it
    assert f'id="gen-{generation.pk}"' not in client.get(reverse("analyses:index")).content.decode()


def test_staff_read_a_generation_but_cannot_cancel_or_analyse_it(client, alice, admin_user, run_jobs):
    running = services.do_submit_generation(alice, "tiny", {"text": "x"}, {"max_new_tokens": 3})
    client.force_login(admin_user)
    card = client.get(reverse("analyses:generation_card", args=[running.pk]))
    assert card.status_code == 200 and f'id="gen-{running.pk}"' in card.content.decode()
    assert "Cancel" not in card.content.decode()  # read only: no buttons
    assert client.post(reverse("analyses:generation_cancel", args=[running.pk]), **HTMX).status_code == 404
    assert Generation.objects.get(pk=running.pk).status == "queued"
    run_jobs()
    card = client.get(reverse("analyses:generation_card", args=[running.pk])).content.decode()
    assert "badge-done" in card and ">Analyse</button>" not in card and "Use as input" not in card
    analyse = reverse("analyses:generation_analyse", args=[running.pk])
    assert client.post(analyse, {"sample": 0}, **HTMX).status_code == 404
    assert client.get(reverse("analyses:generation_input", args=[running.pk])).status_code == 200
    assert not Analysis.objects.exists()


def test_the_index_lists_generations_with_analyses_newest_first(logged_in, alice):
    older = services.do_submit(alice, "tiny", {"text": "first"}, {})
    generation = services.do_submit_generation(alice, "tiny", {"text": "second"}, {})
    page = logged_in.get(reverse("analyses:index")).content.decode()
    assert page.index(f'id="gen-{generation.pk}"') < page.index(f'id="job-{older.pk}"')
    assert re.search(rf'id="gen-{generation.pk}-queue"[^>]*>Position <strong>2</strong>', page)
