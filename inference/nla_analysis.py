"""The NLA family (inference.driver runs it): a batch of positions → rows (shared/spec/nla.md §2–§5).

Per text: one base forward to block K (the activations). Per batch of positions: the AV's prompt suffix from
the marker on, after the prompt's shared K/V, with the rescaled activation in the marker's row; its K/V
repeated for the k rollouts; decode steps for all rows together, a row leaving the batch when it stops (EOS
or </explanation>) or reaches max_new_tokens; every explanation parsed, reconstructed by the AR (blocks 0..K,
right-padded, no mask: a causal model never looks at the padding after a row) and scored. A row depends only
on (lens, input, options, seed, position), never on the batch it ran in (sampling as in inference.sampling).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from . import ENGINE_VERSION
from .encoding import relative_rmse
from .errors import InputError
from .families import Family
from .inputs import explanation_ids, explanation_text
from .metrics import activation_norms, kl_divergences, logit_lens_top, norm_range
from .models import embed_tokens, forward, lm_head, make_cache, text_config
from .nla import NLALens, load_nla, nla_files, nla_spec_identity, nla_tokenizer, nla_width
from .nla_format import STOP_STRING, explanation_words, fill, parse_explanation, without_word
from .options import check_int
from .rows import Row
from .sampling import sample_tokens
from .sharing import Items, Work
from .types import (
    AnalysisOptions,
)

DEFAULT_CPU_ROWS = 64  # AV rows (positions x k) per batch: each holds the prompt's and its own K/V
AR_CHUNK_TOKENS = {"cpu": 8192, "cuda": 131072}  # rows x padded length per AR forward


@dataclass
class Generated:
    ids: list[int]  # the AV's new ids, without a final EOS
    stop: str  # "eos", "stop_string" or "max_new_tokens"


def default_rows_budget(nla: NLALens, steps: int) -> int:
    """LENSWEB_ROWS_BUDGET, else from free CUDA memory (K/V of prompt + explanation per row), else 64."""
    env = os.environ.get("LENSWEB_ROWS_BUDGET")
    if env:
        return max(1, int(env))
    if nla.device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(nla.device)
        cfg = text_config(nla.av)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        per_row = 2 * cfg.num_hidden_layers * kv_heads * head_dim * (len(nla.prompt_ids) + steps)
        per_row = per_row * torch.finfo(nla.dtype).bits // 8 * 2  # the step's concatenated copy
        per_row += cfg.vocab_size * 4 * 3  # logits and the sampler's softmax and CDF
        return int(max(8, min(2048, 0.4 * free // per_row)))
    return DEFAULT_CPU_ROWS


def _steps(nla: NLALens, max_new_tokens: int | None, limits) -> int:
    steps = nla.max_new_tokens if max_new_tokens is None else max_new_tokens
    check_int("max_new_tokens", steps, 1, limits.max_new_tokens)
    return steps


def analysis_metadata(nla: NLALens, prepared, options: AnalysisOptions, steps: int) -> dict[str, Any]:
    return {
        **nla.metadata(),
        "options": options.to_dict(),
        "t_text": steps,
        "max_new_tokens": steps,
        "n_tokens": len(prepared.token_ids),
        "positions": list(prepared.positions),
        "token_ids": prepared.token_ids,
        "rendered_text": prepared.rendered_text,
        "best_of_k_by": "mse_nrm",
        "explanation_parser": "the first <explanation>…</explanation>, trimmed; else the whole AV output",
        "salience": "per explanation word: (mse_nrm without the word - mse_nrm) / mse_nrm",
        "salience_null_token_id": None,
        "logit_lens_final_norm": False,
        "kl": (
            "KL(P||Q): P the original next-token distribution at p, Q with block-K output at p set to the "
            "AR's reconstruction rescaled to the norm of A_p (the AR is trained on directions only)"
        ),
        "engine_version": ENGINE_VERSION,
    }


def _analyze_batch(nla, items: Items, options, work: Work) -> list[Row]:
    steps, ticker = work.steps, work.ticker
    k, n = options.best_of_k, len(items)
    acts = items.acts  # (B, d) float32
    if not torch.isfinite(acts).all():
        raise InputError("an activation at block K is not finite; the base model overflowed on this text")
    uniforms = items.uniforms(k, steps) if options.temperature > 0 else None

    t0 = time.perf_counter()
    generated = generate_explanations(nla, acts, k, options.temperature, uniforms, steps, ticker.step)
    texts = [nla.av_tokenizer.decode(g.ids, skip_special_tokens=False) for g in generated]
    parsed = [parse_explanation(t) for t in texts]
    t1 = time.perf_counter()
    ticker.phase("encoding")
    gold = acts.repeat_interleave(k, dim=0)
    recon = reconstruct(nla, [p[0] for p in parsed])
    mse_nrm, cos = score(recon, gold, nla.cfg.mse_scale)
    raw = (recon - gold).pow(2).mean(dim=-1)
    mse_nrm_k = mse_nrm.view(n, k)
    best = mse_nrm_k.argmin(dim=1)  # first on ties
    chosen = (torch.arange(n, device=best.device) * k + best).tolist()
    rel = relative_rmse(acts, raw[chosen])
    t2 = time.perf_counter()
    sal = None
    if options.salience:
        ticker.phase("salience")
        sal = word_salience(nla, [parsed[c][0] for c in chosen], acts, mse_nrm[chosen])
    t3 = time.perf_counter()
    kl = None
    if options.kl:
        ticker.phase("kl")
        best_recon = recon[chosen]
        norms = acts.norm(dim=-1, keepdim=True) / best_recon.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        kl = items.kl(nla, best_recon * norms).tolist()
    t4 = time.perf_counter()
    ll = logit_lens_top(nla, acts) if options.logit_lens else None
    work.spent(t0, t1, t2, t3, t4)

    metrics = {"mse_nrm": mse_nrm.tolist(), "cos": cos.tolist(), "mse": raw.tolist()}
    rel_l = rel.tolist()
    norm_l, usual = activation_norms(acts).tolist(), norm_range(nla)
    rows = []
    for i, p in enumerate(items.positions):
        c = chosen[i]
        explanation, matched = parsed[c]
        row = Row(
            position=p,
            token=items.token(i),
            token_id=items.token_id(i),
            explanation=explanation,
            explanation_tokens=explanation_words(explanation),
            explanation_token_ids=generated[c].ids,
            token_salience=sal[i] if sal is not None else None,
            mse=metrics["mse"][c],
            relative_rmse=rel_l[i],
            kl=kl[i] if kl is not None else None,
            logit_lens_top=ll[i] if ll is not None else None,
            **_nla_fields(nla, metrics, c),
            # cosine_similarity is the NLA's own (of the rescaled vectors, the same cosine): kept
            activation_norm=norm_l[i],
            activation_norm_outlier=usual.is_outlier(norm_l[i]),
            av_text=texts[c],
            av_stop=generated[c].stop,
            explanation_parsed=matched,
        )
        if options.keep_candidates:
            row.candidates = [
                {
                    "explanation_token_ids": generated[i * k + j].ids,
                    "explanation": parsed[i * k + j][0],
                    "mse": metrics["mse"][i * k + j],
                    **_nla_fields(nla, metrics, i * k + j),
                    "chosen": i * k + j == c,
                }
                for j in range(k)
            ]
        rows.append(row)
    return rows


def _score(nla: NLALens, prepared, orig, position: int, explanation, ids, options, limits) -> Row:
    """The AR on the caller's explanation at `position`. Given token ids (an AV output, such as a row's own
    explanation_token_ids), the explanation is parsed from their text as a generated one is; given a text, that
    text is the explanation."""
    if ids is not None:
        ids = explanation_ids(ids, text_config(nla.av).vocab_size, limits)
        explanation = parse_explanation(nla.av_tokenizer.decode(ids, skip_special_tokens=False))[0]
    explanation = explanation_text(explanation, limits)
    acts = orig.acts[position : position + 1]
    recon = reconstruct(nla, [explanation])
    mse_nrm, cos = score(recon, acts, nla.cfg.mse_scale)
    raw = (recon - acts).pow(2).mean(dim=-1)
    sal = word_salience(nla, [explanation], acts, mse_nrm)[0] if options.salience else None
    kl = None
    if options.kl:  # the reconstruction rescaled to ‖A‖, as for a row
        norms = acts.norm(dim=-1, keepdim=True) / recon.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        kl = kl_divergences(nla, orig, [position], recon * norms).tolist()[0]
    metrics = {"mse_nrm": mse_nrm.tolist(), "cos": cos.tolist(), "mse": raw.tolist()}
    norm = activation_norms(acts).item()
    return Row(
        position=position,
        token=prepared.tokens[position],
        token_id=prepared.token_ids[position],
        explanation=explanation,
        explanation_tokens=explanation_words(explanation),
        explanation_token_ids=ids,
        token_salience=sal,
        mse=metrics["mse"][0],
        relative_rmse=relative_rmse(acts, raw).item(),
        kl=kl,
        **_nla_fields(nla, metrics, 0),
        activation_norm=norm,
        activation_norm_outlier=norm_range(nla).is_outlier(norm),
    )


def _nla_fields(nla: NLALens, metrics: dict[str, list[float]], r: int) -> dict[str, float | None]:
    m = metrics["mse_nrm"][r]
    variance = nla.cfg.variance
    return {
        "mse_nrm": m,
        "cosine_similarity": metrics["cos"][r],
        # Python float64 from the float32 mse_nrm, as the reference computes it
        "fve_nrm": None if variance is None else 1.0 - m / variance,
    }


# --- AV: injection and generation ----------------------------------------------------------------------------


def injected_rows(nla: NLALens, acts: torch.Tensor) -> torch.Tensor:
    """v / (‖v‖ / injection_scale): norm in float32, one division (spec §2.2.4); in the model's dtype."""
    v = acts.float()
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(1e-12)
    return (v / (norm / nla.cfg.injection_scale)).to(nla.dtype)


