"""The analysis form: field-level checks for the page; the engine's own bounds are applied by services."""

from __future__ import annotations

import json

from django import forms
from django.conf import settings
from django.urls import reverse

from inference.limits import Limits
from inference.options import option_names, options_of
from inference.types import CHAT_TEMPERATURE, AnalysisOptions, GenerationOptions

from .limits import limits as deployment_limits
from .option_fields import form_field, option_fields

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


_AnalysisOptionFields = forms.Form.__class__(
    "_AnalysisOptionFields", (forms.Form,), option_fields(AnalysisOptions)
)


class AnalysisOptionsForm(_AnalysisOptionFields):
    """The analysis options alone, one field per declared option (inference.options): the analysis form's,
    and what "Analyse" on a generation card and "Generate, then analyse" send (the analysis form's option
    fields, included by htmx)."""

    OPTIONS = options_of(AnalysisOptions)

    def __init__(self, *args, limits: Limits | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # the bounds an operator set (LENSWEB_MAX_BEST_OF_K, …), not the defaults the class was built with
        self.fields.update(option_fields(AnalysisOptions, limits or deployment_limits()))

    def options(self) -> dict:
        data = self.cleaned_data
        return {opt.name: data.get(opt.name) for opt in self.OPTIONS}

    @property
    def basic_options(self) -> list:
        return [self[opt.name] for opt in self.OPTIONS if not opt.advanced]

    @property
    def advanced_options(self) -> list:
        return [self[opt.name] for opt in self.OPTIONS if opt.advanced]

    def error_text(self) -> str:
        """The errors in one line, for a place that has no field to show them beside."""
        return "; ".join(
            f"{self.fields[name].label or name.replace('_', ' ')}: {' '.join(errors)}"
            if name in self.fields
            else " ".join(errors)
            for name, errors in self.errors.items()
        )


def analysis_options_from(data) -> tuple[dict | None, str]:
    """(options, "") from the analysis form's option fields in `data`, or (None, what is wrong). Without
    them (a client that sent none) the defaults: an empty dict."""
    if "best_of_k" not in data:
        return {}, ""
    form = AnalysisOptionsForm(data)
    if not form.is_valid():
        return None, f"analysis options: {form.error_text()}"
    return form.options(), ""


# A first visit's text: a value to submit at once (a placeholder would have to be typed over first), long
# enough that most of its rows are past the greyed first positions 0–5 and the summary is a mean.
SAMPLE_TEXT = "The Eiffel Tower is in Paris, the capital of France."
SAMPLE_PROMPT = "Once upon a time"


class AnalysisForm(AnalysisOptionsForm):
    text = forms.CharField(
        initial=SAMPLE_TEXT,
        widget=forms.Textarea(attrs={"rows": 5}),
        strip=False,
        help_text="A text, or a chat as JSON messages.",
    )
    input_format = forms.ChoiceField(
        choices=InputFormat.CHOICES,
        initial=InputFormat.TEXT,
        widget=forms.RadioSelect,
        label="Read the input as",
    )
    lens = forms.ChoiceField(help_text="Which lens reads the model.")

    def __init__(self, *args, lenses=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["text"].max_length = settings.LENSWEB_MAX_TEXT_CHARS
        _lens_choices(self.fields["lens"], lenses)

    def clean(self):
        data = super().clean()
        text, fmt = data.get("text"), data.get("input_format")
        if text is None or fmt is None:
            return data
        if fmt == InputFormat.CHAT:
            chat = parse_chat_input(text)
            if chat is None:
                self.add_error("text", 'this is not a JSON list of {"role": …, "content": …} messages')
                return data
            data["input"] = chat
        elif fmt == InputFormat.WRAP:
            data["input"] = {"messages": [{"role": "user", "content": text}]}
        else:
            data["input"] = {"text": text}
        return data

    # Under "Advanced" (the declared advanced options and the lens): it opens when one of them has an error
    # or, on a refilled form, a value of its own.
    ADVANCED = (*(opt.name for opt in AnalysisOptionsForm.OPTIONS if opt.advanced), "lens")

    @property
    def advanced_open(self) -> bool:
        if any(self[name].errors for name in self.ADVANCED):
            return True
        return not self.is_bound and any(
            name in self.initial and self.initial[name] != self.fields[name].initial for name in self.ADVANCED
        )


def rerun_initial(job) -> dict:
    """The analysis form's values that submit `job` again: its input in the text box (a chat as the JSON
    the box reads; one user turn as wrapped text), its lens and its options (those the form has)."""
    inp = job.input or {}
    messages = inp.get("messages")
    if messages is None:
        initial = {"text": inp.get("text") or "", "input_format": InputFormat.TEXT}
    elif _is_wrapped(inp):
        initial = {"text": messages[0].get("content") or "", "input_format": InputFormat.WRAP}
    else:
        # A list alone means the template's default system prompt; the object form says it is off.
        chat = messages
        if inp.get("default_system_prompt") is False:
            chat = {"messages": messages, "default_system_prompt": False}
        initial = {"text": json.dumps(chat, ensure_ascii=False, indent=1), "input_format": InputFormat.CHAT}
    names = option_names(AnalysisOptions)
    initial.update({name: value for name, value in (job.options or {}).items() if name in names})
    initial["lens"] = job.lens_id
    return initial


def _is_wrapped(inp: dict) -> bool:
    """What "Plain text as one user message" submits: exactly one user turn, with the template's default."""
    messages = inp.get("messages") or []
    return (
        len(messages) == 1
        and messages[0].get("role") == "user"
        and isinstance(messages[0].get("content"), str)
        and inp.get("default_system_prompt", True) is True
    )


def parse_chat_input(text: str) -> dict | None:
    """A chat input from a JSON list of messages, or from the object "Use as input" writes:
    {"messages": [...], "default_system_prompt": false}; None if it is neither."""
    messages = parse_chat(text)
    if messages is not None:
        return {"messages": messages}
    try:
        value = load_json(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(value, dict) or set(value) - {"messages", "default_system_prompt"}:
        return None
    messages = value.get("messages")
    if not (
        isinstance(messages, list) and messages and all(isinstance(m, dict) and "role" in m for m in messages)
    ):
        return None
    chat = {"messages": messages}
    if "default_system_prompt" in value:
        chat["default_system_prompt"] = value["default_system_prompt"]
    return chat


def _lens_choices(field, lenses) -> None:
    choices = [(spec.id, spec.name) for spec in lenses]
    field.choices = choices
    field.initial = next(
        (spec.id for spec in lenses if getattr(spec, "default", False)),
        choices[0][0] if choices else None,
    )


# --- generation ----------------------------------------------------------------------------------------


class PromptMode:
    TEXT = "text"
    CHAT = "chat"
    CHOICES = [(TEXT, "Plain text"), (CHAT, "Chat")]


class Action:
    """What the generation form's buttons ask for (the clicked button's name="action")."""

    GENERATE = "generate"  # "Generate": continuations (or replies to the chat), n of them
    REPLY = "reply"  # "Get reply": one reply, appended to the chat when it is done
    THEN_ANALYSE = "then_analyse"  # "Generate, then analyse": one reply or continuation, then its analysis
    ANALYSE = "analyse"  # "Analyse the chat": the conversation as it stands, no generation
    REFRESH = "refresh"  # another lens chosen: the form again, with that lens' chat facts
    ALL = (GENERATE, REPLY, THEN_ANALYSE, ANALYSE, REFRESH)


ROLES = ("system", "user", "assistant")
NO_CHAT = {
    "has_template": False,
    "system_role": False,
    "default_system_prompt": None,
    "default_system_can_be_off": False,
}


LAST_N_MESSAGES = next(o for o in options_of(AnalysisOptions) if o.name == "last_n_messages")
TEMPERATURE = next(o for o in options_of(GenerationOptions) if o.name == "temperature")
GENERATION_FORM_OPTIONS = (option_names(GenerationOptions) - {"chat_reply"}) | {"last_n_messages"}


def temperature_field(limits: Limits, *, chat: bool) -> forms.Field:
    """The generation form's temperature: empty unless typed, so that the submission takes the default of
    what it asks for (a reply: CHAT_TEMPERATURE; a continuation: the declared one), which the placeholder
    shows for the prompt mode chosen (static/js/app.js swaps it when the mode changes)."""
    low, high = TEMPERATURE.bounds(limits)
    field = form_field(
        TEMPERATURE,
        limits,
        help_text=f"Sampling temperature; 0 is greedy: one answer ({low:g}–{high:g}). Empty: "
        f"{TEMPERATURE.default:g} for a continuation; replies to a chat default to {CHAT_TEMPERATURE:g} "
        "(measured with the demo model: bench/results/chat-temperature.md).",
    )
    field.required, field.initial = False, None
    defaults = {"text": f"{TEMPERATURE.default:g}", "chat": f"{CHAT_TEMPERATURE:g}"}
    field.widget.attrs.update(
        placeholder=defaults["chat" if chat else "text"],
        **{"data-default-text": defaults["text"], "data-default-chat": defaults["chat"]},
    )
    return field


class GenerationForm(forms.Form):
    """Continuations of a text, or a chat's next reply. Fields carry the prefix "gen-" so the analysis
    form's option fields can travel in the same request ("Generate, then analyse")."""

    PREFIX = "gen"

    lens = forms.ChoiceField(help_text="Which lens' model writes.")
    mode = forms.ChoiceField(
        choices=PromptMode.CHOICES, initial=PromptMode.TEXT, widget=forms.RadioSelect, label="Prompt"
    )
    prompt = forms.CharField(
        required=False,
        strip=False,
        initial=SAMPLE_PROMPT,
        widget=forms.Textarea(attrs={"rows": 4}),
        label="Text to continue",
    )
    # Never an input: the chat builder's turns arrive as gen-role / gen-content lists; their errors go here.
    messages = forms.CharField(required=False, widget=forms.HiddenInput)
    default_system_prompt = forms.BooleanField(
        required=False, initial=True, label="Use the template's default system prompt"
    )

    def __init__(self, data=None, *, lenses=(), limits: Limits, chat: dict | None = None, **kwargs):
        kwargs.setdefault("prefix", self.PREFIX)
        super().__init__(data, **kwargs)
        _lens_choices(self.fields["lens"], lenses)
        # Another lens, other chat facts: the form comes again for it (nothing is submitted).
        self.fields["lens"].widget.attrs.update(
            {
                "hx-post": reverse("analyses:generate"),
                "hx-trigger": "change",
                "hx-target": "#generation-form",
                "hx-swap": "outerHTML",
                "hx-vals": '{"action": "refresh"}',
            }
        )
        self.limits = limits
        self.chat = {**NO_CHAT, **(chat or {})}
        self.fields["prompt"].max_length = limits.max_text_chars
        # The declared generation options (chat_reply is the buttons' to say), then the follow-up analysis'
        # last N messages ("Generate, then analyse").
        self.fields.update(option_fields(GenerationOptions, limits, skip=("chat_reply",)))
        self.fields["temperature"] = temperature_field(limits, chat=self["mode"].value() == PromptMode.CHAT)
        self.fields["last_n_messages"] = form_field(
            LAST_N_MESSAGES,
            limits,
            label="Analyse the last N messages",
            help_text="Generate, then analyse: only the last N messages (chats).",
        )

    @property
    def option_fields(self) -> list:
        """The options' fields, in the order declared, the follow-up's last N messages last."""
        return [self[name] for name in self.fields if name in GENERATION_FORM_OPTIONS]

    # --- the chat builder's turns ---

    def _list(self, name: str) -> list[str]:
        key = self.add_prefix(name)
        data = self.data
        return list(data.getlist(key)) if hasattr(data, "getlist") else list(data.get(key) or [])

    def turns(self) -> list[dict]:
        """The builder's turns as submitted (or as given in `initial`), for rendering them again."""
        if self.is_bound:
            roles, contents = self._list("role"), self._list("content")
            turns = [{"role": r, "content": c} for r, c in zip(roles, contents, strict=False)]
        else:
            turns = list(self.initial.get("turns") or [])
        return turns or [{"role": "user", "content": ""}]

    @property
    def system_toggle(self) -> bool:
        """Whether the page offers to turn the template's default system prompt off."""
        return bool(self.chat["default_system_prompt"] and self.chat["default_system_can_be_off"])

    def _clean_turns(self) -> list[dict] | None:
        roles, contents = self._list("role"), self._list("content")
        if len(roles) != len(contents):
            self.add_error("messages", "every turn needs a role and a text")
            return None
        if not roles:
            self.add_error("messages", "add a turn to the chat")
            return None
        if len(roles) > self.limits.max_messages:
            self.add_error(
                "messages", f"a chat has at most {self.limits.max_messages} turns; it has {len(roles)}"
            )
            return None
        bad = next((r for r in roles if r not in ROLES), None)
        if bad is not None:
            self.add_error("messages", f"a turn's role must be system, user or assistant, not {bad[:40]!r}")
            return None
        total = sum(len(c) for c in contents)
        if total > self.limits.max_text_chars:
            self.add_error(
                "messages", f"the chat has {total:,} characters; the limit is {self.limits.max_text_chars:,}"
            )
            return None
        return [{"role": r, "content": c} for r, c in zip(roles, contents, strict=True)]

    def clean(self):
        data = super().clean()
        action = self.action
        if action not in Action.ALL:
            raise forms.ValidationError("that is not something this form can do")
        if action == Action.REPLY and not self.chat["has_template"]:
            self.add_error("mode", "this lens' model has no chat template, so it cannot reply; use Generate")
            return data
        if data.get("mode") == PromptMode.CHAT:
            if not self.chat["has_template"]:
                self.add_error("mode", "this lens' model has no chat template: use plain text")
                return data
            turns = self._clean_turns()
            if turns is None:
                return data
            chat = {"messages": turns}
            # Sent only where the page offered the choice (an unticked box is absent from the POST too).
            if self.system_toggle and not data.get("default_system_prompt"):
                chat["default_system_prompt"] = False
            data["input"] = chat
        elif data.get("mode") == PromptMode.TEXT:
            if not data.get("prompt"):
                self.add_error("prompt", "write a text to continue")
                return data
            data["input"] = {"text": data["prompt"]}
        return data

    @property
    def action(self) -> str:
        return (self.data.get("action") if self.is_bound else None) or Action.GENERATE

    @property
    def is_chat(self) -> bool:
        return self.cleaned_data.get("mode") == PromptMode.CHAT

    def options(self) -> dict:
        """GenerationOptions for the action: "Get reply" and "Generate, then analyse" take one sample; a
        plain text's reply is the reply to it as one user turn."""
        data = self.cleaned_data
        single = self.action in (Action.REPLY, Action.THEN_ANALYSE)
        options = {
            "n": 1 if single else data["n"],
            "max_new_tokens": data["max_new_tokens"],
            "top_p": data["top_p"],
            "seed": data["seed"],
            "chat_reply": self.action == Action.REPLY
            or (self.is_chat and self.action == Action.THEN_ANALYSE),
        }
        # left empty: the default of what is asked for (GenerationOptions.from_dict: a reply's, a continuation's)
        if data["temperature"] is not None:
            options["temperature"] = data["temperature"]
        return options

    def carried(self) -> dict:
        """The submitted values as `initial` for a fresh form (another lens chosen: no errors shown)."""
        initial = {}
        for name, field in self.fields.items():
            if name == "messages":
                continue
            value = field.widget.value_from_datadict(self.data, self.files, self.add_prefix(name))
            if value not in (None, ""):
                initial[name] = value
        initial["turns"] = self.turns()
        return initial
