"""The few places where the engine touches a transformers model's internals (blocks, caches, heads).

Kept in one file so that a new model family, or a transformers release that renames something, is one edit.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from transformers import DynamicCache

KV = list[
    tuple[torch.Tensor, torch.Tensor]
]  # per block: (keys, values), each (batch, kv_heads, seq, head_dim)


def text_config(model):
    return model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config


def num_layers(model) -> int:
    return int(text_config(model).num_hidden_layers)


def hidden_size(model) -> int:
    return int(text_config(model).hidden_size)


def backbone(model):
    """The decoder-only stack (LlamaModel, Qwen2Model, Gemma2Model, …) under the causal-LM head."""
    return model.model if hasattr(model, "model") else model.base_model


def blocks(model) -> torch.nn.ModuleList:
    return backbone(model).layers


def embed_tokens(model, ids: torch.Tensor) -> torch.Tensor:
    return model.get_input_embeddings()(ids)


def lm_head(model, hidden: torch.Tensor) -> torch.Tensor:
    """Raw logits: the output embedding on already-normed states, with no soft-capping (spec §2)."""
    return model.get_output_embeddings()(hidden)


def input_embed_scale(model) -> float:
    """Gemma-3's text model takes inputs_embeds unscaled; its embedding module multiplies by sqrt(d)."""
    if getattr(text_config(model), "model_type", "") in ("gemma3_text", "gemma3"):
        return math.sqrt(hidden_size(model))
    return 1.0


def final_layers(model):
    """(final norm, lm head) for logit-lens style reads."""
    return backbone(model).norm, model.get_output_embeddings()


class _StopForward(Exception):
    """Raised from a hook after block `stop_after` so that no upper block (and no LM head) runs."""

    def __init__(self, hidden: torch.Tensor):
        self.hidden = hidden


@contextlib.contextmanager
def stop_after_block(model, index: int | None) -> Iterator[None]:
    if index is None:
        yield
        return

    def hook(_module, _args, output):
        raise _StopForward(output[0] if isinstance(output, tuple) else output)

    handle = blocks(model)[index].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def patch_slot(model, values: list[torch.Tensor], slot: int) -> Iterator[None]:
    """Before block i (i < len(values)) overwrite the residual stream at sequence index `slot` with values[i].

    Forward pre-hooks, so the model's own layer loop (masks, rotary, caches) stays untouched.
    """
    handles = []
    for i, value in enumerate(values):

        def hook(_module, args, kwargs, value=value):
            if args:
                hidden = args[0].clone()
                hidden[:, slot, :] = value.to(hidden.dtype)
                return (hidden, *args[1:]), kwargs
            hidden = kwargs["hidden_states"].clone()
            hidden[:, slot, :] = value.to(hidden.dtype)
            return args, {**kwargs, "hidden_states": hidden}

        handles.append(blocks(model)[i].register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def make_cache(prefix: KV, batch: int) -> DynamicCache:
    """A fresh cache holding `prefix` for every row; updates concatenate, so the shared prefix is never written."""
    if not prefix or prefix[0][0].shape[2] == 0:
        return DynamicCache()
    return DynamicCache(
        ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in prefix]
    )


def cache_kv(cache: DynamicCache) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers if getattr(layer, "keys", None) is not None]


def forward(
    model,
    embeds: torch.Tensor,
    *,
    cache: DynamicCache | None,
    start: int,
    stop_after: int | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the backbone on `embeds` placed at positions start.. after `cache`.

    Returns the final-normed last hidden states, or, with `stop_after=i`, the residual stream after block i
    (before any norm), without running the blocks above it.
    """
    batch, length = embeds.shape[:2]
    position_ids = torch.arange(start, start + length, device=embeds.device).unsqueeze(0).expand(batch, -1)
    try:
        with stop_after_block(model, stop_after):
            out = backbone(model)(
                inputs_embeds=embeds,
                position_ids=position_ids,
                cache=cache,
                use_cache=cache is not None,
                attention_mask=attention_mask,
            )
    except _StopForward as stop:
        return stop.hidden
    if stop_after is not None:
        raise RuntimeError("the early-exit hook did not fire")
    return out.last_hidden_state


def run_prefix(model, embeds: torch.Tensor, stop_after: int | None) -> KV:
    """K/V of a (length, d) prefix for batch 1, up to block `stop_after` (all blocks if None)."""
    if embeds.shape[0] == 0:
        return []
    cache = DynamicCache()
    forward(model, embeds.unsqueeze(0), cache=cache, start=0, stop_after=stop_after)
    return [(k.detach(), v.detach()) for k, v in cache_kv(cache)]


CancelCheck = Callable[[], None]
