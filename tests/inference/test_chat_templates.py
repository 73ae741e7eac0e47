"""Chat templates with and without a system role: what chat_template_info finds, the default system prompt
turned off, a system turn merged where the template has none, and analysis inputs of each kind."""

import dataclasses

import pytest

from inference.analysis import analyze
from inference.chat import chat_template_info
from inference.errors import InputError, ModelLoadError
from inference.inputs import prepare_input, render_chat
from inference.registry import LensSpec
from inference.types import AnalysisInput, AnalysisOptions
from tests import tinylens
from tests.tinylens import (
    NO_SYSTEM_CHAT_TEMPLATE,
    PLAIN_CHAT_TEMPLATE,
    SYSTEM_DROPPING_CHAT_TEMPLATE,
    tokenizer_with_chat_template,
)

from .golden import cached_lens

TINY_DEFAULT = "You are a tiny test model."  # what tests/tinylens.py's CHAT_TEMPLATE adds
SYSTEM = {"role": "system", "content": "You are terse."}
USER = {"role": "user", "content": "Is the Eiffel Tower in Paris?"}
PREFILL = {"role": "assistant", "content": "Yes, it"}
TWO_TURNS = [USER, {"role": "assistant", "content": "Yes, it is."}]


@pytest.fixture(scope="module")
def lens():
    """The suite's in-process tiny lens (tests/tinylens.py), its own ChatML template with a default."""
    from tests.conftest import tiny_lens

    built = tiny_lens()
    return cached_lens(
        LensSpec(id="tiny", name="tiny", checkpoint=str(built.checkpoint), base_model=str(built.base))
    )


@pytest.fixture(scope="module")
def no_system_lens(lens):
    return dataclasses.replace(
        lens, tokenizer=tokenizer_with_chat_template(lens.tokenizer, NO_SYSTEM_CHAT_TEMPLATE)
    )


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """SmolLM2's own tokenizer and template, rebuilt from the demo GGUF (seconds: no model is loaded)."""
    from inference.demo_base import build_tokenizer_from_gguf, find_gguf

    try:
        return build_tokenizer_from_gguf(find_gguf())
    except ModelLoadError as exc:
        pytest.skip(f"the SmolLM2 demo files are unavailable: {exc}")


@pytest.mark.parametrize(
    "template, system_role, default, can_be_off",
    [
        (tinylens.CHAT_TEMPLATE, True, TINY_DEFAULT, True),
        (PLAIN_CHAT_TEMPLATE, True, None, True),
        (NO_SYSTEM_CHAT_TEMPLATE, False, None, False),
        (SYSTEM_DROPPING_CHAT_TEMPLATE, False, None, False),
    ],
    ids=["chatml-default", "chatml-plain", "raises-on-system", "drops-system"],
)
def test_template_info_per_template_shape(lens, template, system_role, default, can_be_off):
    info = chat_template_info(tokenizer_with_chat_template(lens.tokenizer, template))
    assert info.has_template
    assert (info.system_role, info.default_system_prompt, info.default_system_can_be_off) == (
        system_role,
        default,
        can_be_off,
    )
    assert info.to_dict() == {
        "has_template": True,
        "system_role": system_role,
        "default_system_prompt": default,
        "default_system_can_be_off": can_be_off,
    }


def test_a_tokenizer_without_a_template(lens):
    bare = tokenizer_with_chat_template(lens.tokenizer, None)
    info = chat_template_info(bare)
    assert not info.has_template and not info.system_role and info.default_system_prompt is None
    with pytest.raises(InputError, match="no chat template"):
        render_chat(bare, [USER])


def test_info_is_cached_per_tokenizer_and_follows_a_replaced_template(lens):
    tok = tokenizer_with_chat_template(lens.tokenizer, tinylens.CHAT_TEMPLATE)
    first = chat_template_info(tok)
    assert chat_template_info(tok) is first
    tok.chat_template = NO_SYSTEM_CHAT_TEMPLATE
    assert not chat_template_info(tok).system_role


def test_smollm2_default_system_prompt_is_found_and_can_be_turned_off(smollm2_tokenizer):
    info = chat_template_info(smollm2_tokenizer)
    assert info.system_role and info.default_system_can_be_off
    assert (
        info.default_system_prompt == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    )
    on = prepare_input(smollm2_tokenizer, AnalysisInput(messages=TWO_TURNS))
    off = prepare_input(smollm2_tokenizer, AnalysisInput(messages=TWO_TURNS, default_system_prompt=False))
    assert info.default_system_prompt in on.rendered_text
    assert info.default_system_prompt not in off.rendered_text
    # the default is most of a short chat's cost
    assert len(off.token_ids) < len(on.token_ids) - 10


