"""Plain value types shared by the engine and its callers (the web app, the CLI, the benches)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import options
from .errors import InputError, OptionError
from .glyphs import glyph_metadata
from .limits import DEFAULT_LIMITS, Limits
from .options import option, short
from .rows import Row

MAX_SEED = 2**31 - 1
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class AnalysisOptions:
    """Every option that changes an analysis' result (and so belongs in a cache key), plus `keep_candidates`.
    Each is declared once here (inference.options); the form, the API, the CLI and imports derive from it."""

    best_of_k: int = option(
        1,
        label="Best of k",
        help="Explanations sampled per position; the best reconstruction wins. Slower as k grows.",
        low=1,
        high="max_best_of_k",
    )
    temperature: float = option(
        1.0,
        label="Temperature",
        help="Sampling temperature; 0 is greedy: the most likely explanation (every candidate the same).",
        low="min_temperature",
        high="max_temperature",
    )
    seed: int = option(
        42, label="Seed", help="Same seed, same explanations.", low=0, high=MAX_SEED, advanced=True
    )
    salience: bool = option(True, label="Salience", help="Colour explanation tokens by importance.")
    kl: bool = option(
        False, label="KL", help="KL divergence; costs one extra forward per position.", advanced=True
    )
    logit_lens: bool = option(
        False, label="Logit lens", help="Top tokens of the logit lens at the lens' layer.", advanced=True
    )
    keep_candidates: bool = option(
        False,
        label="Keep candidates",
        help="Keep all k explanations of each position with their scores, not only the best; "
        "the results page lists them under each row.",
        advanced=True,
    )
    last_n_messages: int | None = option(
        None,
        label="Last N messages",
        help="Chats only: analyse from the start of the N-th last message.",
        low=1,
        high="max_last_n_messages",
        advanced=True,
        keyed=False,  # it only chooses positions, which the key holds
    )

    positions: tuple[int, ...] | None = option(
        None,
        label="Positions",
        help="Analyse only these token positions (negative counts from the end: -1 is the last); "
        "empty: every position.",
        low=lambda limits: -limits.max_tokens,
        high=lambda limits: limits.max_tokens - 1,
        max_items="max_chosen_positions",
        advanced=True,
        keyed=False,  # it only chooses positions, which the key holds resolved
        placeholder="e.g. 3, 7, -1",
    )

    def validate(self, limits: Limits = DEFAULT_LIMITS) -> AnalysisOptions:
        checked = options.validate(self, limits)
        if checked.positions is not None and checked.last_n_messages is not None:
            raise OptionError("positions and last_n_messages both choose positions: give one of them")
        return checked

    def to_dict(self) -> dict[str, Any]:
        return options.as_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisOptions:
        return options.from_dict(cls, data)


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
                f"default_system_prompt must be true or false, got {short(self.default_system_prompt)}"
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
    glyphs: list[tuple[int, int, str]] = field(default_factory=list)  # glyphs split over tokens (.glyphs)

    @property
    def total(self) -> int:
        return len(self.positions)

    def glyph_metadata(self) -> dict:
        """{"glyphs": [[start, end, text], …]} for an analysis' metadata, or {} (inference.glyphs)."""
        return glyph_metadata(self.glyphs)


@dataclass
class BatchUpdate:
    """Handed to `on_batch` after every finished batch: the new rows and progress so far."""

    rows: list[Row]
    done: int
    total: int


@dataclass
class AnalysisResult:
    status: str  # "done" or "cancelled"
    rows: list[Row]
    metadata: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        rows = [row.to_dict() for row in self.rows]
        return {"status": self.status, "metadata": self.metadata, "rows": rows, "timings": self.timings}


# A chat reply's temperature when none is given (a plain continuation keeps GenerationOptions.temperature's):
# the sampled temperature whose replies were most often right with the demo model,
# bench/results/chat-temperature.md (bench/chat_temperature.py).
CHAT_TEMPERATURE = 0.6


@dataclass(frozen=True)
class GenerationOptions:
    n: int = option(
        1, label="Completions", help="How many continuations or replies.", low=1, high="max_samples"
    )
    max_new_tokens: int = option(
        64,
        label="New tokens",
        help="The longest continuation or reply, in tokens.",
        low=1,
        high="max_new_tokens",
    )
    temperature: float = option(
        1.0,
        label="Temperature",
        help="Sampling temperature; 0 is greedy: one answer. Unset, a chat reply (chat_reply, or a chat's "
        f"messages) takes {CHAT_TEMPERATURE:g}, measured with the demo model (bench/results/chat-temperature.md); "
        "a continuation 1.",
        low=0.0,
        high="max_temperature",
    )
    top_p: float = option(1.0, label="Top-p", help="Nucleus sampling.", low=0.01, high=1.0)
    seed: int = option(42, label="Seed", help="Same seed, same text.", low=0, high=MAX_SEED)
    chat_reply: bool = option(
        False,
        label="Chat reply",
        help="One assistant reply that stops at end-of-turn (a plain text is sent as one user turn).",
    )

    def validate(self, limits: Limits = DEFAULT_LIMITS) -> GenerationOptions:
        return options.validate(self, limits)

    def to_dict(self) -> dict[str, Any]:
        return options.as_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, chat: bool = False) -> GenerationOptions:
        """The options `data` names, the rest their defaults; a reply (`chat_reply`, or the input is a chat:
        `chat`) without a temperature takes CHAT_TEMPERATURE. A temperature given always wins."""
        if "temperature" not in data and (chat or data.get("chat_reply") is True):
            data = {**data, "temperature": CHAT_TEMPERATURE}
        return options.from_dict(cls, data)


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
