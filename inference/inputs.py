"""Turning a text or a chat into the token ids to run and the positions to analyse (spec §7)."""

from __future__ import annotations

from .errors import InputError
from .limits import DEFAULT_LIMITS, Limits
from .types import AnalysisInput, AnalysisOptions, PreparedInput


def prepare_input(
    tokenizer, inp: AnalysisInput, options: AnalysisOptions | None = None, limits: Limits = DEFAULT_LIMITS
) -> PreparedInput:
    inp.validate(limits)
    options = options or AnalysisOptions()
    if inp.is_chat:
        rendered = render_chat(tokenizer, list(inp.messages))
        ids = _tokenize(tokenizer, rendered)
        start = 0
        if options.last_n_messages is not None and options.last_n_messages < len(inp.messages):
            first = len(inp.messages) - options.last_n_messages
            start = _message_start(tokenizer, list(inp.messages), first, ids)
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
    return PreparedInput(
        token_ids=ids, tokens=tokens, positions=list(range(start, len(ids))), rendered_text=rendered
    )


def _tokenize(tokenizer, text: str) -> list[int]:
    """Default special tokens; a text or template that already starts with BOS gets no second one."""
    ids = list(tokenizer(text, add_special_tokens=True).input_ids)
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]
    return ids


def render_chat(tokenizer, messages: list[dict[str, str]]) -> str:
    """Apply the chat template: a generation prompt after a user turn, continuation of a final assistant turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("this lens' tokenizer has no chat template; send plain text")
    last = messages[-1]["role"]
    kwargs = {"add_generation_prompt": last == "user", "continue_final_message": last == "assistant"}
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except Exception as exc:  # jinja's TemplateError: e.g. "System role not supported"
        if any(m["role"] == "system" for m in messages) and "system" in str(exc).lower():
            return tokenizer.apply_chat_template(merge_system_into_user(messages), tokenize=False, **kwargs)
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


def _message_start(tokenizer, messages: list[dict[str, str]], index: int, full_ids: list[int]) -> int:
    """Token offset where message `index` begins: the length of the rendered chat before it."""
    if index == 0:
        return 0
    prefix = messages[:index]
    try:
        text = tokenizer.apply_chat_template(prefix, tokenize=False, add_generation_prompt=False)
    except Exception:
        text = tokenizer.apply_chat_template(merge_system_into_user(prefix), tokenize=False)
    ids = _tokenize(tokenizer, text)
    # The prefix render must be a prefix of the full render; otherwise fall back to the longest common prefix.
    n = 0
    for a, b in zip(ids, full_ids, strict=False):
        if a != b:
            break
        n += 1
    return n
