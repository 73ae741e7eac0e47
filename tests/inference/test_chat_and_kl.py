"""Chat templating, BOS handling, last_n_messages; KL against a direct computation."""

import pytest
import torch

from inference.analysis import analyze
from inference.errors import InputError
from inference.inputs import merge_system_into_user, prepare_input
from inference.models import blocks
from inference.types import AnalysisInput, AnalysisOptions

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Is the Eiffel Tower in Paris?"},
    {"role": "assistant", "content": "Yes, it is."},
    {"role": "user", "content": "How tall is it?"},
]


def test_chat_uses_the_template_with_a_generation_prompt(tiny_lens):
    tok = tiny_lens.tokenizer
    prepared = prepare_input(tok, AnalysisInput(messages=CHAT[:2]))
    assert prepared.rendered_text.endswith("<|im_start|>assistant\n")
    assert prepared.token_ids == tok(prepared.rendered_text).input_ids
    assert prepared.positions == list(range(len(prepared.token_ids)))


def test_final_assistant_message_is_continued_not_closed(tiny_lens):
    prepared = prepare_input(tiny_lens.tokenizer, AnalysisInput(messages=CHAT[:3]))
    assert prepared.rendered_text.rstrip().endswith("Yes, it is.")


def test_last_n_messages_starts_at_the_nth_last_turn(tiny_lens):
    tok = tiny_lens.tokenizer
    full = prepare_input(tok, AnalysisInput(messages=CHAT))
    last = prepare_input(tok, AnalysisInput(messages=CHAT), AnalysisOptions(last_n_messages=1))
    start = last.positions[0]
    assert last.token_ids == full.token_ids
    assert "".join(last.tokens[start:]).startswith("<|im_start|>user\nHow tall")
    assert "".join(last.tokens[:start]).rstrip().endswith("Yes, it is.<|im_end|>")
    two = prepare_input(tok, AnalysisInput(messages=CHAT), AnalysisOptions(last_n_messages=2))
    assert "".join(two.tokens[two.positions[0] :]).startswith("<|im_start|>assistant\nYes")
    with pytest.raises(InputError, match="chats only"):
        prepare_input(tok, AnalysisInput(text="hi"), AnalysisOptions(last_n_messages=1))


def test_a_template_that_starts_with_bos_gets_no_second_bos(tiny_lens):
    tok = tiny_lens.tokenizer
    bos = tok.bos_token_id
    prepared = prepare_input(tok, AnalysisInput(text=f"{tok.bos_token}{tok.bos_token}user\nHi"))
    assert prepared.token_ids[0] == bos and prepared.token_ids[1] != bos
    # a repeated non-BOS first token is kept (the research code's generic test dropped it)
    assert prepare_input(tok, AnalysisInput(text="\n\nHi")).token_ids[:1] == tok("\n\nHi").input_ids[:1]


def test_system_turn_merges_into_the_first_user_turn_when_unsupported():
    merged = merge_system_into_user(CHAT[:2])
    assert merged == [{"role": "user", "content": "You are terse.\n\nIs the Eiffel Tower in Paris?"}]


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "no messages"),
        ([{"role": "robot", "content": "x"}], "role"),
        ([{"role": "user", "content": 3}], "content"),
        ([{"role": "user", "content": "x", "extra": 1}], "role' and 'content' only"),
    ],
)
def test_malformed_chats_are_refused(tiny_lens, messages, match):
    with pytest.raises(InputError, match=match):
        prepare_input(tiny_lens.tokenizer, AnalysisInput(messages=messages))


def test_kl_matches_a_direct_computation(tiny_lens):
    """KL(P||Q) with Q from a plain full forward whose block-l output at p is replaced by Â_p."""
    text = "The Eiffel Tower is in Paris."
    result = analyze(
        tiny_lens, AnalysisInput(text=text), AnalysisOptions(temperature=1.0, kl=True, keep_candidates=True)
    )
    from inference.encoding import encode

    model, lens = tiny_lens.orig, tiny_lens
    ids = torch.tensor([lens.tokenizer(text).input_ids])
    with torch.inference_mode():
        p_logits = model(ids).logits[0].float()
        for row in result.rows:
            p = row["position"]
            cur = ids[0, p : p + 1] if lens.ckpt.add_current_token else None
            recon = encode(lens, torch.tensor([row["explanation_token_ids"]]), cur, chunk=8)[0]

            def replace(_m, _a, out, p=p, recon=recon):
                out = out.clone()
                out[0, p] = recon
                return out

            handle = blocks(model)[lens.layer].register_forward_hook(replace)
            try:
                q_logits = model(ids).logits[0, p].float()
            finally:
                handle.remove()
            log_p = torch.log_softmax(p_logits[p], -1)
            log_q = torch.log_softmax(q_logits, -1)
            direct = float((log_p.exp() * (log_p - log_q)).sum())
            assert row["kl"] == pytest.approx(direct, rel=1e-3, abs=1e-4)
            assert row["kl"] >= 0
