"""The lens families, keyed by kind, as transformers' Auto classes map a config to a class: each family's
module declares a FAMILY with its loader, its tokenizer, its identity and its batch step, and the rest of
the engine asks this table instead of testing the kind. Torch-free: a family's module is imported by name
on first use only, so this table imports no family and no family another through it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import OptionError

# kind → the module whose FAMILY describes it (the registry's `kind = …` takes these values)
FAMILIES = {"lens": "inference.analysis", "nla": "inference.nla_analysis"}
KINDS = tuple(FAMILIES)


@dataclass(frozen=True)
class Family:
    kind: str
    load: Callable[..., Any]  # (spec, device=None, dtype=None) → the loaded lens (slow: workers only)
    tokenizer: Callable[[Any], Any]  # spec → its tokenizer alone (cheap: bounds checks in web processes)
    files: Callable[[Any], tuple]  # spec → where its files are (paths or names, unchecked): reload on change
    width: Callable[[Any], int]  # spec → the width of the activations it explains, without weights
    identity: Callable[[Any], str]  # spec → what load(spec).identity will be, without weights (cache keys)
    # (lens, the caller's max_new_tokens or None, limits) → explanation tokens per row
    steps: Callable[[Any, int | None, Any], int]
    rows_budget: Callable[[Any, int], int]  # (lens, steps) → rows per batch when the caller names none
    # (lens, sharing.Items: positions of one or more texts, options, sharing.Work) → a Row per item
    batch: Callable[..., list]
    metadata: Callable[..., dict]  # (lens, prepared, options, steps) → the result's metadata
    # (lens, prepared, orig, position, explanation, explanation_token_ids, options, limits) → a Row
    score: Callable[..., Any]


def family(kind: str) -> Family:
    """The family registered under `kind` (a spec's or a loaded lens' `kind`)."""
    if kind not in FAMILIES:
        raise OptionError(f"no lens family {kind!r}; known: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[kind]).FAMILY


def family_of(lens_or_spec) -> Family:
    return family(getattr(lens_or_spec, "kind", "lens"))
