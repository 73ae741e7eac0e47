"""The result-cache key: everything a result depends on, and nothing else (no owner, no path)."""

from __future__ import annotations

import functools
import hashlib
import json

from . import ENGINE_VERSION
from .options import options_of
from .types import AnalysisOptions

# The options a result depends on (declared keyed: inference.options).
KEYED = frozenset(o.name for o in options_of(AnalysisOptions) if o.keyed)


def result_key(
    lens_identity: str, token_ids: list[int], positions: list[int], options: AnalysisOptions
) -> str:
    """sha256 of (lens identity, exact token ids, analysed positions, every option, engine version).

    Results are deterministic per (lens, input, options, seed) — see analysis.py — so equal keys mean equal
    rows. `keep_candidates` is part of the key because it changes what a row holds. Callers pass the
    `computation_identity`, so that the device and dtype are part of it too.
    """
    payload = {
        "engine_version": ENGINE_VERSION,
        "lens": lens_identity,
        "token_ids": list(token_ids),
        "positions": list(positions),  # all of them: two selections with the same ends differ
        "options": {k: v for k, v in sorted(options.to_dict().items()) if k in KEYED},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def computation_identity(lens_identity: str, device: str, dtype: str) -> str:
    """What computes a result: the lens' files (`lens_identity`) and where they run — bf16 on CUDA and
    float32 on CPU give different rows, so they are different results."""
    return f"{lens_identity}/{device}/{dtype}"


def device_type(device: str) -> str:
    """The type of a device name ("cuda:1" -> "cuda"): devices of one type compute alike."""
    return str(device).split(":", 1)[0].strip().lower()


@functools.cache
def _cuda_available() -> bool:
    import torch

    # cudaGetDeviceCount only: torch.cuda stays uninitialised (no context, no device memory taken).
    return torch.cuda.is_available()


def placement(device: str = "", dtype: str = "", quant: str = "", lens_quant: str = "") -> tuple[str, str]:
    """(device type, dtype) that `inference.engine.load` picks given LENSWEB_DEVICE=`device`,
    LENSWEB_DTYPE=`dtype` (empty: its defaults), LENSWEB_CPU_QUANT=`quant` (on a CPU the dtype becomes
    "float32+int8") and the lens' own registry `lens_quant` (on any device), worked out without initialising
    CUDA, for a web process to key results by before any worker has loaded the lens.

    Mirrors `pick_device` / `pick_dtype`: CUDA if available, else CPU; bfloat16 on CUDA (`pick_dtype` falls
    back to float32 only on a GPU where torch cannot even emulate bf16, which it can tell only by
    initialising CUDA), float32 elsewhere. A wrong guess costs hits, never correctness: a result is stored
    only when the worker's own device and dtype match the key's (lensweb.cache.services._storable).
    """
    kind = device_type(device) if device else ("cuda" if _cuda_available() else "cpu")
    dtype = dtype or ("bfloat16" if kind == "cuda" else "float32")
    quant = lens_quant or (quant if kind == "cpu" else "")  # as inference.quant.pick_quant
    return kind, f"{dtype}+{quant}" if quant else dtype  # as inference.quant.dtype_name names it
