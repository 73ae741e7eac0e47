"""The Consistency Lens family (inference.driver runs it): a batch of positions → best-of-k explanations,
metrics, salience, KL, logit lens. `analyze` here is the driver's, for callers that know this module.

Deterministic: a row depends only on (lens, input, options, seed, position), never on the batch it ran in.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from . import ENGINE_VERSION
from .decoding import decode
from .driver import analyze  # noqa: F401  (analyze: this module's entry)
from .encoding import cosine_similarity, encode, mse, relative_rmse, salience
from .errors import OptionError
from .families import Family
from .inputs import explanation_ids, explanation_text, prepare_input
from .lens import Lens, lens_files, lens_width, load_lens, load_tokenizer, spec_identity
from .metrics import activation_norms, kl_divergences, logit_lens_top, norm_range
from .models import text_config
from .rows import Row
from .sharing import Items, Work
from .types import AnalysisOptions

DEFAULT_CPU_ROWS = 256


def default_rows_budget(lens: Lens) -> int:
    """Rows (positions × k) per batch: LENSWEB_ROWS_BUDGET, else from free CUDA memory, else a CPU default."""
    env = os.environ.get("LENSWEB_ROWS_BUDGET")
    if env:
        return max(1, int(env))
    if lens.device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(lens.device)
        cfg = lens.model.config
        kv_per_row = 2 * cfg.num_hidden_layers * (lens.t_text + 64) * cfg.hidden_size * 2
        logits_per_row = cfg.vocab_size * 4 * 3
        return int(max(16, min(4096, 0.5 * free // (kv_per_row + logits_per_row))))
    return DEFAULT_CPU_ROWS


def analysis_metadata(
    lens: Lens, prepared, options: AnalysisOptions, steps: int | None = None
) -> dict[str, Any]:
    return {
        **lens.metadata(),
        "options": options.to_dict(),
        "n_tokens": len(prepared.token_ids),
        "positions": list(prepared.positions),
        "token_ids": prepared.token_ids,
        "rendered_text": prepared.rendered_text,
        "salience_null_token_id": lens.null_token_id,
        "logit_lens_final_norm": False,
        "kl": "KL(P||Q): P the original next-token distribution at p, Q with block-l output at p set to Â_p",
        "engine_version": ENGINE_VERSION,
    }


def _analyze_batch(lens, items: Items, options, work: Work) -> list[Row]:
    budget, ticker = work.budget, work.ticker
    k, n = options.best_of_k, len(items)
    acts = items.acts  # (B, d) float32
    current = items.ids if lens.ckpt.add_current_token else None
    uniforms = items.uniforms(k, lens.t_text) if options.temperature > 0 else None

    t0 = time.perf_counter()
    tokens = decode(lens, acts, k, options.temperature, uniforms, ticker.step)  # (B·k, T)
    t1 = time.perf_counter()
    ticker.phase("encoding")
    cur_k = None if current is None else current.repeat_interleave(k)
    recon = encode(lens, tokens, cur_k, chunk=budget)
    all_mse = mse(acts.repeat_interleave(k, dim=0), recon).view(n, k)
    best = all_mse.argmin(dim=1)  # first on ties
    best_mse = all_mse.gather(1, best.unsqueeze(1)).squeeze(1)
    best_tokens = tokens.view(n, k, -1)[torch.arange(n), best]
    best_recon = recon.view(n, k, -1)[torch.arange(n), best]
    scores = {
        "rel": relative_rmse(acts, best_mse),
        "cos": cosine_similarity(acts, best_recon),
        "norm": activation_norms(acts),
    }
    t2 = time.perf_counter()
    sal = None
    if options.salience:
        ticker.phase("salience")
        sal = salience(lens, best_tokens, current, acts, best_mse, chunk=budget)
    t3 = time.perf_counter()
    kl = None
    if options.kl:
        ticker.phase("kl")
        kl = items.kl(lens, best_recon)
    t4 = time.perf_counter()
    ll = logit_lens_top(lens, acts) if options.logit_lens else None
    work.spent(t0, t1, t2, t3, t4)
    return _rows(lens, items, tokens, all_mse, best, best_tokens, best_mse, scores, sal, kl, ll, options)


def _rows(lens, items, tokens, all_mse, best, best_tokens, best_mse, scores, sal, kl, ll, options):
    """One host transfer per batch, then plain Python. `scores`: relative RMSE, cos and ‖A‖ per position."""
    k = options.best_of_k
    best_tokens_l = best_tokens.tolist()
    best_mse_l = best_mse.tolist()
    rel_l, cos_l, norm_l = (scores[key].tolist() for key in ("rel", "cos", "norm"))
    usual = norm_range(lens)
    sal_l = sal.tolist() if sal is not None else None
    kl_l = kl.tolist() if kl is not None else None
    tokens_l = tokens.tolist() if options.keep_candidates else None
    all_mse_l = all_mse.tolist() if options.keep_candidates else None
    decode_one = _token_decoder(lens.tokenizer)
    rows = []
    for i, p in enumerate(items.positions):
        expl_ids = best_tokens_l[i]
        expl_tokens = [decode_one(t) for t in expl_ids]
        row = Row(
            position=p,
            token=items.token(i),
            token_id=items.token_id(i),
            explanation=lens.tokenizer.decode(expl_ids),  # whole decode: multi-byte characters stay intact
            explanation_tokens=expl_tokens,
            explanation_token_ids=expl_ids,
            token_salience=sal_l[i] if sal_l is not None else None,
            mse=best_mse_l[i],
            relative_rmse=rel_l[i],
            **fidelity_fields(cos_l[i], norm_l[i], usual),
            kl=kl_l[i] if kl_l is not None else None,
            logit_lens_top=ll[i] if ll is not None else None,
        )
        if tokens_l is not None:
            row.candidates = [
                {
                    "explanation_token_ids": tokens_l[i * k + j],
                    "explanation": lens.tokenizer.decode(tokens_l[i * k + j]),
                    "mse": all_mse_l[i][j],
                    "chosen": j == int(best[i]),
                }
                for j in range(k)
            ]
        rows.append(row)
    return rows


def fidelity_fields(cos: float, norm: float, usual) -> dict[str, Any]:
    """cos(A, Â) of the kept explanation, ‖A‖, and whether ‖A‖ lies outside the lens' usual range
    (metrics.norm_range): position 0 and attention sinks, whose mse dwarfs every other row's."""
    return {
        "cosine_similarity": cos,
        "activation_norm": norm,
        "activation_norm_outlier": usual.is_outlier(norm),
    }


