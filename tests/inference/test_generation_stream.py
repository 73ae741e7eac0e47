"""Generation as the chat builder uses it: replies streamed through on_tokens, seeded, cancellable mid-way,
an assistant prefill continued (only the new tokens returned), on templates with and without a system role."""

import dataclasses

import pytest
import torch

from inference.errors import OptionError
from inference.generation import end_of_turn_ids, generate
from inference.inputs import prepare_input
from inference.registry import LensSpec
from inference.types import AnalysisInput, GenerationOptions
from tests.tinylens import NO_SYSTEM_CHAT_TEMPLATE, tokenizer_with_chat_template

from .golden import cached_lens

SYSTEM = {"role": "system", "content": "You are terse."}
USER = {"role": "user", "content": "Is the Eiffel Tower in Paris?"}
PREFILL = {"role": "assistant", "content": "Yes, it"}


@pytest.fixture(scope="module")
def lens():
    """The suite's in-process tiny lens (tests/tinylens.py): ChatML with a default system turn."""
    from tests.conftest import tiny_lens

    built = tiny_lens()
    return cached_lens(
        LensSpec(id="tiny", name="tiny", checkpoint=str(built.checkpoint), base_model=str(built.base))
    )


@pytest.fixture(scope="module", params=["chatml-default", "raises-on-system"])
def any_template_lens(request, lens):
    if request.param == "chatml-default":
        return lens
    return dataclasses.replace(
        lens, tokenizer=tokenizer_with_chat_template(lens.tokenizer, NO_SYSTEM_CHAT_TEMPLATE)
    )


class Recorder:
    def __init__(self, cancel_after: int | None = None):
        self.calls: list[list[list[int]]] = []
        self.cancel_after = cancel_after

    def __call__(self, tokens):
        self.calls.append(tokens)

    def should_cancel(self) -> bool:
        return self.cancel_after is not None and len(self.calls) >= self.cancel_after


def greedy_next(lens, ids: list[int]) -> int:
    with torch.inference_mode():
        logits = lens.orig(torch.tensor([ids], device=lens.device)).logits[0, -1]
    return int(logits.argmax())


def test_a_prefill_is_continued_and_only_new_tokens_come_back(any_template_lens):
    lens = any_template_lens
    inp = AnalysisInput(messages=[SYSTEM, USER, PREFILL])
    out = generate(lens, inp, GenerationOptions(max_new_tokens=6, temperature=0))
    # the prompt is exactly what an analysis of the same chat runs: the prefill open, not closed
    assert out["prompt_token_ids"] == prepare_input(lens.tokenizer, inp).token_ids
    assert out["prompt"].endswith(PREFILL["content"]) and SYSTEM["content"] in out["prompt"]
    # the first returned token is the model's next token after the prefill, not the prompt's start
    sample = out["samples"][0]
    first = greedy_next(lens, out["prompt_token_ids"])
    if first in end_of_turn_ids(lens.tokenizer):
        assert sample["token_ids"] == [] and sample["finished"]
    else:
        assert sample["token_ids"][0] == first
    assert sample["text"] == lens.tokenizer.decode(sample["token_ids"])


def test_replies_are_deterministic_for_a_seed_with_or_without_streaming(any_template_lens):
    lens = any_template_lens
    inp = AnalysisInput(messages=[SYSTEM, USER])
    options = GenerationOptions(n=3, max_new_tokens=12, temperature=1.0, seed=11)
    plain = generate(lens, inp, options)
    recorder = Recorder()
    streamed = generate(lens, inp, options, on_tokens=recorder, stream_every=1)
    assert streamed["samples"] == plain["samples"] and not streamed["cancelled"]
    assert recorder.calls[-1] == [s["token_ids"] for s in plain["samples"]]
    other = generate(lens, inp, dataclasses.replace(options, seed=12))
    assert [s["token_ids"] for s in other["samples"]] != [s["token_ids"] for s in plain["samples"]]


def test_streamed_tokens_grow_to_the_result(lens):
    recorder = Recorder()
    out = generate(
        lens,
        AnalysisInput(text="Once upon a time"),
        GenerationOptions(n=2, max_new_tokens=8, temperature=1.0, seed=5),
        on_tokens=recorder,
        stream_every=1,
    )
    final = [s["token_ids"] for s in out["samples"]]
    assert all(len(ids) == 8 for ids in final)
    # one call per new token (no end-of-turn cut for a continuation), each a prefix of the result
    assert [len(call[0]) for call in recorder.calls] == list(range(1, 9))
    for call in recorder.calls:
        assert [ids[: len(call[0])] for ids in final] == call
    assert recorder.calls[-1] == final


def test_streaming_every_few_tokens_still_ends_on_the_result(lens):
    recorder = Recorder()
    out = generate(
        lens,
        AnalysisInput(text="Once upon a time"),
        GenerationOptions(max_new_tokens=10, temperature=0, n=3),
        on_tokens=recorder,
        stream_every=4,
    )
    final = [s["token_ids"] for s in out["samples"]]
    assert [len(call[0]) for call in recorder.calls] == [4, 8, 10]
    assert recorder.calls[-1] == final and all(len(call) == 3 for call in recorder.calls)  # greedy: n copies


def test_a_streamed_reply_never_shows_its_end_of_turn(lens):
    recorder = Recorder()
    out = generate(
        lens,
        AnalysisInput(messages=[USER]),
        GenerationOptions(n=4, max_new_tokens=30, temperature=1.5, seed=2),
        on_tokens=recorder,
        stream_every=1,
    )
    stops = set(end_of_turn_ids(lens.tokenizer))
    assert all(not set(ids) & stops for call in recorder.calls for ids in call)
    assert recorder.calls[-1] == [s["token_ids"] for s in out["samples"]]


def test_cancel_mid_generation_stops_early(lens):
    recorder = Recorder(cancel_after=3)
    out = generate(
        lens,
        AnalysisInput(text="Once upon a time"),
        GenerationOptions(n=2, max_new_tokens=40, temperature=1.0, seed=1),
        on_tokens=recorder,
        stream_every=1,
        should_cancel=recorder.should_cancel,
    )
    assert out["cancelled"]
    lengths = {len(s["token_ids"]) for s in out["samples"]}
    assert lengths == {3}  # stopped at the step that saw the cancel, not at max_new_tokens
    assert recorder.calls[-1] == [s["token_ids"] for s in out["samples"]]


def test_stream_every_is_checked(lens):
    with pytest.raises(OptionError, match="stream_every"):
        generate(lens, AnalysisInput(text="x"), GenerationOptions(), on_tokens=print, stream_every=0)


def test_the_engine_adapter_streams_and_describes_the_template(lens):
    from lensweb.analyses.engine import InferenceEngine

    engine = InferenceEngine()
    recorder = Recorder()
    options = GenerationOptions(max_new_tokens=5, temperature=0.8, seed=4)
    out = engine.generate(lens, AnalysisInput(text="Once upon a time"), options, on_tokens=recorder)
    assert recorder.calls and recorder.calls[-1] == [out["samples"][0]["token_ids"]]
    info = engine.chat_info(lens.spec)
    assert info["has_template"] and info["system_role"] and info["default_system_prompt"]
    assert engine.chat_info(lens.spec) == info
