"""The bounds every entry point applies. One place, so the form, the API and the socket agree."""

import os
from dataclasses import dataclass


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


@dataclass(frozen=True)
class Limits:
    max_text_chars: int = 20_000
    max_tokens: int = 1_024
    max_messages: int = 64
    max_best_of_k: int = 64
    min_temperature: float = 0.0  # 0 is greedy decoding: the most likely explanation, whatever the seed
    max_temperature: float = 2.0
    max_last_n_messages: int = 64
    max_new_tokens: int = 512
    max_samples: int = 16
    max_chosen_positions: int = 256  # `positions`: at most this many

    @classmethod
    def from_env(cls) -> "Limits":
        """Operators tune the text and token bounds with LENSWEB_MAX_TEXT_CHARS / LENSWEB_MAX_TOKENS."""
        return cls(
            max_text_chars=_env_int("LENSWEB_MAX_TEXT_CHARS", cls.max_text_chars),
            max_tokens=_env_int("LENSWEB_MAX_TOKENS", cls.max_tokens),
        )


DEFAULT_LIMITS = Limits()
