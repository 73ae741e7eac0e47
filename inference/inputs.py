"""Turning a text or a chat into the token ids to run and the positions to analyse (spec §7)."""

from __future__ import annotations

import math

from .chat import chat_template_info
from .errors import InputError, OptionError
from .glyphs import glyph_spans
from .limits import DEFAULT_LIMITS, Limits
from .options import short
from .types import AnalysisInput, AnalysisOptions, PreparedInput


def prepare_input(
    tokenizer, inp: AnalysisInput, options: AnalysisOptions | None = None, limits: Limits = DEFAULT_LIMITS
) -> PreparedInput:
    inp.validate(limits)
    options = options or AnalysisOptions()
    if inp.is_chat:
        messages, default_system = list(inp.messages), inp.default_system_prompt
        rendered = render_chat(tokenizer, messages, default_system_prompt=default_system)
        ids = _tokenize(tokenizer, rendered)
        start = 0
        if options.last_n_messages is not None and options.last_n_messages < len(inp.messages):
            first = len(inp.messages) - options.last_n_messages
            start = _message_start(tokenizer, messages, first, ids, default_system)
    else:
        if options.last_n_messages is not None:
            raise InputError("last_n_messages applies to chats only; send messages, not text")
        rendered = inp.text
        ids = _tokenize(tokenizer, rendered)
        start = 0
    if not ids:
        raise InputError("the input has no tokens")
    if len(ids) > limits.max_tokens:
        raise InputError(f"the input has {len(ids):,} tokens; the limit is {limits.max_tokens:,}")
    tokens = [tokenizer.decode([i]) for i in ids]
    positions = list(range(start, len(ids)))
    if options.positions is not None:  # AnalysisOptions.validate refuses it beside last_n_messages
        positions = chosen_positions(options.positions, len(ids))
    return PreparedInput(
        token_ids=ids,
        tokens=tokens,
        positions=positions,
        rendered_text=rendered,
        glyphs=glyph_spans(tokenizer, ids, tokens),
    )


def chosen_positions(asked, n_tokens: int) -> list[int]:
    """The positions `asked` for (negative ones count from the end), sorted, each once; OptionError naming
    those outside an input of `n_tokens` tokens."""
    if not asked:
        raise OptionError("positions is empty: leave it out to analyse every position")
    outside = [p for p in asked if not -n_tokens <= p < n_tokens]
    if outside:
        listed = ", ".join(str(p) for p in outside[:5]) + (", …" if len(outside) > 5 else "")
        raise OptionError(
            f"positions {listed} {'is' if len(outside) == 1 else 'are'} outside the input, which has "
            f"{n_tokens} tokens (positions 0 to {n_tokens - 1}, or {-n_tokens} to -1)"
        )
    return sorted({p % n_tokens for p in asked})


def _tokenize(tokenizer, text: str) -> list[int]:
    """Default special tokens; a text or template that already starts with BOS gets no second one."""
    ids = list(tokenizer(text, add_special_tokens=True).input_ids)
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]
    return ids


def render_chat(tokenizer, messages: list[dict[str, str]], *, default_system_prompt: bool = True) -> str:
    """Apply the chat template: a generation prompt after a user turn, continuation of a final assistant
    turn (an assistant prefill). `default_system_prompt=False` drops the text a template adds to a chat
    without a system turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("this lens' tokenizer has no chat template; send plain text")
    last = messages[-1]["role"]
    return _apply(
        tokenizer,
        chat_turns(tokenizer, messages, default_system_prompt=default_system_prompt),
        add_generation_prompt=last == "user",
        continue_final_message=last == "assistant",
    )


def chat_turns(
    tokenizer, messages: list[dict[str, str]], *, default_system_prompt: bool = True
) -> list[dict[str, str]]:
    """The turns the template is given: an empty system turn first where the default is turned off, the
    system text merged into the first user turn where the template has no system role."""
    info = chat_template_info(tokenizer)
    turns = [dict(m) for m in messages]
    has_system = any(m["role"] == "system" for m in turns)
    if not default_system_prompt and not has_system and info.default_system_prompt is not None:
        if not info.default_system_can_be_off:
            raise InputError(
                "this lens' chat template adds its default system prompt to every chat; "
                "it cannot be turned off"
            )
        turns.insert(0, {"role": "system", "content": ""})
    elif has_system and not info.system_role:
        turns = merge_system_into_user(turns)
    return turns


def _apply(tokenizer, turns: list[dict[str, str]], **kwargs) -> str:
    try:
        return tokenizer.apply_chat_template(turns, tokenize=False, **kwargs)
    except Exception as exc:  # jinja's TemplateError: e.g. "System role not supported"
        if any(m["role"] == "system" for m in turns):
            try:
                return tokenizer.apply_chat_template(merge_system_into_user(turns), tokenize=False, **kwargs)
            except Exception:
                pass  # the first error says more
        raise InputError(f"the chat template rejected these messages: {exc}") from exc


def merge_system_into_user(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """For templates without a system role: prepend the system text to the first user turn."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}" if system else m["content"]
            break
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


