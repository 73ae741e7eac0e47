"""The one door into the engine from outside inference/: what a web process calls cheaply (the registry, a
lens' tokenizer and identity, preparing an input, cache keys) and what a worker calls (load, analyze,
generate). The lens family is looked up here (inference.families), never tested for by callers.

Torch-free at import: the modules that need torch are imported by the function that uses them, so a web
process that only checks options and builds keys never loads it. Outside inference/ only this module and the
torch-free vocabulary (inference.types, .rows, .errors, .limits, .options) may be imported: tests/test_layers.py.
"""

from __future__ import annotations

from typing import Any

from . import ENGINE_VERSION
from .cachekey import KEYED, computation_identity, device_type, placement, result_key
from .chat import chat_template_info
from .families import KINDS, family
from .inputs import (
    activation_vectors,
    chosen_positions,
    common_prefix,
    explanation_ids,
    explanation_text,
    prepare_input,
    vector_options,
    vector_token_ids,
)
from .registry import LensRegistry, LensSpec, load_registry


def load(spec: LensSpec, device: str | None = None, dtype: str | None = None):
    """The loaded lens of `spec`, of its family (slow: seconds; workers only), with 8-bit weights where its
    registry entry or, on a CPU, LENSWEB_CPU_QUANT asks (inference.quant)."""
    from .quant import pick_quant, quantize

    lens = family(spec.kind).load(spec, device=device, dtype=dtype)
    return quantize(lens, pick_quant(lens.device, spec.quant))


def tokenizer(spec: LensSpec):
    """The lens' tokenizer alone, without its weights (cheap)."""
    return family(spec.kind).tokenizer(spec)


def files(spec: LensSpec) -> tuple:
    """Where the lens' files are (paths, or names such as "demo"), unchecked: a cache of a loaded lens or
    tokenizer compares their stamps to notice a file replaced at the same path."""
    return family(spec.kind).files(spec)


def width(spec: LensSpec) -> int:
    """The width of the activations the lens explains (a described vector's length), without weights."""
    return family(spec.kind).width(spec)


def identity(spec: LensSpec) -> str:
    """What `load(spec).identity` will be, without loading weights: a hash of its files (cache keys)."""
    return family(spec.kind).identity(spec)


def move(lens, device: str):
    """inference.placement.move: the loaded lens with its weights on `device` (a worker's CPU cache); None
    for a lens that cannot leave its GPU (bitsandbytes' int8 weights: inference.quant), to be let go."""
    from .placement import move as run
    from .quant import stays_on_device

    if stays_on_device(lens) and str(device) != str(lens.device):
        return None
    return run(lens, device)


def nbytes(lens) -> int:
    """inference.placement.nbytes: the bytes of a loaded lens' weights and tensors."""
    from .placement import nbytes as run

    return run(lens)


def free_memory() -> None:
    """inference.placement.free_memory: give back what dropped lenses held (gc; CUDA's cached blocks)."""
    from .placement import free_memory as run

    run()


def analyze(lens, inp, options, **kwargs):
    """inference.driver.analyze: rows per batch for every lens family."""
    from .driver import analyze as drive

    return drive(lens, inp, options, **kwargs)


def begin(lens, inp, options, **kwargs):
    """inference.driver.begin: one text's analysis (a sharing.Task), to run in batches shared with others."""
    from .driver import begin as run

    return run(lens, inp, options, **kwargs)


def shared_batches(lens, options, steps: int, rows_budget: int | None = None):
    """inference.sharing.SharedBatches: tasks of one lens and option set, batch by batch, owners in turn."""
    from .sharing import SharedBatches

    return SharedBatches(lens, options, steps, rows_budget)


def score(lens, inp, options, position: int, **kwargs):
    """inference.driver.score: the caller's explanation at a position, through the lens' encoder (a Row)."""
    from .driver import score as run

    return run(lens, inp, options, position, **kwargs)


def describe(lens, vectors, options, **kwargs):
    """inference.driver.describe: rows explaining vectors as if each were an activation at a position."""
    from .driver import describe as run

    return run(lens, vectors, options, **kwargs)


def activations(lens, inp, positions, **kwargs) -> list[list[float]]:
    """inference.driver.activations: the lens' layer activations at positions of the input."""
    from .driver import activations as run

    return run(lens, inp, positions, **kwargs)


def generate(lens, inp, options, **kwargs) -> dict[str, Any]:
    """inference.generation.generate: continuations or a chat reply."""
    from .generation import generate as run

    return run(lens, inp, options, **kwargs)


__all__ = [
    "ENGINE_VERSION",
    "KEYED",
    "KINDS",
    "LensRegistry",
    "LensSpec",
    "activation_vectors",
    "activations",
    "analyze",
    "begin",
    "chat_template_info",
    "chosen_positions",
    "common_prefix",
    "computation_identity",
    "describe",
    "device_type",
    "explanation_ids",
    "explanation_text",
    "files",
    "free_memory",
    "generate",
    "identity",
    "load",
    "load_registry",
    "move",
    "nbytes",
    "placement",
    "prepare_input",
    "result_key",
    "score",
    "shared_batches",
    "tokenizer",
    "vector_options",
    "vector_token_ids",
    "width",
]
