"""The result-cache key: everything a result depends on, and nothing else (no owner, no path)."""

from __future__ import annotations

import hashlib
import json

from . import ENGINE_VERSION
from .types import AnalysisOptions


def result_key(
    lens_identity: str, token_ids: list[int], positions: list[int], options: AnalysisOptions
) -> str:
    """sha256 of (lens identity, exact token ids, analysed positions, every option, engine version).

    Results are deterministic per (lens, input, options, seed) — see analysis.py — so equal keys mean equal
    rows. `keep_candidates` is part of the key because it changes what a row holds.
    """
    payload = {
        "engine_version": ENGINE_VERSION,
        "lens": lens_identity,
        "token_ids": list(token_ids),
        "positions": [positions[0], positions[-1]] if positions else [],
        "options": {k: v for k, v in sorted(options.to_dict().items()) if k != "last_n_messages"},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
