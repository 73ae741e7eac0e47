"""What a tokenizer's chat template does with system turns, found by rendering probe chats (spec §7).

Templates differ: ChatML ones (SmolLM2) add a default system turn when the chat has none, Gemma's raise
"System role not supported", others drop the system text silently. The web shows these facts beside the
chat builder and render_chat acts on them, so they are worked out once per tokenizer and kept.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import asdict, dataclass
from typing import Any

# Probe contents: unlikely in any template's own text, no surrounding whitespace (templates may trim).
_SYSTEM_MARKER = "lens-probe-system-7f3a"
_USER_MARKER = "lens-probe-user-9c1e"


@dataclass(frozen=True)
class ChatTemplateInfo:
    has_template: bool
    system_role: bool  # the template renders a system turn's text itself (neither raises nor drops it)
    default_system_prompt: str | None  # what the template adds when the chat has no system turn
    default_system_can_be_off: bool  # an explicit empty system turn renders without the default

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


NO_TEMPLATE = ChatTemplateInfo(False, False, None, False)

# tokenizer -> (the template the info was worked out from, info); weak, so a dropped tokenizer goes too.
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def chat_template_info(tokenizer) -> ChatTemplateInfo:
    """The template's facts, cached per tokenizer object (recomputed if its chat_template is replaced)."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return NO_TEMPLATE
    try:
        with _cache_lock:
            cached = _cache.get(tokenizer)
    except TypeError:  # neither weakly referable nor hashable: work it out each time
        return _probe(tokenizer)
    if cached is not None and cached[0] == template:
        return cached[1]
    info = _probe(tokenizer)
    with _cache_lock:
        _cache[tokenizer] = (template, info)
    return info


def _render(tokenizer, messages: list[dict[str, str]]) -> str | None:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # jinja's TemplateError (raise_exception), or a template that needs other turns
        return None


def _probe(tokenizer) -> ChatTemplateInfo:
    user = {"role": "user", "content": _USER_MARKER}
    without = _render(tokenizer, [user])
    with_system = _render(tokenizer, [{"role": "system", "content": _SYSTEM_MARKER}, user])
    system_role = with_system is not None and _SYSTEM_MARKER in with_system
    default = None
    if system_role and without is not None:
        # The default is what stands where the marker stood: the same frame around different text.
        at = with_system.index(_SYSTEM_MARKER)
        before, after = with_system[:at], with_system[at + len(_SYSTEM_MARKER) :]
        if without.startswith(before) and without.endswith(after) and len(without) > len(before) + len(after):
            text = without[len(before) : len(without) - len(after)]
            default = text if text.strip() else None
    can_be_off = system_role
    if system_role and default is not None:
        emptied = _render(tokenizer, [{"role": "system", "content": ""}, user])
        can_be_off = emptied is not None and default not in emptied
    return ChatTemplateInfo(
        has_template=True,
        system_role=system_role,
        default_system_prompt=default,
        default_system_can_be_off=can_be_off,
    )