def _score(lens: Lens, prepared, orig, position: int, explanation, ids, options, limits) -> Row:
    """The encoder on the caller's explanation tokens (its text tokenised as the decoder's output would be)
    at `position`: [S_pre ; E(x) ; S_post ; E(tok_p) + v], as for a decoded row. The lens was trained on
    explanations of T tokens: another length is scored, and the row says how many it had."""
    if ids is None:
        ids = lens.tokenizer.encode(explanation_text(explanation, limits), add_special_tokens=False)
    ids = explanation_ids(ids, text_config(lens.model).vocab_size, limits)
    acts = orig.acts[position : position + 1]
    current = orig.ids[position : position + 1] if lens.ckpt.add_current_token else None
    tokens = torch.tensor([ids], device=lens.device)
    recon = encode(lens, tokens, current, chunk=1)
    err = mse(acts, recon)
    sal = salience(lens, tokens, current, acts, err, chunk=len(ids)) if options.salience else None
    kl = kl_divergences(lens, orig, [position], recon) if options.kl else None
    decode_one = _token_decoder(lens.tokenizer)
    return Row(
        position=position,
        token=prepared.tokens[position],
        token_id=prepared.token_ids[position],
        explanation=lens.tokenizer.decode(ids),
        explanation_tokens=[decode_one(t) for t in ids],
        explanation_token_ids=ids,
        token_salience=sal[0].tolist() if sal is not None else None,
        mse=err.item(),
        relative_rmse=relative_rmse(acts, err).item(),
        **fidelity_fields(
            cosine_similarity(acts, recon).item(), activation_norms(acts).item(), norm_range(lens)
        ),
        kl=kl[0].item() if kl is not None else None,
    )


def _token_decoder(tokenizer):
    cache: dict[int, str] = {}

    def decode_one(token_id: int) -> str:
        if token_id not in cache:
            cache[token_id] = tokenizer.decode([token_id])
        return cache[token_id]

    return decode_one


def _steps(lens: Lens, max_new_tokens: int | None, limits) -> int:
    if max_new_tokens is not None:
        raise OptionError("max_new_tokens is an NLA's: a Consistency Lens' explanations have its T tokens")
    return lens.t_text


FAMILY = Family(
    kind="lens",
    load=load_lens,
    tokenizer=load_tokenizer,
    files=lens_files,
    width=lens_width,
    identity=spec_identity,
    steps=_steps,
    rows_budget=lambda lens, steps: default_rows_budget(lens),
    batch=_analyze_batch,
    metadata=analysis_metadata,
    score=_score,
)

__all__ = ["analyze", "prepare_input", "default_rows_budget"]
