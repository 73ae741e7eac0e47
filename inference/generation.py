"""Text generation beside analysis (spec §8): continuations, and a chat reply that stops at end-of-turn."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .errors import InputError, OptionError
from .inputs import _tokenize, render_chat
from .lens import Lens
from .limits import DEFAULT_LIMITS, Limits
from .types import AnalysisInput, GenerationOptions, ShouldCancel

END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "<|end|>")
# Tokens between on_tokens calls: each call copies the new ids off the device and hands them on.
STREAM_EVERY = 4

OnTokens = Callable[[list[list[int]]], object]  # each sample's new token ids so far


def generate(
    lens: Lens,
    inp: AnalysisInput,
    options: GenerationOptions,
    *,
    should_cancel: ShouldCancel | None = None,
    limits: Limits = DEFAULT_LIMITS,
    on_tokens: OnTokens | None = None,
    stream_every: int = STREAM_EVERY,
) -> dict[str, Any]:
    """`n` samples of up to `max_new_tokens` after the prompt (a chat gets its generation prompt; a chat
    ending in an assistant turn is continued, and only the new tokens are returned).

    `on_tokens` gets every sample's new ids so far (cut at end-of-turn) every `stream_every` tokens, and
    once more at the end if they changed: its last call holds the returned samples' ids. The samples do not
    depend on it (same seed, same samples)."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    inp.validate(limits)
    options.validate(limits)
    if isinstance(stream_every, bool) or not isinstance(stream_every, int) or stream_every < 1:
        raise OptionError(f"stream_every must be a whole number of at least 1, got {stream_every!r}")
    tok = lens.tokenizer
    if inp.is_chat:
        prompt = render_chat(tok, list(inp.messages), default_system_prompt=inp.default_system_prompt)
    elif options.chat_reply:
        prompt = render_chat(tok, [{"role": "user", "content": inp.text}])
    else:
        prompt = inp.text
    ids = _tokenize(tok, prompt)
    if len(ids) + options.max_new_tokens > limits.max_tokens + limits.max_new_tokens:
        raise InputError(f"the prompt has {len(ids):,} tokens; the limit is {limits.max_tokens:,}")
    stop_ids = end_of_turn_ids(tok) if (inp.is_chat or options.chat_reply) else []
    sample = options.temperature > 0

    def new_tokens(sequences: list[list[int]]) -> list[list[int]]:
        """Each sample's new ids, cut at its first end-of-turn; greedy's one row repeated `n` times."""
        cut = [_cut(seq, stop_ids)[0] for seq in sequences]
        return cut if sample else cut * options.n

    class _Watch(StoppingCriteria):
        """Sees the ids after every decoding step: streams them, and stops every row on cancel."""

        def __init__(self):
            self.steps = 0
            self.sent: list[list[int]] | None = None
            self.cancelled = False

        def send(self, tokens: list[list[int]]) -> None:
            if on_tokens is not None and tokens != self.sent:
                self.sent = tokens
                on_tokens(tokens)

        def __call__(self, input_ids, scores, **kwargs):
            self.steps += 1
            if on_tokens is not None and self.steps % stream_every == 0:
                self.send(new_tokens(input_ids[:, len(ids) :].tolist()))
            if not self.cancelled and should_cancel is not None and should_cancel():
                self.cancelled = True
            return torch.full(
                (input_ids.shape[0],), self.cancelled, dtype=torch.bool, device=input_ids.device
            )

    watch = _Watch()
    input_ids = torch.tensor([ids], device=lens.device)
    kwargs: dict[str, Any] = {
        "max_new_tokens": options.max_new_tokens,
        "do_sample": sample,
        # greedy samples are all alike: compute one and repeat it (transformers refuses n > 1 without sampling)
        "num_return_sequences": options.n if sample else 1,
        "stopping_criteria": StoppingCriteriaList([watch]),
        "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        "eos_token_id": stop_ids or None,
    }
    if sample:
        kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=0)
    with torch.inference_mode(), torch.random.fork_rng(devices=_rng_devices(lens)):
        torch.manual_seed(options.seed)
        out = lens.orig.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
    sequences = out[:, len(ids) :].tolist()
    tokens = new_tokens(sequences)
    watch.send(tokens)
    finished = [_cut(seq, stop_ids)[1] for seq in sequences]
    if not sample:
        finished = finished * options.n
    samples = [
        {"text": tok.decode(seq), "token_ids": seq, "finished": done}
        for seq, done in zip(tokens, finished, strict=True)
    ]
    return {
        "prompt": prompt,
        "prompt_token_ids": ids,
        "samples": samples,
        "cancelled": watch.cancelled or bool(should_cancel and should_cancel()),
        "options": options.to_dict(),
    }


def _cut(seq: list[int], stop_ids: list[int]) -> tuple[list[int], bool]:
    """(the ids before the first end-of-turn, whether there was one)."""
    for i, t in enumerate(seq):
        if t in stop_ids:
            return seq[:i], True
    return seq, False


def end_of_turn_ids(tokenizer) -> list[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in vocab:
            ids.add(int(vocab[token]))
    return sorted(ids)


def _rng_devices(lens: Lens) -> list:
    return [lens.device] if lens.device.type == "cuda" else []
