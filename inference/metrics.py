"""The orig model's side: activations A, their norms and the lens' usual norm range, and the opt-in KL and
logit-lens columns (spec §1, §3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache

if TYPE_CHECKING:  # a type only: lens.py reads metrics for its metadata
    from .lens import Lens

from .models import KV, blocks, cache_kv, embed_tokens, forward, lm_head, make_cache

KL_CACHE_BYTES = 512 << 20  # memory for the K/V copies of one KL chunk

# The lens' usual activation norm: the median ‖A_p‖ over positions ≥ 1 of this fixed English text, read once
# per loaded lens. A fixed text, not the analysed one: a row's flag then depends only on its own activation
# (as every other row field does), so it does not change with the text's length, the positions chosen or a
# reused prefix. Positions ≥ 1, and a median: position 0 and the few attention sinks stay out of it.
NORM_REFERENCE_TEXT = (
    "Alice gave Bob a red apple because he was hungry, and then they walked home together. The old "
    "lighthouse keeper climbed the spiral stairs every evening, carrying a brass lantern. In the morning, "
    "the fishermen returned to the harbour with their nets full of silver herring, and the whole village "
    "came down to the quay."
)
# A norm more than this many times the usual one (or less than its inverse) is flagged. Measured on
# SmolLM2-135M at layer 8 (the demo lens): ordinary tokens lie within 0.7–1.4× the median, position 0 at
# 4–5× and attention-sink tokens (some " the") at 2.3–5.7×; at later layers position 0 reaches 50–130×.
NORM_OUTLIER_FACTOR = 3.0


@dataclass
class OrigPass:
    ids: torch.Tensor  # (S,)
    acts: torch.Tensor  # (S, d) float32: output of block l, before the final norm
    log_probs: torch.Tensor | None = None  # (S, V) float32 next-token log-probs, only for KL
    kv: KV | None = None  # the orig's K/V over the text, only for KL


def orig_forward(lens: Lens, ids: torch.Tensor, full: bool) -> OrigPass:
    """One forward of the text; stops after block l unless the full pass is needed for KL."""
    embeds = embed_tokens(lens.orig, ids.unsqueeze(0))
    if not full:
        acts = forward(lens.orig, embeds, cache=None, start=0, stop_after=lens.layer)
        return OrigPass(ids=ids, acts=acts[0].float())
    captured = {}

    def grab(_module, _args, output):
        captured["acts"] = output[0] if isinstance(output, tuple) else output

    handle = blocks(lens.orig)[lens.layer].register_forward_hook(grab)
    cache = DynamicCache()
    try:
        hidden = forward(lens.orig, embeds, cache=cache, start=0)
    finally:
        handle.remove()
    log_probs = torch.log_softmax(lm_head(lens.orig, hidden[0]).float(), dim=-1)
    return OrigPass(ids=ids, acts=captured["acts"][0].float(), log_probs=log_probs, kv=cache_kv(cache))


@dataclass(frozen=True)
class NormRange:
    """The lens' usual ‖A‖ (`median`) and the range outside which a row's norm is flagged an outlier."""

    median: float
    low: float
    high: float

    def is_outlier(self, norm: float) -> bool:
        return not self.low <= norm <= self.high

    def to_dict(self) -> dict:
        return {
            "median": self.median,
            "low": self.low,
            "high": self.high,
            "rule": (
                f"activation_norm_outlier: ‖A‖ above {NORM_OUTLIER_FACTOR:g}× or below 1/{NORM_OUTLIER_FACTOR:g} "
                "of the median ‖A‖ over positions ≥ 1 of a fixed English reference text (position 0 and "
                "attention sinks)"
            ),
        }


def norm_range(lens) -> NormRange:
    """The lens' usual norm range (see NORM_REFERENCE_TEXT), computed on first use and kept on the lens."""
    found = getattr(lens, "_norm_range", None)
    if found is None:
        ids = list(lens.tokenizer(NORM_REFERENCE_TEXT, add_special_tokens=True).input_ids)
        with torch.inference_mode():
            acts = orig_forward(lens, torch.tensor(ids, device=lens.device), full=False).acts
        median = float(activation_norms(acts[1:]).median())
        found = NormRange(median, median / NORM_OUTLIER_FACTOR, median * NORM_OUTLIER_FACTOR)
        lens._norm_range = found  # a per-lens cache: two threads computing it at once get equal values
    return found


def activation_norms(acts: torch.Tensor) -> torch.Tensor:
    """‖A_p‖₂ per row, float32."""
    return torch.linalg.vector_norm(acts.float(), dim=-1)


def kl_divergences(lens: Lens, orig: OrigPass, positions: list[int], recon: torch.Tensor) -> torch.Tensor:
    """KL(P ‖ Q) per position, float32: Q re-runs token p after the original K/V of positions < p, with the
    block-l output at p replaced by Â_p. One single-token row per position, so it batches."""
    seq = orig.ids.shape[0]
    k0, _v0 = orig.kv[0]
    per_row = 2 * len(orig.kv) * k0.shape[1] * (seq + 1) * k0.shape[3] * k0.element_size()
    chunk = max(1, KL_CACHE_BYTES // max(1, per_row))
    out = []
    for i in range(0, len(positions), chunk):
        out.append(_kl_chunk(lens, orig, positions[i : i + chunk], recon[i : i + chunk]))
    return torch.cat(out)


def _kl_chunk(lens: Lens, orig: OrigPass, positions: list[int], recon: torch.Tensor) -> torch.Tensor:
    rows, seq = len(positions), orig.ids.shape[0]
    pos = torch.tensor(positions, device=orig.ids.device)
    # Keys: the S cached ones (only those before p are visible) and the row's own new key.
    keys = torch.arange(seq + 1, device=pos.device)
    mask = (keys.unsqueeze(0) < pos.unsqueeze(1)) | (keys.unsqueeze(0) == seq)
    mask = mask[:, None, None, :]
    embeds = embed_tokens(lens.orig, orig.ids[pos].unsqueeze(1))
    cache = make_cache(orig.kv, rows)
    value = recon.to(embeds.dtype).unsqueeze(1)

    def replace(_module, _args, output):
        if isinstance(output, tuple):
            return (value, *output[1:])
        return value

    handle = blocks(lens.orig)[lens.layer].register_forward_hook(replace)
    try:
        hidden = forward_at(lens, embeds, cache, pos, mask)
    finally:
        handle.remove()
    log_q = torch.log_softmax(lm_head(lens.orig, hidden[:, -1]).float(), dim=-1)
    log_p = orig.log_probs[pos]
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def forward_at(
    lens: Lens, embeds: torch.Tensor, cache, pos: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """A single-token forward with per-row position ids (the generic `forward` numbers rows alike)."""
    from .models import backbone

    out = backbone(lens.orig)(
        inputs_embeds=embeds, position_ids=pos.unsqueeze(1), cache=cache, use_cache=True, attention_mask=mask
    )
    return out.last_hidden_state


def logit_lens_top(lens: Lens, acts: torch.Tensor) -> list[list[str]]:
    """Top tokens of lm_head(A_p) with NO final norm, as the research code does; min(T, 10) of them."""
    n = min(lens.t_text, 10)
    top = lm_head(lens.orig, acts.to(lens.dtype)).float().topk(n, dim=-1).indices.tolist()
    return [[lens.tokenizer.decode([t]) for t in row] for row in top]
