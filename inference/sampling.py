"""Batch-invariant sampling: the random number behind a token depends only on (seed, position, rollout, step).

The research code draws one Gumbel tensor for the whole batch, so a row's explanation changes with the batch
it shares; a result cache needs the same answer whatever the batch. We draw one uniform per (row, step) from a
counter-based hash and sample by inverting the row's CDF: exact categorical sampling, independent of batching.
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1
_INV_2_53 = 1.0 / (1 << 53)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def uniform(seed: int, position: int, rollout: int, step: int) -> float:
    """A float in (0, 1), a pure function of its four arguments."""
    h = _splitmix64(seed)
    for part in (position, rollout, step):
        h = _splitmix64(h ^ (part & _MASK64))
    return ((h >> 11) + 0.5) * _INV_2_53


def uniforms_for_rows(seed: int, positions: list[int], k: int, steps: int) -> torch.Tensor:
    """(len(positions) * k, steps) float64 uniforms; rows are position-major (row = i*k + j), as the decoder's."""
    values = [
        [uniform(seed, p, j, t) for t in range(steps)] for p in positions for j in range(k)
    ]  # a few thousand scalar hashes per batch: negligible beside one decode step
    return torch.tensor(values, dtype=torch.float64)


def sample_tokens(logits: torch.Tensor, temperature: float, u: torch.Tensor | None) -> torch.Tensor:
    """Draw one token per row from softmax(logits / temperature) in float32; temperature 0 means argmax."""
    if temperature == 0 or u is None:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    cdf = probs.cumsum(dim=-1)
    target = (u.to(cdf.device, torch.float64) * cdf[:, -1].double()).to(cdf.dtype).unsqueeze(-1)
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return idx.clamp_(max=logits.shape[-1] - 1)
