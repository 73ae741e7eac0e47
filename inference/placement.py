"""Where a loaded lens' weights live: moving a lens of any family between the device and the CPU (a worker keeps
recently used lenses in CPU memory, lensweb.analyses.lenscache) and counting the bytes it holds. A lens is a
dataclass of modules, tensors and lists, tuples, dicts or dataclasses of them; both are walked generically, so
a new family needs nothing here."""

from __future__ import annotations

import dataclasses
import gc
from typing import Any

import torch


def move(lens, device: str | torch.device):
    """The lens with every module and tensor on `device` (in place: the same object, its `device` updated).
    A tensor or module two fields share stays shared."""
    device = torch.device(device)
    seen: dict[int, Any] = {}
    for f in dataclasses.fields(lens):
        if f.name != "device":
            setattr(lens, f.name, _moved(getattr(lens, f.name), device, seen))
    lens.device = device
    return lens


def _moved(value, device: torch.device, seen: dict[int, Any]):
    key = id(value)
    if key in seen:
        return seen[key]
    if isinstance(value, torch.nn.Module | torch.Tensor):
        moved = value.to(device)  # a module moves in place; a tensor already there is returned as is
    elif isinstance(value, list):
        moved = [_moved(v, device, seen) for v in value]
    elif isinstance(value, tuple) and not hasattr(value, "_fields"):
        moved = tuple(_moved(v, device, seen) for v in value)
    elif isinstance(value, dict):
        moved = {k: _moved(v, device, seen) for k, v in value.items()}
    elif dataclasses.is_dataclass(value) and not isinstance(value, type) and _holds_tensors(value):
        changes = {f.name: _moved(getattr(value, f.name), device, seen) for f in dataclasses.fields(value)}
        moved = dataclasses.replace(value, **changes)
    else:
        moved = value
    seen[key] = moved
    return moved


def _holds_tensors(value) -> bool:
    return any(True for _ in _tensors(value, set()))


def free_memory() -> None:
    """Return what dropped lenses held: Python's cycles first, then the CUDA allocator's cached blocks."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def nbytes(lens) -> int:
    """The bytes of the lens' weights and tensors (or of a tuple of lenses together), each storage counted once
    (a shared base counts once)."""
    total, storages = 0, set()
    for tensor in _tensors(lens, set()):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in storages:
            storages.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def _tensors(value, seen: set[int]):
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, torch.nn.Module):
        yield from value.parameters()
        yield from value.buffers()
    elif isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _tensors(v, seen)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v, seen)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _tensors(getattr(value, f.name), seen)
