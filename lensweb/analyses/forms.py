"""The analysis form: field-level checks for the page; the engine's own bounds are applied by services."""

from __future__ import annotations

import json

from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator

from inference.types import AnalysisOptions

DEFAULTS = AnalysisOptions()
# A submission nests three deep ({"messages": [{"role": …}]}); anything much deeper is refused before use:
# a deep value's repr or re-encoding would exhaust the recursion limit (a 500) wherever it goes next.
MAX_JSON_DEPTH = 10


class InputFormat:
    TEXT = "text"
    CHAT = "chat"
    WRAP = "wrap"
    CHOICES = [
        (TEXT, "Plain text"),
        (CHAT, "Chat messages (JSON list of {role, content})"),
        (WRAP, "Plain text as one user message"),
    ]


class JSONTooDeep(ValueError):
    pass


def too_deep(value, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether lists and objects nest more than `limit` deep (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def load_json(raw, limit: int = MAX_JSON_DEPTH):
    """json.loads, refusing values nested more than `limit` deep with JSONTooDeep (a ValueError), also those
    too deep for the parser itself (which raises RecursionError)."""
    too_deep_error = JSONTooDeep(f"it nests lists or objects more than {limit} deep")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise too_deep_error from None
    if too_deep(value, limit):
        raise too_deep_error
    return value


def parse_chat(text: str) -> list | None:
    """The messages if `text` is a JSON list of {role, content} objects, else None."""
    try:
        value = load_json(text)
    except (TypeError, ValueError):
        return None
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        return value
    return None


class AnalysisForm(forms.Form):
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5, "placeholder": "The capital of France is Paris."}),
        strip=False,
        help_text="A text, or a chat as JSON messages.",
    )
    input_format = forms.ChoiceField(
        choices=InputFormat.CHOICES,
        initial=InputFormat.TEXT,
        widget=forms.RadioSelect,
        label="Read the input as",
    )
    best_of_k = forms.IntegerField(
        label="Best of k",
        min_value=1,
        initial=DEFAULTS.best_of_k,
        help_text="Explanations sampled per position; the best reconstruction wins. Slower as k grows.",
    )
    temperature = forms.FloatField(
        min_value=0.01,
        max_value=2.0,
        initial=DEFAULTS.temperature,
        help_text="Sampling temperature (0.01–2.0).",
    )
    seed = forms.IntegerField(
        min_value=0, max_value=2**31 - 1, initial=DEFAULTS.seed, help_text="Same seed, same explanations."
    )
    salience = forms.BooleanField(
        required=False, initial=DEFAULTS.salience, help_text="Colour explanation tokens by importance."
    )
    kl = forms.BooleanField(
        required=False,
        initial=DEFAULTS.kl,
        label="KL",
        help_text="KL divergence; costs one extra forward per position.",
    )
    logit_lens = forms.BooleanField(
        required=False,
        initial=DEFAULTS.logit_lens,
        help_text="Top tokens of the logit lens at the lens' layer.",
    )
    last_n_messages = forms.IntegerField(
        required=False,
        min_value=1,
        label="Last N messages",
        help_text="Chats only: analyse the last N messages.",
    )
    lens = forms.ChoiceField(help_text="Which lens reads the model.")

    def __init__(self, *args, lenses=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["best_of_k"].widget.attrs["max"] = settings.LENSWEB_MAX_BEST_OF_K
        self.fields["best_of_k"].help_text += f" (1–{settings.LENSWEB_MAX_BEST_OF_K})"
        self.fields["best_of_k"].validators.append(MaxValueValidator(settings.LENSWEB_MAX_BEST_OF_K))
        self.fields["text"].max_length = settings.LENSWEB_MAX_TEXT_CHARS
        self.fields["temperature"].widget.attrs["step"] = "0.01"
        choices = [(spec.id, spec.name) for spec in lenses]
        self.fields["lens"].choices = choices
        default = next(
            (spec.id for spec in lenses if getattr(spec, "default", False)),
            choices[0][0] if choices else None,
        )
        self.fields["lens"].initial = default

    def clean(self):
        data = super().clean()
        text, fmt = data.get("text"), data.get("input_format")
        if text is None or fmt is None:
            return data
        if fmt == InputFormat.CHAT:
            messages = parse_chat(text)
            if messages is None:
                self.add_error("text", 'this is not a JSON list of {"role": …, "content": …} messages')
                return data
            data["input"] = {"messages": messages}
        elif fmt == InputFormat.WRAP:
            data["input"] = {"messages": [{"role": "user", "content": text}]}
        else:
            data["input"] = {"text": text}
        return data

    def options(self) -> dict:
        data = self.cleaned_data
        return {
            name: data.get(name)
            for name in (
                "best_of_k",
                "temperature",
                "seed",
                "salience",
                "kl",
                "logit_lens",
                "last_n_messages",
            )
        }