def _message_start(
    tokenizer,
    messages: list[dict[str, str]],
    index: int,
    full_ids: list[int],
    default_system_prompt: bool = True,
) -> int:
    """Token offset where message `index` begins: the length of the rendered chat before it."""
    if index == 0:
        return 0
    prefix = chat_turns(tokenizer, messages[:index], default_system_prompt=default_system_prompt)
    ids = _tokenize(tokenizer, _apply(tokenizer, prefix, add_generation_prompt=False))
    # The prefix render must be a prefix of the full render; otherwise fall back to the longest common prefix.
    return common_prefix(ids, full_ids)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens `a` and `b` share from the start."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def activation_vectors(vectors, width: int, most: int) -> list[list[float]]:
    """Vectors a caller gives, checked: 1 to `most` lists of `width` finite numbers."""
    if not isinstance(vectors, list | tuple) or not 1 <= len(vectors) <= most:
        raise InputError(f"vectors: give 1 to {most} vectors")
    for i, vector in enumerate(vectors):
        if not isinstance(vector, list | tuple) or len(vector) != width:
            got = f"{len(vector)} values" if isinstance(vector, list | tuple) else short(vector)
            raise InputError(f"vector {i} has {got}; this lens' activations have {width}")
        if not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in vector
        ):
            raise InputError(f"vector {i} holds a value that is not a finite number")
    return [[float(x) for x in vector] for vector in vectors]


def explanation_ids(ids, vocab_size: int, limits: Limits) -> list[int]:
    """Token ids a caller gives for an explanation, checked: 1 to limits.max_new_tokens ids of the vocabulary."""
    if not isinstance(ids, list | tuple) or not 1 <= len(ids) <= limits.max_new_tokens:
        raise InputError(f"explanation_token_ids: give 1 to {limits.max_new_tokens} token ids")
    bad = [i for i in ids if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab_size]
    if bad:
        raise InputError(f"explanation_token_ids: {short(bad[0])} is not a token id (0–{vocab_size - 1})")
    return list(ids)


def explanation_text(text, limits: Limits) -> str:
    """An explanation a caller writes, checked: a non-empty string within the input's length bound."""
    if not isinstance(text, str) or not text.strip() or len(text) > limits.max_text_chars:
        raise InputError(f"explanation: give a text of 1 to {limits.max_text_chars} characters")
    return text


def vector_token_ids(token_ids, n: int, vocab_size: int) -> list[int]:
    """The token each of `n` described vectors' positions held, checked: one id of the vocabulary each."""
    if not isinstance(token_ids, list | tuple) or len(token_ids) != n:
        raise InputError(f"token_ids: give one token id per vector ({n})")
    bad = [i for i in token_ids if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab_size]
    if bad:
        raise InputError(f"token_ids: {short(bad[0])} is not a token id (0–{vocab_size - 1})")
    return list(token_ids)


def vector_options(options: AnalysisOptions) -> AnalysisOptions:
    """An analysis' options for explaining vectors: KL and chosen positions need a text, so they are refused
    (the message starts with the option's name)."""
    if options.kl:
        raise OptionError(
            "kl compares the next-token distributions of a text: a vector has none; set kl false"
        )
    if options.positions is not None or options.last_n_messages is not None:
        raise OptionError("positions and last_n_messages choose tokens of a text: describe takes vectors")
    return options
