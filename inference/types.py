"""Plain value types shared by the engine and its callers (the web app, the CLI, the benches)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import InputError, OptionError
from .limits import DEFAULT_LIMITS, Limits

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class AnalysisOptions:
    """Every option that changes an analysis' result (and so belongs in a cache key), plus `keep_candidates`."""

    best_of_k: int = 1
    temperature: float = 1.0
    seed: int = 42
    salience: bool = True
    kl: bool = False
    logit_lens: bool = False
    keep_candidates: bool = False
    last_n_messages: int | None = None

    def validate(self, limits: Limits = DEFAULT_LIMITS) -> AnalysisOptions:
        _check_int("best_of_k", self.best_of_k, 1, limits.max_best_of_k)
        _check_float("temperature", self.temperature, limits.min_temperature, limits.max_temperature)
        _check_int("seed", self.seed, 0, 2**31 - 1)
        for name in ("salience", "kl", "logit_lens", "keep_candidates"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.last_n_messages is not None:
            _check_int("last_n_messages", self.last_n_messages, 1, limits.max_last_n_messages)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisOptions:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise OptionError(f"unknown option(s): {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass(frozen=True)
class AnalysisInput:
    """A plain text, or a chat as a list of {role, content} messages (exactly one of the two).
    `default_system_prompt=False` (chats only) drops the system text a template adds to a chat that has no
    system turn (SmolLM2's doubles the cost of a short chat)."""

    text: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    default_system_prompt: bool = True

    def __post_init__(self):
        if self.messages is not None and not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(self.messages))

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def validate(self, limits: Limits = DEFAULT_LIMITS) -> AnalysisInput:
        if (self.text is None) == (self.messages is None):
            raise InputError("give either a text or a list of chat messages, not both or neither")
        if not isinstance(self.default_system_prompt, bool):
            raise InputError(
                f"default_system_prompt must be true or false, got {_short(self.default_system_prompt)}"
            )
        if not self.default_system_prompt and self.messages is None:
            raise InputError("default_system_prompt applies to chats only; send messages, not text")
        if self.text is not None:
            if not isinstance(self.text, str):
                raise InputError("text must be a string")
            if not self.text.strip():
                raise InputError("the text is empty")
            if len(self.text) > limits.max_text_chars:
                raise InputError(
                    f"the text has {len(self.text):,} characters; the limit is {limits.max_text_chars:,}"
                )
            _check_characters(self.text, "the text")
            return self
        if not self.messages:
            raise InputError("the chat has no messages")
        if len(self.messages) > limits.max_messages:
            raise InputError(
                f"the chat has {len(self.messages)} messages; the limit is {limits.max_messages}"
            )
        total = 0
        for i, message in enumerate(self.messages):
            if not isinstance(message, dict) or set(message) - {"role", "content"}:
                raise InputError(f"message {i + 1} must be an object with 'role' and 'content' only")
            role, content = message.get("role"), message.get("content")
            if role not in ROLES:
                raise InputError(f"message {i + 1} has role {role!r}; use one of {', '.join(ROLES)}")
            if not isinstance(content, str):
                raise InputError(f"message {i + 1} needs a string 'content'")
            total += len(content)
        if total == 0:
            raise InputError("every chat message is empty")
        if total > limits.max_text_chars:
            raise InputError(f"the chat has {total:,} characters; the limit is {limits.max_text_chars:,}")
        for i, message in enumerate(self.messages):
            _check_characters(message["content"], f"message {i + 1}")
        return self

    def to_dict(self) -> dict[str, Any]:
        # the flag only when off: stored inputs and their comparisons from before it stay as they were
        extra = (
            {}
            if self.default_system_prompt is True
            else {"default_system_prompt": self.default_system_prompt}
        )
        if self.messages is not None:
            return {"messages": [dict(m) for m in self.messages], **extra}
        return {"text": self.text, **extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisInput:
        default_system = data.get("default_system_prompt", True)
        if "messages" in data and data["messages"] is not None:
            msgs = data["messages"]
            if not isinstance(msgs, list):
                raise InputError("messages must be a list of {role, content} objects")
            return cls(messages=tuple(msgs), default_system_prompt=default_system)
        return cls(text=data.get("text"), default_system_prompt=default_system)


@dataclass
class PreparedInput:
    """Token ids to run and which positions to analyse (all, or from the start of the N-th last turn)."""

    token_ids: list[int]
    tokens: list[str]
    positions: list[int]
    rendered_text: str

    @property
    def total(self) -> int:
        return len(self.positions)


@dataclass
class BatchUpdate:
    """Handed to `on_batch` after every finished batch: the new rows and progress so far."""

    rows: list[dict[str, Any]]
    done: int
    total: int


@dataclass
class AnalysisResult:
    status: str  # "done" or "cancelled"
    rows: list[dict[str, Any]]
    metadata: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "metadata": self.metadata, "rows": self.rows, "timings": self.timings}


@dataclass(frozen=True)
class GenerationOptions:
    n: int = 1
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 42
    chat_reply: bool = False  # one assistant reply that stops at end-of-turn

    def validate(self, limits: Limits = DEFAULT_LIMITS) -> GenerationOptions:
        _check_int("n", self.n, 1, limits.max_samples)
        _check_int("max_new_tokens", self.max_new_tokens, 1, limits.max_new_tokens)
        _check_float("temperature", self.temperature, 0.0, limits.max_temperature)
        _check_float("top_p", self.top_p, 0.01, 1.0)
        _check_int("seed", self.seed, 0, 2**31 - 1)
        if not isinstance(self.chat_reply, bool):
            raise OptionError(f"chat_reply must be true or false, got {self.chat_reply!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ShouldCancel = Callable[[], bool]
OnBatch = Callable[[BatchUpdate], None]


def public_name(location: str | None) -> str | None:
    """What users may see of a model's or a checkpoint's location: a file or folder's own name, never the
    server's path to it (a hub name such as "HuggingFaceTB/SmolLM2-135M" stays as it is)."""
    if not location:
        return location
    text = str(location)
    if text.startswith(("/", "~", ".", "\\")) or (len(text) > 1 and text[1] == ":"):
        return text.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return text


# The metadata keys that name a model's or a checkpoint's location (lens.py and nla.py fill them).
LOCATION_KEYS = ("checkpoint", "base_model", "donor_model", "av", "ar")


def public_metadata(metadata: dict) -> dict:
    """`metadata` with every location shown by its public name: for results stored before names were
    public (the migrations that rewrite them)."""
    return {
        key: public_name(value) if key in LOCATION_KEYS and isinstance(value, str) else value
        for key, value in metadata.items()
    }


def _check_characters(text: str, what: str) -> None:
    """Text every encoder and database can hold. Valid JSON can carry a lone UTF-16 surrogate ("\\ud800"),
    which no UTF-8 encoder takes; PostgreSQL's text and jsonb refuse NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{what} has an unpaired surrogate (U+{ord(text[exc.start]):04X}) at character {exc.start + 1}, "
            "which is not a character; send the text as UTF-8"
        ) from None
    if "\x00" in text:
        raise InputError(
            f"{what} has a NUL character (U+0000) at character {text.index(chr(0)) + 1}; remove it"
        )


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"{name} must be a whole number, got {_short(value)}")
    if not lo <= value <= hi:
        raise OptionError(f"{name} must be between {lo} and {hi}, got {_short(value)}")


def _finite(value: int | float) -> bool:
    return isinstance(value, int) or math.isfinite(value)


def _short(value: Any, limit: int = 40) -> str:
    """repr for an error message, cut: a value may be thousands of digits long."""
    text = (
        repr(value)
        if not isinstance(value, int) or abs(value) < 10**limit
        else f"a {len(str(value))}-digit number"
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_float(name: str, value: Any, lo: float, hi: float) -> None:
    # an int is finite (and may be too large for math.isfinite, which converts it to a float)
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        raise OptionError(f"{name} must be a number, got {_short(value)}")
    if not lo <= value <= hi:
        raise OptionError(f"{name} must be between {lo} and {hi}, got {_short(value)}")
