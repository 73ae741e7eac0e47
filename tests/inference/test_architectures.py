"""The engine runs other model families end to end (tiny random models and the tests' own tokenizer, built
in-process: no golden files needed)."""

import pytest
import torch

from inference.analysis import analyze
from inference.lens import load_lens
from inference.registry import LensSpec
from inference.types import AnalysisInput, AnalysisOptions
from tests.tinylens import build_tokenizer


def _config(family, vocab_size):
    import transformers

    common = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=vocab_size,
        max_position_embeddings=256,
    )
    if family == "qwen2":
        return transformers.Qwen2Config(**common), transformers.Qwen2ForCausalLM
    if family == "gemma2":
        cfg = transformers.Gemma2Config(
            **common,
            sliding_window=16,
            final_logit_softcapping=30.0,
            attn_logit_softcapping=50.0,
            query_pre_attn_scalar=8,
        )
        return cfg, transformers.Gemma2ForCausalLM
    raise ValueError(family)


def _checkpoint(d, n_layers):
    g = torch.Generator().manual_seed(0)

    def n(*shape, s=0.1):
        return torch.randn(*shape, generator=g) * s

    return {
        "config": {
            "model_name": "unused",
            "layer_l": 1,
            "t_text": 4,
            "trainable_components": {
                "decoder": {"patch_all_layers": True, "per_layer_projections": True},
                "encoder": {
                    "output_layer": 1,
                    "use_projection_layer": True,
                    "add_current_token": True,
                    "special_last_token_vector": True,
                },
            },
        },
        "models": {
            "decoder": {
                "proj_weight": torch.eye(d).repeat(n_layers, 1, 1) + n(n_layers, d, d),
                "proj_bias": n(n_layers, d),
                "prompt_left_emb": n(3, d, s=1),
                "prompt_right_emb": n(4, d, s=1),
            },
            "encoder": {
                "soft_prompt_embeddings": n(5, d, s=1),
                "proj.weight": torch.eye(d) + n(d, d),
                "proj.bias": n(d),
                "special_last_token_vector": n(d),
            },
        },
    }


@pytest.mark.parametrize("family", ["qwen2", "gemma2"])
def test_family_runs_with_patching_kl_and_salience(tmp_path, family):
    tokenizer = build_tokenizer()
    cfg, cls = _config(family, len(tokenizer))
    torch.manual_seed(0)
    base = tmp_path / family
    cls(cfg).save_pretrained(base)
    tokenizer.save_pretrained(base)
    ckpt = tmp_path / "lens.pt"
    torch.save(_checkpoint(32, 3), ckpt)
    lens = load_lens(
        LensSpec(id=family, name=family, checkpoint=str(ckpt), base_model=str(base)), device="cpu"
    )
    assert lens.patched_blocks == 3
    opts = AnalysisOptions(best_of_k=2, temperature=1.0, kl=True, logit_lens=True)
    whole = analyze(lens, AnalysisInput(text="The Eiffel Tower is in Paris."), opts)
    split = analyze(lens, AnalysisInput(text="The Eiffel Tower is in Paris."), opts, rows_budget=2)
    assert [r["explanation_token_ids"] for r in whole.rows] == [
        r["explanation_token_ids"] for r in split.rows
    ]
    for row in whole.rows:
        assert len(row["explanation_token_ids"]) == 4 and row["mse"] > 0 and row["kl"] >= -1e-6
        assert len(row["token_salience"]) == 4
