"""8-bit weights, opt-in. On a CPU (LENSWEB_CPU_QUANT=int8 for every lens, or a lens' `quant = "int8"` in the
registry), the Linear layers of a loaded lens' transformer blocks get int8 weights (a scale per output channel)
with dynamic int8 activations (torch.ao's dynamic quantisation): less arithmetic per row. On CUDA, a lens whose
registry entry says `quant = "int8"` gets bitsandbytes' LLM.int8 layers there instead (half the weights' memory
of bfloat16; needs bitsandbytes installed), and such a lens cannot leave its GPU for the worker's CPU cache: it
is let go and read again. Embeddings, final norms and LM heads stay as they are (tied weights stay tied).

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
from .registry import QUANTS


def pick_quant(device, requested: str = "") -> str:
    """The quantisation a lens gets on `device`: its registry's `requested` one anywhere, else on a CPU what
    LENSWEB_CPU_QUANT asks for; "" for none."""
    name = (os.environ.get("LENSWEB_CPU_QUANT") or "").strip().lower()
    if name not in QUANTS:
        raise ModelLoadError(f"LENSWEB_CPU_QUANT is {name!r}; expected int8, or empty for none")
    if requested:
        return requested
    return name if torch.device(device).type == "cpu" else ""


def quantize(lens, quant: str):
    """The lens with the Linear layers of every model's blocks quantised in place (a model two fields share is
    quantised once); `lens.quant` says so. "" leaves it as it is."""
    if not quant:
        return lens
    on_cuda = lens.device.type == "cuda"
    replace = _bitsandbytes_int8(lens.device) if on_cuda else _dynamic_int8()
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
        replace(stack)
    lens.quant = quant
    return lens


def _dynamic_int8():
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as exc:  # torch says it will drop torch.ao.quantization for torchao
        raise ModelLoadError("int8 on a CPU needs torch.ao.quantization, which this torch lacks") from exc

    def replace(stack):
        with warnings.catch_warnings():  # torch.ao's quantisation is deprecated (for torchao), still here
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # per output channel: a little closer to float32 than one scale a tensor, as fast (measured)
            quantize_dynamic(stack, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True)

    return replace


def _bitsandbytes_int8(device: torch.device):
    """Each Linear of a stack replaced by bitsandbytes' Linear8bitLt, quantised as it reaches the GPU."""
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise ModelLoadError(
            'quant = "int8" on CUDA needs bitsandbytes (pip install bitsandbytes), which is not installed'
        ) from exc

    def replace(stack):
        for parent in list(stack.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is not torch.nn.Linear:
                    continue
                layer = bnb.nn.Linear8bitLt(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    has_fp16_weights=False,  # int8 weights for inference; outliers above 6 stay in fp16
                    threshold=6.0,
                )
                weight = child.weight.data.to("cpu", torch.float16)
                layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
                if child.bias is not None:
                    layer.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, layer.to(device))

    return replace


def stays_on_device(lens) -> bool:
    """Whether the lens cannot move off its GPU (bitsandbytes' int8 weights): the CPU cache lets it go."""
    return getattr(lens, "quant", "") != "" and lens.device.type == "cuda"


def dtype_name(lens) -> str:
    """The lens' dtype as metadata and cache keys name it: "float32", "bfloat16", "float32+int8"."""
    name = str(lens.dtype).replace("torch.", "")
    return f"{name}+{lens.quant}" if getattr(lens, "quant", "") else name
