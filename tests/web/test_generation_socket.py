"""Generations over the browser's socket, through the real ASGI stack and the real worker over the tiny
lens: tokens stream to the owner's page (nobody else's), a cancel stops one mid-way, a reload or reconnect
shows the card with its tokens so far, and a "then analyse" card becomes its analysis' card."""

from __future__ import annotations

import html
import json
import re

import pytest
from channels.db import database_sync_to_async

from lensweb.analyses import services
from lensweb.analyses.models import Analysis, Generation
from lensweb.analyses.worker import LensWorker

from .conftest import scaled, wait_for
from .test_consumers import is_final, receive_until, row_positions, socket, stop

pytestmark = [pytest.mark.django_db(transaction=True)]

submit_generation = database_sync_to_async(services.do_submit_generation)


def fresh(generation_id: int) -> Generation:
    return Generation.objects.get(pk=generation_id)


def gen_final(pk):
    return lambda m: f'id="gen-{pk}-status"' in m and re.search(r"badge-(done|cancelled|failed)", m)


def sample_texts(pk, message: str) -> list[str]:
    """The samples' text in a message that carries gen-<pk>'s samples (unescaped, as the page shows it)."""
    part = message.split(f'id="gen-{pk}-samples"', 1)[1]
    return [
        html.unescape(t)
        for t in re.findall(r'<div class="gen-text" data-sample="\d+">(.*?)</div>', part, re.S)
    ]


def tokens_messages(pk, messages):
    return [m for m in messages if f'id="gen-{pk}-samples"' in m and f'id="gen-{pk}-status"' not in m]