def test_default_system_prompt_off_drops_the_default(lens):
    tok = lens.tokenizer
    on = prepare_input(tok, AnalysisInput(messages=TWO_TURNS))
    off = prepare_input(tok, AnalysisInput(messages=TWO_TURNS, default_system_prompt=False))
    assert TINY_DEFAULT in on.rendered_text and TINY_DEFAULT not in off.rendered_text
    assert len(off.token_ids) < len(on.token_ids)
    assert off.positions != on.positions and off.positions == list(range(len(off.token_ids)))
    # the chat itself is rendered alike: the two differ only in the system turn
    assert on.rendered_text.endswith(off.rendered_text.split("<|im_end|>\n", 1)[1])
    # last_n_messages counts from the chat's own turns either way
    off_input = AnalysisInput(messages=TWO_TURNS, default_system_prompt=False)
    last = prepare_input(tok, off_input, AnalysisOptions(last_n_messages=1))
    assert last.token_ids == off.token_ids
    assert "".join(last.tokens[last.positions[0] :]).startswith("<|im_start|>assistant\nYes")


def test_default_system_prompt_off_changes_nothing_where_there_is_no_default(lens):
    chatml_with_system = prepare_input(lens.tokenizer, AnalysisInput(messages=[SYSTEM, USER]))
    assert (
        chatml_with_system.token_ids
        == prepare_input(
            lens.tokenizer, AnalysisInput(messages=[SYSTEM, USER], default_system_prompt=False)
        ).token_ids
    )
    for template in (PLAIN_CHAT_TEMPLATE, NO_SYSTEM_CHAT_TEMPLATE):
        tok = tokenizer_with_chat_template(lens.tokenizer, template)
        on = prepare_input(tok, AnalysisInput(messages=TWO_TURNS))
        off = prepare_input(tok, AnalysisInput(messages=TWO_TURNS, default_system_prompt=False))
        assert on.token_ids == off.token_ids


def test_a_default_that_cannot_be_turned_off_is_refused(lens):
    # a template that adds its default over an empty system turn too (it skips empty turns)
    stubborn = (
        "{% if not messages[0]['content'] or messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\n" + TINY_DEFAULT + "<|im_end|>\\n' }}{% endif %}"
        "{% for message in messages %}{% if message['content'] %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    tok = tokenizer_with_chat_template(lens.tokenizer, stubborn)
    info = chat_template_info(tok)
    assert (
        info.system_role and info.default_system_prompt == TINY_DEFAULT and not info.default_system_can_be_off
    )
    with pytest.raises(InputError, match="cannot be turned off"):
        prepare_input(tok, AnalysisInput(messages=TWO_TURNS, default_system_prompt=False))


@pytest.mark.parametrize("template", [NO_SYSTEM_CHAT_TEMPLATE, SYSTEM_DROPPING_CHAT_TEMPLATE])
def test_a_system_turn_merges_into_the_first_user_turn_without_a_system_role(lens, template):
    tok = tokenizer_with_chat_template(lens.tokenizer, template)
    rendered = render_chat(tok, [SYSTEM, USER])
    assert rendered.startswith(f"<|im_start|>user\n{SYSTEM['content']}\n\n{USER['content']}<|im_end|>")
    assert "system" not in rendered
    prepared = prepare_input(
        tok, AnalysisInput(messages=[SYSTEM, *TWO_TURNS]), AnalysisOptions(last_n_messages=1)
    )
    assert "".join(prepared.tokens[prepared.positions[0] :]).startswith(rendered_reply_start(template))


def rendered_reply_start(template: str) -> str:
    return "<|im_start|>model\nYes" if template == NO_SYSTEM_CHAT_TEMPLATE else "<|im_start|>assistant\nYes"


def test_input_dicts_keep_their_old_shape_unless_the_default_is_off():
    chat = AnalysisInput(messages=TWO_TURNS)
    assert chat.to_dict() == {"messages": TWO_TURNS}
    assert AnalysisInput(text="hi").to_dict() == {"text": "hi"}
    off = AnalysisInput(messages=TWO_TURNS, default_system_prompt=False)
    assert off.to_dict() == {"messages": TWO_TURNS, "default_system_prompt": False}
    assert AnalysisInput.from_dict(off.to_dict()) == off
    assert AnalysisInput.from_dict(chat.to_dict()) == chat
    off.validate()
    with pytest.raises(InputError, match="chats only"):
        AnalysisInput(text="hi", default_system_prompt=False).validate()
    with pytest.raises(InputError, match="true or false"):
        AnalysisInput.from_dict({"messages": TWO_TURNS, "default_system_prompt": "no"}).validate()


@pytest.mark.parametrize("template", [tinylens.CHAT_TEMPLATE, NO_SYSTEM_CHAT_TEMPLATE])
def test_an_assistant_prefill_is_continued_by_each_template(lens, template):
    tok = tokenizer_with_chat_template(lens.tokenizer, template)
    prepared = prepare_input(tok, AnalysisInput(messages=[SYSTEM, USER, PREFILL]))
    assert prepared.rendered_text.endswith(PREFILL["content"])
    assert SYSTEM["content"] in prepared.rendered_text


def test_a_chat_analyses_on_a_template_without_a_system_role(no_system_lens):
    inp = AnalysisInput(messages=[SYSTEM, USER, PREFILL])
    result = analyze(no_system_lens, inp, AnalysisOptions(salience=False, last_n_messages=1))
    prepared = prepare_input(no_system_lens.tokenizer, inp, AnalysisOptions(last_n_messages=1))
    assert result.status == "done"
    assert [r["position"] for r in result.rows] == prepared.positions
    assert [r["token_id"] for r in result.rows] == [prepared.token_ids[p] for p in prepared.positions]
