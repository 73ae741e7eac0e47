"""Hundreds of generated malformed socket messages (seeded: LENSWEB_FUZZ_SEED replays a run) through the
real ASGI stack: every one is answered with an error message, the consumer never crashes, the socket stays
open, a valid cancel still works afterwards, nobody else's job is touched, and the user's pages render."""

from __future__ import annotations

import json
import os
import random

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from lensweb.analyses import services
from lensweb.analyses.models import Analysis
from tests.conftest import scaled

from .conftest import job_state
from .test_consumers import receive_until, socket

pytestmark = [pytest.mark.django_db(transaction=True)]

SEED = int(os.environ.get("LENSWEB_FUZZ_SEED") or 20240917)
FRAMES = 400
LIMIT = 4096  # LENSWEB_WS_MAX_MESSAGE_BYTES: oversize messages close the socket (4009) by design


def _text(rng: random.Random, n: int) -> str:
    """Any code points: controls, quotes, HTML, astral characters, lone surrogates."""
    pools = [
        lambda: chr(rng.randrange(0, 0x80)),
        lambda: chr(rng.randrange(0x80, 0xD800)),
        lambda: chr(rng.randrange(0xD800, 0xE000)),  # lone surrogates
        lambda: chr(rng.randrange(0x10000, 0x110000)),
        lambda: rng.choice(['"', "\\", "<script>", "&amp;", "{", "[", "]", "}", ":", ",", "\x00"]),
    ]
    return "".join(rng.choice(pools)() for _ in range(n))


def _number(rng: random.Random) -> str:
    return rng.choice(
        [
            lambda: str(rng.randrange(-(10**6), 10**6)),
            lambda: "9" * rng.randrange(19, 4000),
            lambda: "-" + "9" * rng.randrange(19, 400),
            lambda: f"1e{rng.randrange(300, 100_000)}",
            lambda: f"-1e{rng.randrange(300, 400)}",
            lambda: repr(rng.uniform(-1e6, 1e6)),
            lambda: rng.choice(
                ["NaN", "Infinity", "-Infinity", "-0", "0.0", "1E2", "0x10", "01", "+1", ".5"]
            ),
        ]
    )()


def _value(rng: random.Random, depth: int = 0) -> str:
    """A JSON-ish value as text: valid JSON, or almost (non-standard numbers, bad escapes)."""
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice(["null", "true", "false"])
    if kind == 1:
        return _number(rng)
    if kind == 2:
        return json.dumps(_text(rng, rng.randrange(0, 40)))
    if kind == 3:
        return '"' + rng.choice(["\\ud800", "\\udfff\\ud800", "\\x41", "\\u12", "\\", "\\u0000"]) + '"'
    if kind == 4:
        return json.dumps(str(rng.choice([0, -1, 10**18, 2**63, 2**64])))
    if kind == 5:
        return "[" + ",".join(_value(rng, depth + 1) for _ in range(rng.randrange(4))) + "]"
    if kind == 6:
        items = (f"{json.dumps(_text(rng, 5))}:{_value(rng, depth + 1)}" for _ in range(rng.randrange(4)))
        return "{" + ",".join(items) + "}"
    return rng.choice(['{"action":"cancel","job":%s}', "[%s]", '{"job":%s}']) % _value(rng, depth + 1)


