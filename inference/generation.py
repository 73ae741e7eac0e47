"""Text generation beside analysis (spec §8): continuations, and a chat reply that stops at end-of-turn."""

from __future__ import annotations

from typing import Any

import torch

from .errors import InputError
from .inputs import _tokenize, render_chat
from .lens import Lens
from .limits import DEFAULT_LIMITS, Limits
from .types import AnalysisInput, GenerationOptions, ShouldCancel

END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "<|end|>")


def generate(
    lens: Lens,
    inp: AnalysisInput,
    options: GenerationOptions,
    *,
    should_cancel: ShouldCancel | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """`n` samples of up to `max_new_tokens` after the prompt (a chat gets its generation prompt)."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    inp.validate(limits)
    options.validate(limits)
    tok = lens.tokenizer
    if inp.is_chat:
        prompt = render_chat(tok, list(inp.messages))
    elif options.chat_reply:
        prompt = render_chat(tok, [{"role": "user", "content": inp.text}])
    else:
        prompt = inp.text
    ids = _tokenize(tok, prompt)
    if len(ids) + options.max_new_tokens > limits.max_tokens + limits.max_new_tokens:
        raise InputError(f"the prompt has {len(ids):,} tokens; the limit is {limits.max_tokens:,}")
    stop_ids = end_of_turn_ids(tok) if (inp.is_chat or options.chat_reply) else []

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full(
                (input_ids.shape[0],), bool(should_cancel and should_cancel()), dtype=torch.bool
            )

    input_ids = torch.tensor([ids], device=lens.device)
    sample = options.temperature > 0
    kwargs: dict[str, Any] = {
        "max_new_tokens": options.max_new_tokens,
        "do_sample": sample,
        # greedy samples are all alike: compute one and repeat it (transformers refuses n > 1 without sampling)
        "num_return_sequences": options.n if sample else 1,
        "stopping_criteria": StoppingCriteriaList([_Cancel()]),
        "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        "eos_token_id": stop_ids or None,
    }
    if sample:
        kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=0)
    with torch.inference_mode(), torch.random.fork_rng(devices=_rng_devices(lens)):
        torch.manual_seed(options.seed)
        out = lens.orig.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
    sequences = out[:, len(ids) :].tolist()
    if not sample:
        sequences = sequences * options.n
    samples = []
    for seq in sequences:
        finished = False
        if stop_ids:
            for i, t in enumerate(seq):
                if t in stop_ids:
                    seq, finished = seq[:i], True
                    break
        samples.append({"text": tok.decode(seq), "token_ids": seq, "finished": finished})
    return {
        "prompt": prompt,
        "prompt_token_ids": ids,
        "samples": samples,
        "cancelled": bool(should_cancel and should_cancel()),
        "options": options.to_dict(),
    }


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
