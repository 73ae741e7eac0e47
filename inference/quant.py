"""Less arithmetic per row on the CPU: LENSWEB_CPU_QUANT=int8 quantises the Linear layers of a loaded lens'
transformer blocks to int8 weights (a scale per output channel) with dynamic int8 activations (torch.ao's
dynamic quantisation), opt-in.
Embeddings, final norms and LM heads stay float32 (tied weights stay tied). On a GPU it does nothing.

Its fidelity cost, measured side by side with float32 by bench/engine.py (bench/results/engine.md), is what
the README quotes; tests/web/test_quant.py holds the tiny lens to the bound stated there. A quantised lens names
its dtype `float32+int8` in its metadata, and the result cache keys it apart from float32.
"""

from __future__ import annotations

import os
import warnings

import torch

from .errors import ModelLoadError
from .models import blocks

QUANTS = ("", "int8")


def pick_quant(device) -> str:
    """The quantisation LENSWEB_CPU_QUANT asks for where it applies (a CPU device), else ""."""
    name = (os.environ.get("LENSWEB_CPU_QUANT") or "").strip().lower()
    if name not in QUANTS:
        raise ModelLoadError(f"LENSWEB_CPU_QUANT is {name!r}; expected int8, or empty for none")
    return name if torch.device(device).type == "cpu" else ""


def quantize(lens, quant: str):
    """The lens with the Linear layers of every model's blocks quantised in place (a model two fields share is
    quantised once); `lens.quant` says so. "" leaves it as it is."""
    if not quant:
        return lens
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as exc:  # torch says it will drop torch.ao.quantization for torchao
        raise ModelLoadError(
            f"LENSWEB_CPU_QUANT={quant} needs torch.ao.quantization, which this torch lacks"
        ) from exc

    seen: set[int] = set()
    for name in vars(lens):
        module = getattr(lens, name)
        if not isinstance(module, torch.nn.Module) or id(module) in seen:
            continue
        seen.add(id(module))
        try:
            stack = blocks(module)
        except AttributeError:  # not a causal LM (a value head, a projection): left as it is
            continue
        with warnings.catch_warnings():  # torch.ao's quantisation is deprecated (for torchao), still here
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # per output channel: a little closer to float32 than one scale a tensor, as fast (measured)
            quantize_dynamic(stack, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
    lens.quant = quant
    return lens


def dtype_name(lens) -> str:
    """The lens' dtype as metadata and cache keys name it: "float32", "bfloat16", "float32+int8"."""
    name = str(lens.dtype).replace("torch.", "")
    return f"{name}+{lens.quant}" if getattr(lens, "quant", "") else name