def _deep(rng: random.Random) -> str:
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}"), ('{"job":[', "]}")])
    depth = rng.randrange(100, LIMIT // len(opener) - 2)
    inner = (
        opener * depth + rng.choice(["1", "", '"x"', "null"]) + closer * rng.choice([depth, depth // 2, 0])
    )
    return rng.choice([inner, '{"action":"cancel","job":' + inner[: LIMIT - 40] + "}"])


def _cancel_like(rng: random.Random, others: list[int]) -> str:
    """Cancels that look almost right: odd actions, odd ids, someone else's job."""
    action = (
        "cancel"
        if rng.random() < 0.6
        else rng.choice(
            ["Cancel", "CANCEL", " cancel", "cancel\x00", "cancel\ud800", "", "delete", _text(rng, 8)]
        )
    )
    job = rng.choice(
        [
            lambda: _value(rng),
            lambda: json.dumps(
                rng.choice(["12abc", "-1", "0", "\u0661\u0662", "1e3", " 7", "7 ", "0x1f", ""])
            ),
            lambda: str(rng.choice(others)),  # someone else's: "not yours"
            lambda: json.dumps(str(rng.choice(others))),
            lambda: str(rng.randrange(10**7, 10**18)),  # nobody's
        ]
    )()
    extra = rng.choice(["", ',"HEADERS":{"HX-Request":"true"}', ',"job":1.5', ',"action":null'])
    return '{"action":' + json.dumps(action) + ',"job":' + job + extra + "}"


def _broken(rng: random.Random, others: list[int]) -> str:
    """A valid-looking message, truncated or with a byte flipped."""
    message = _cancel_like(rng, others)
    if rng.random() < 0.5:
        return message[: rng.randrange(len(message))]
    i = rng.randrange(len(message))
    return message[:i] + chr(rng.randrange(0x20, 0x7F)) + message[i + 1 :]


def frames(rng: random.Random, others: list[int], mine: set[int]):
    """(kind, payload) pairs: text frames within the size limit, and binary frames."""
    makers = [
        lambda: _value(rng),
        lambda: _deep(rng),
        lambda: _cancel_like(rng, others),
        lambda: _broken(rng, others),
        lambda: _text(rng, rng.randrange(1, 200)),
    ]
    weights = [2, 1, 5, 2, 1]
    produced = 0
    while produced < FRAMES:
        if rng.random() < 0.08:
            yield (
                "bytes",
                rng.choice([rng.randbytes(rng.randrange(1, 300)), _cancel_like(rng, others).encode()]),
            )
            produced += 1
            continue
        text = rng.choices(makers, weights)[0]()[:LIMIT]
        if not text or _cancels_mine(text, mine):
            continue  # a valid cancel of the user's own job is no malformed message
        yield "text", text
        produced += 1


def _cancels_mine(text: str, mine: set[int]) -> bool:
    try:
        message = json.loads(text)
        return isinstance(message, dict) and message.get("action") == "cancel" and int(message["job"]) in mine
    except Exception:
        return False


@database_sync_to_async
def pages_render(user, job_id: int) -> list[int]:
    client = Client()
    client.force_login(user)
    return [
        client.get(path).status_code for path in ("/", f"/analyses/{job_id}/", f"/analyses/{job_id}/card/")
    ]


async def test_hundreds_of_malformed_messages_never_break_the_socket(alice, bob, settings):
    settings.LENSWEB_WS_MAX_MESSAGES_PER_MINUTE = 10 * FRAMES  # every frame must reach the parser
    submit = database_sync_to_async(services.do_submit)
    mine = await submit(alice, None, {"text": "my own job"}, {})
    others = [(await submit(bob, None, {"text": f"bob's job {i}"}, {})).pk for i in range(3)]
    rng = random.Random(SEED)
    async with socket(alice) as communicator:
        assert (await communicator.connect())[0]
        await communicator.receive_from(timeout=scaled(10))
        for n, (kind, payload) in enumerate(frames(rng, others, {mine.pk})):
            if kind == "bytes":
                await communicator.send_to(bytes_data=payload)
            else:
                await communicator.send_to(text_data=payload)
            # A crash in the consumer re-raises here; a close would be no socket-message.
            answer = await receive_until(
                communicator, lambda m: 'id="socket-message"' in m, timeout=scaled(10)
            )
            assert 'class="flash error"' in answer[-1], (
                f"seed {SEED}, frame {n} ({payload!r:.200}): {answer[-1]}"
            )
            answer[-1].encode("utf-8")  # what daphne must be able to send
        await communicator.send_to(text_data=json.dumps({"action": "cancel", "job": str(mine.pk)}))
        answer = await receive_until(communicator, lambda m: 'id="socket-message"' in m, timeout=scaled(10))
        assert f"analysis #{mine.pk}: cancelled" in answer[-1], "a valid cancel should still work"
    assert (await database_sync_to_async(job_state)(mine.pk)).status == Analysis.Status.CANCELLED
    for pk in others:
        job = await database_sync_to_async(job_state)(pk)
        assert job.status == Analysis.Status.QUEUED and not job.cancel_requested, "bob's jobs are untouched"
    assert await pages_render(alice, mine.pk) == [200, 200, 200]