def generate_explanations(
    nla: NLALens,
    acts: torch.Tensor,
    k: int,
    temperature: float,
    uniforms: torch.Tensor | None,
    steps: int,
    check_cancel,
) -> list[Generated]:
    """acts (B, d) → B·k generations, position-major (row = i·k + j)."""
    batch, p = acts.shape[0], nla.injection_position
    suffix = nla.prompt_embeds[p:].unsqueeze(0).expand(batch, -1, -1).clone()
    suffix[:, 0] = injected_rows(nla, acts)
    cache = make_cache(nla.av_prefix, batch)
    hidden = forward(nla.av, suffix, cache=cache, start=p)
    logits = _logits(nla, hidden[:, -1])
    if k > 1:
        cache.batch_repeat_interleave(k)
        logits = logits.repeat_interleave(k, dim=0)

    rows = batch * k
    out: list[list[int]] = [[] for _ in range(rows)]
    stops: list[str] = ["max_new_tokens"] * rows
    live = list(range(rows))
    first = len(nla.prompt_ids)
    stopper = _StopString(nla.av_tokenizer)
    for t in range(steps):
        check_cancel()
        u = None if uniforms is None else uniforms[live, t]
        chosen = sample_tokens(logits, temperature, u).tolist()
        keep = []
        for i, (row, token) in enumerate(zip(live, chosen, strict=True)):
            if token in nla.eos_ids:
                stops[row] = "eos"
                continue
            out[row].append(token)
            if stopper.completed(out[row]):
                stops[row] = "stop_string"
                continue
            keep.append(i)
        if not keep or t + 1 == steps:
            break
        if len(keep) < len(live):  # finished rows leave the batch and their K/V with them
            cache.batch_select_indices(torch.tensor(keep, device=acts.device))
            live = [live[i] for i in keep]
            chosen = [chosen[i] for i in keep]
        step = torch.tensor(chosen, device=acts.device).unsqueeze(1)
        hidden = forward(nla.av, embed_tokens(nla.av, step), cache=cache, start=first + t)
        logits = _logits(nla, hidden[:, -1])
    return [Generated(ids, stop) for ids, stop in zip(out, stops, strict=True)]


