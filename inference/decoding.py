"""Decoder: activation → exactly T explanation tokens (spec §2).

The prefill runs once per position ([slot; P_right] after the shared left-prompt K/V, with the patching hooks);
its K/V are then repeated for the k rollouts, which share A. Decode steps run all B·k rows together.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .lens import Lens
from .models import embed_tokens, forward, lm_head, make_cache, patch_slot
from .sampling import sample_tokens


def slot_values(lens: Lens, acts: torch.Tensor) -> list[torch.Tensor]:
    """proj_i(A) for the input slot (i = 0) and every patched block i; a single projection serves them all."""
    dec = lens.ckpt.decoder
    n = max(1, lens.patched_blocks)
    values = []
    for i in range(n):
        j = i if dec.per_layer else 0
        values.append(acts @ dec.proj_weight[j].T + dec.proj_bias[j])
    return values


def decode(
    lens: Lens,
    acts: torch.Tensor,
    k: int,
    temperature: float,
    uniforms: torch.Tensor | None,
    check_cancel: Callable[[], None],
) -> torch.Tensor:
    """acts (B, d) → token ids (B·k, T), rows position-major (row = i·k + j)."""
    dec = lens.ckpt.decoder
    batch = acts.shape[0]
    n_left, n_right = dec.prompt_left.shape[0], dec.prompt_right.shape[0]
    values = slot_values(lens, acts.to(lens.dtype))
    embeds = torch.cat([values[0].unsqueeze(1), dec.prompt_right.unsqueeze(0).expand(batch, -1, -1)], dim=1)
    cache = make_cache(lens.decoder_prefix, batch)
    with patch_slot(lens.model, values[: lens.patched_blocks], slot=0):
        hidden = forward(lens.model, embeds, cache=cache, start=n_left)
    logits = lm_head(lens.model, hidden[:, -1]).float()
    if k > 1:
        cache.batch_repeat_interleave(k)
        logits = logits.repeat_interleave(k, dim=0)

    steps = lens.t_text
    start = n_left + 1 + n_right
    tokens = torch.empty(batch * k, steps, dtype=torch.long, device=acts.device)
    for t in range(steps):
        check_cancel()
        u = None if uniforms is None else uniforms[:, t]
        tokens[:, t] = sample_tokens(logits, temperature, u)
        if t + 1 < steps:
            step_embeds = embed_tokens(lens.model, tokens[:, t : t + 1])
            hidden = forward(lens.model, step_embeds, cache=cache, start=start + t)
            logits = lm_head(lens.model, hidden[:, -1]).float()
    return tokens
