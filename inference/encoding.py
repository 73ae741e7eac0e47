"""Encoder: explanation → reconstructed activation (spec §1, §3, §5).

Runs [S_pre K/V (shared) ; E(x) ; S_post ; E(tok_p) + v] and stops after block `output_layer`: no upper
blocks, no LM head. Salience re-encodes only the T explanation slots (plus the short suffix) per ablation.
"""

from __future__ import annotations

import torch

from .lens import Lens
from .models import embed_tokens, forward, make_cache


def encode(lens: Lens, expl_ids: torch.Tensor, current_ids: torch.Tensor | None, chunk: int) -> torch.Tensor:
    """(R, T) explanation ids (+ (R,) current tokens) → Â (R, d) in float32, in chunks of `chunk` rows."""
    outs = [
        _encode_chunk(
            lens,
            expl_ids[i : i + chunk],
            None if current_ids is None else current_ids[i : i + chunk],
        )
        for i in range(0, expl_ids.shape[0], chunk)
    ]
    return torch.cat(outs, dim=0)


def _encode_chunk(lens: Lens, expl_ids: torch.Tensor, current_ids: torch.Tensor | None) -> torch.Tensor:
    enc = lens.ckpt.encoder
    rows = expl_ids.shape[0]
    parts = [embed_tokens(lens.model, expl_ids)]
    if enc.soft_prompt_postfix is not None:
        parts.append(enc.soft_prompt_postfix.unsqueeze(0).expand(rows, -1, -1))
    if lens.ckpt.add_current_token:
        last = embed_tokens(lens.model, current_ids.unsqueeze(1))
        if enc.special_vector is not None:
            last = last + enc.special_vector
        parts.append(last)
    elif enc.special_vector is not None:
        parts[-1] = parts[-1].clone()
        parts[-1][:, -1] = parts[-1][:, -1] + enc.special_vector
    embeds = torch.cat(parts, dim=1)
    cache = make_cache(lens.encoder_prefix, rows)
    hidden = forward(
        lens.model, embeds, cache=cache, start=lens.encoder_prefix_len, stop_after=lens.ckpt.output_layer
    )
    h = hidden[:, -1]
    if enc.proj_weight is not None:
        h = h @ enc.proj_weight.T + enc.proj_bias
    return h.float()


def mse(acts: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """mean_i (A_i − Â_i)² per row, float32."""
    return (acts.float() - recon.float()).pow(2).mean(dim=-1)


def relative_rmse(acts: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
    """‖A − Â‖ / ‖A‖ = sqrt(mse) / sqrt(mean A²), float32."""
    return err.sqrt() / acts.float().pow(2).mean(dim=-1).sqrt()


def cosine_similarity(acts: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """cos(A, Â) = A·Â / (‖A‖ ‖Â‖) per row, float32; 0 where either vector is zero."""
    a, r = acts.float(), recon.float()
    denom = torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(r, dim=-1)
    return (a * r).sum(dim=-1) / denom.clamp_min(1e-30)


def salience(
    lens: Lens,
    best_ids: torch.Tensor,
    current_ids: torch.Tensor | None,
    acts: torch.Tensor,
    best_mse: torch.Tensor,
    chunk: int,
) -> torch.Tensor:
    """(B, T) float64: (mse with token j replaced by the null token − mse) / mse; 0 where mse is 0."""
    batch, steps = best_ids.shape
    ablated = best_ids.repeat_interleave(steps, dim=0)  # row b*T + j has token j ablated
    cols = torch.arange(steps, device=best_ids.device).repeat(batch)
    ablated[torch.arange(batch * steps, device=best_ids.device), cols] = lens.null_token_id
    cur = None if current_ids is None else current_ids.repeat_interleave(steps)
    recon = encode(lens, ablated, cur, chunk)
    abl_mse = mse(acts.repeat_interleave(steps, dim=0), recon).view(batch, steps).double()
    base = best_mse.double().unsqueeze(1)
    # Python-float64 arithmetic from fp32 values, as the research code's best-of-k path does.
    return torch.where(base > 0, (abl_mse - base) / base.clamp_min(1e-300), torch.zeros_like(abl_mse))