def _logits(nla: NLALens, hidden: torch.Tensor) -> torch.Tensor:
    """The AV's next-token logits as its own forward computes them (with Gemma-2's soft-capping)."""
    logits = lm_head(nla.av, hidden).float()
    cap = getattr(text_config(nla.av), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


class _StopString:
    """Whether a row's text now holds </explanation>: it can only have completed in a token that holds the
    closing character, so only those rows decode their tail."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.closes: dict[int, bool] = {}

    def completed(self, ids: list[int]) -> bool:
        last = ids[-1]
        closes = self.closes.get(last)
        if closes is None:
            closes = self.closes[last] = STOP_STRING[-1] in self.tokenizer.decode([last])
        # every token decodes to at least one character, so the string lies within this many tokens
        return closes and STOP_STRING in self.tokenizer.decode(ids[-len(STOP_STRING) :])


# --- AR: reconstruction, scores, salience ----------------------------------------------------------------------


def ar_input_ids(nla: NLALens, explanation: str) -> list[int]:
    """The AR template filled and tokenised with the tokenizer's own special tokens (spec §3)."""
    prompt = fill(nla.cfg.ar_template, explanation=explanation)
    return list(nla.ar_tokenizer(prompt, add_special_tokens=True).input_ids)


def reconstruct(nla: NLALens, explanations: list[str], chunk_tokens: int | None = None) -> torch.Tensor:
    """W @ (output of block K at the last token), float32 (R, d). Only rows of equal length share a forward:
    padding would change the attention kernel's blocking, so a row's value would depend on its batch."""
    chunk_tokens = chunk_tokens or AR_CHUNK_TOKENS.get(nla.device.type, AR_CHUNK_TOKENS["cpu"])
    by_length: dict[int, list[int]] = {}
    all_ids = [ar_input_ids(nla, e) for e in explanations]
    for r, ids in enumerate(all_ids):
        by_length.setdefault(len(ids), []).append(r)
    out = torch.empty(len(all_ids), nla.cfg.d_model, dtype=torch.float32, device=nla.device)
    for length, rows in sorted(by_length.items()):
        per_chunk = max(1, chunk_tokens // length)
        for i in range(0, len(rows), per_chunk):
            chunk = rows[i : i + per_chunk]
            ids = torch.tensor([all_ids[r] for r in chunk], device=nla.device)
            hidden = forward(nla.ar, embed_tokens(nla.ar, ids), cache=None, start=0, stop_after=nla.cfg.layer)
            out[torch.tensor(chunk, device=nla.device)] = (hidden[:, -1] @ nla.value_head.T).float()
    return out


def score(pred: torch.Tensor, gold: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mse_nrm, cos) per row, float32: both rescaled to norm `scale` first (spec §4)."""
    p = pred.float() / torch.linalg.vector_norm(pred.float(), dim=-1, keepdim=True).clamp_min(1e-12) * scale
    g = gold.float() / torch.linalg.vector_norm(gold.float(), dim=-1, keepdim=True).clamp_min(1e-12) * scale
    mse_nrm = (p - g).pow(2).mean(dim=-1)
    # a dot product per row, as the reference's score takes it: a batched reduction sums in another order
    dots = torch.stack([torch.dot(a, b) for a, b in zip(p, g, strict=True)]) if len(p) else p.new_zeros(0)
    cos = dots / (torch.linalg.vector_norm(p, dim=-1) * torch.linalg.vector_norm(g, dim=-1))
    return mse_nrm, cos


def word_salience(
    nla: NLALens, explanations: list[str], acts: torch.Tensor, base: torch.Tensor
) -> list[list[float]]:
    """Per explanation word: (mse_nrm with the word removed − mse_nrm) / mse_nrm; 0 where mse_nrm is 0."""
    texts, owner = [], []
    for b, explanation in enumerate(explanations):
        words = explanation_words(explanation)
        texts += [without_word(words, j) for j in range(len(words))]
        owner += [b] * len(words)
    if not texts:
        return [[] for _ in explanations]
    ablated, _cos = score(
        reconstruct(nla, texts), acts[torch.tensor(owner, device=acts.device)], nla.cfg.mse_scale
    )
    ablated_l, base_l = ablated.tolist(), base.tolist()
    out: list[list[float]] = [[] for _ in explanations]
    for b, m in zip(owner, ablated_l, strict=True):
        out[b].append((m - base_l[b]) / base_l[b] if base_l[b] > 0 else 0.0)
    return out


FAMILY = Family(
    kind="nla",
    load=load_nla,
    tokenizer=nla_tokenizer,
    files=nla_files,
    width=nla_width,
    identity=nla_spec_identity,
    steps=_steps,
    rows_budget=default_rows_budget,
    batch=_analyze_batch,
    metadata=analysis_metadata,
    score=_score,
)