async def test_tokens_stream_to_the_owner_and_to_nobody_else(alice, bob, fast_worker, warm_lens, monkeypatch):
    monkeypatch.setattr(services, "TOKENS_EVERY_SECONDS", 0)  # every few decode steps, a message
    async with socket(alice) as mine, socket(bob) as theirs:
        assert (await mine.connect())[0] and (await theirs.connect())[0]
        await mine.receive_from(timeout=scaled(10))  # the (empty) replays
        await theirs.receive_from(timeout=scaled(10))
        generation = await submit_generation(
            alice,
            "tiny",
            {"text": "Once upon a time"},
            {"max_new_tokens": 24, "temperature": 1.0, "seed": 11},
        )
        worker = LensWorker()
        worker.start()
        try:
            messages = await receive_until(mine, gen_final(generation.pk), timeout=scaled(60))
        finally:
            await stop(worker)
        assert await theirs.receive_nothing(timeout=scaled(1))
    pk = generation.pk
    assert 'hx-swap-oob="afterbegin:#jobs"' in messages[0] and f'id="gen-{pk}"' in messages[0]
    assert any("generating" in m and f'id="gen-{pk}"' in m for m in messages)  # claimed: its state
    streamed = tokens_messages(pk, messages)
    assert len(streamed) >= 2, "tokens should arrive in several messages before the end"
    texts = [sample_texts(pk, m)[0] for m in streamed]
    assert all(len(a) <= len(b) and b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    assert all(f'id="gen-{pk}-progress"' in m and " tokens" in m for m in streamed)
    done = await database_sync_to_async(fresh)(pk)
    assert done.status == "done"
    assert sample_texts(pk, messages[-1]) == [done.samples[0]["text"]]
    assert texts[-1] == done.samples[0]["text"][: len(texts[-1])]  # what streamed is the reply's start
    assert ">Analyse</button>" in messages[-1] and ">Use as input</button>" in messages[-1]


async def test_cancel_mid_generation_over_the_socket_and_only_by_its_owner(
    alice, bob, fast_worker, warm_lens, monkeypatch
):
    monkeypatch.setattr(services, "TOKENS_EVERY_SECONDS", 0)
    bound = services.limits().max_new_tokens
    generation = await submit_generation(
        alice, "tiny", {"text": "The lighthouse"}, {"max_new_tokens": bound, "temperature": 1.0}
    )
    pk = generation.pk
    cancel = json.dumps({"action": "cancel", "kind": "generation", "job": str(pk), "HEADERS": {}})
    async with socket(bob) as intruder:
        assert (await intruder.connect())[0]
        await intruder.receive_from(timeout=scaled(10))
        await intruder.send_to(text_data=cancel)
        assert f"there is no generation #{pk} of yours" in await intruder.receive_from(timeout=scaled(10))
    worker = LensWorker()
    try:
        async with socket(alice) as owner:
            assert (await owner.connect())[0]
            await owner.receive_from(timeout=scaled(10))
            worker.start()
            await receive_until(owner, lambda m: tokens_messages(pk, [m]), timeout=scaled(60))
            await owner.send_to(text_data=cancel)
            messages = await receive_until(owner, gen_final(pk), timeout=scaled(60))
    finally:
        await stop(worker)
    assert "badge-cancelled" in messages[-1]
    cancelled = await database_sync_to_async(fresh)(pk)
    assert cancelled.status == "cancelled" and cancelled.result["cancelled"] is True
    assert 1 <= len(cancelled.samples[0]["token_ids"]) < bound
    assert sample_texts(pk, messages[-1]) == [cancelled.samples[0]["text"]]  # the part generated stays


async def test_an_analysis_cancel_still_needs_no_kind_and_bad_kinds_are_refused(alice):
    async with socket(alice) as communicator:
        assert (await communicator.connect())[0]
        await communicator.receive_from(timeout=scaled(10))
        for message, answer in [
            ({"action": "cancel", "kind": "row", "job": 1}, "unknown kind of job 'row'"),
            ({"action": "cancel", "kind": ["generation"], "job": 1}, "unknown kind of job"),
            ({"action": "cancel", "kind": "generation"}, "a cancel names its generation by number"),
            ({"action": "cancel", "job": 999999}, "there is no analysis #999999 of yours"),
            (
                {"action": "cancel", "kind": "generation", "job": 999999},
                "there is no generation #999999 of yours",
            ),
        ]:
            await communicator.send_to(text_data=json.dumps(message))
            assert answer in html.unescape(await communicator.receive_from(timeout=scaled(10)))


def half_generated(user, texts: list[str], steps: int) -> Generation:
    """A generation a worker has claimed and reported `texts` of (its tokens so far)."""
    generation = services.do_submit_generation(user, "tiny", {"text": "Once"}, {"n": len(texts)})
    worker = services.register_worker()
    services.claim_next_job(worker)
    samples = [{"text": t, "token_ids": list(range(steps)), "finished": False} for t in texts]
    services.do_record_tokens(generation.pk, worker.pk, samples, steps)
    generation.worker_id = worker.pk
    return generation


async def test_reload_and_reconnect_mid_generation_replay_the_tokens_so_far(alice):
    generation = await database_sync_to_async(half_generated)(alice, [" upon\na <time>", " more"], 3)
    pk, worker_id = generation.pk, generation.worker_id
    for _ in range(2):  # a reload, then a reconnect: each replays the card as the database has it
        async with socket(alice) as communicator:
            assert (await communicator.connect())[0]
            replay = await communicator.receive_from(timeout=scaled(10))
            assert replay.startswith('<div id="jobs">') and f'id="gen-{pk}"' in replay
            assert "generating" in replay and "3/64 tokens" in replay
            assert sample_texts(pk, replay) == [" upon\na <time>", " more"]
            assert "&lt;time&gt;" in replay  # escaped, the newline kept as a newline
    async with socket(alice) as communicator:
        assert (await communicator.connect())[0]
        await communicator.receive_from(timeout=scaled(10))
        samples = [{"text": " upon\na <time> went", "token_ids": [1, 2, 3, 4], "finished": False}] * 2

        def more_then_done():
            services.do_record_tokens(pk, worker_id, samples, 4)
            result = {"prompt": "Once", "prompt_token_ids": [1], "samples": samples, "cancelled": False}
            services.do_finish_job(pk, worker_id, "done", kind="generation", result=result)

        await database_sync_to_async(more_then_done)()
        messages = await receive_until(communicator, gen_final(pk))
    assert sample_texts(pk, tokens_messages(pk, messages)[0]) == [" upon\na <time> went"] * 2
    assert "4/64 tokens" in tokens_messages(pk, messages)[0]
    assert "badge-done" in messages[-1]


async def test_then_analyse_turns_the_generation_card_into_its_analysis_card(
    alice, fast_worker, warm_lens, monkeypatch
):
    messages_in = [{"role": "user", "content": "Where is Paris?"}]
    async with socket(alice) as communicator:
        assert (await communicator.connect())[0]
        await communicator.receive_from(timeout=scaled(10))
        generation = await submit_generation(
            alice,
            "tiny",
            {"messages": messages_in},
            {"max_new_tokens": 6, "temperature": 0, "chat_reply": True},
            then_analyse={"best_of_k": 1},
        )
        worker = LensWorker()
        worker.start()
        try:
            follow_up = await wait_for(
                lambda: Generation.objects.get(pk=generation.pk).follow_up_id, timeout=scaled(60)
            )
            messages = await receive_until(communicator, is_final(follow_up), timeout=scaled(60))
        finally:
            await stop(worker)
    swap = [m for m in messages if f'id="job-{follow_up}"' in m and "afterbegin" not in m]
    assert swap and f'hx-swap-oob="outerHTML:#gen-{generation.pk}"' in swap[0]
    assert "after generation #" in swap[0]
    # nothing re-adds the generation's card once its analysis' card has taken its place
    after = messages[messages.index(swap[0]) + 1 :]
    assert not any(f'id="gen-{generation.pk}"' in m for m in after)
    assert row_positions(follow_up, messages)
    analysis = await database_sync_to_async(Analysis.objects.get)(pk=follow_up)
    assert (
        analysis.input["messages"][:1] == messages_in and analysis.input["messages"][1]["role"] == "assistant"
    )
    async with socket(alice) as again:  # a reload shows the analysis' card alone
        assert (await again.connect())[0]
        replay = await again.receive_from(timeout=scaled(10))
        assert f'id="job-{follow_up}"' in replay and f'id="gen-{generation.pk}"' not in replay
