"""Loading what every lens family is built from: the device and dtype, a Hugging Face causal LM and its
tokenizer from a local directory, and a model directory's fingerprint (for identities). Shared by
inference.lens and inference.nla, which import nothing of each other for it."""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from pathlib import Path

import torch

from .errors import ModelLoadError


def pick_device(requested: str | None = None) -> torch.device:
    name = requested or os.environ.get("LENSWEB_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pick_dtype(device: torch.device, requested: str | None = None) -> torch.dtype:
    """float32 on CPU (exact agreement with the research code); bf16 where CUDA supports it."""
    name = requested or os.environ.get("LENSWEB_DTYPE")
    if name:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


# Models loaded lenses hold, by (files, dtype): lenses of one base model share its weights in memory, and a
# lens loaded while another of its base is held reads no weights. Weak: the last lens gone, the model goes.
_SHARED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
WEIGHTS = (".safetensors", ".bin")  # with config.json, what a model is read from
_SHARED_LOCK = threading.Lock()


def load_model(location: str, device: torch.device, dtype: torch.dtype, quant: str = ""):
    """A causal LM from a local directory, frozen, on `device`; the one another loaded lens holds where its
    files, dtype and quantisation (its registry's `quant`: inference.quant) are the same (moved to `device` if
    it was elsewhere)."""
    key = _share_key(location, device, dtype, quant)
    with _SHARED_LOCK:
        shared = _SHARED.get(key) if key else None
    if shared is not None:
        return shared.to(device)
    model = _read_model(location, device, dtype)
    if key:
        with _SHARED_LOCK:
            _SHARED[key] = model
    return model


def _share_key(location: str, device: torch.device, dtype: torch.dtype, quant: str) -> tuple | None:
    """The files the model is read from (config and weights), resolved, with their sizes and mtimes (a model
    replaced in place is another), the dtype and the quantisation the engine will apply; None for what is not
    a readable directory. Resolved: a directory whose files link to another's (the demo NLA's AV) is the
    same model."""
    from .quant import pick_quant

    try:
        model_files = [f for f in Path(location).iterdir() if f.name == "config.json" or f.suffix in WEIGHTS]
        files = tuple(sorted((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in model_files))
    except OSError:
        return None
    if not files:
        return None
    return files, str(dtype), pick_quant(device, quant)  # a quantised model is another model


def _read_model(location: str, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            location,
            dtype=dtype,
            local_files_only=True,  # default attention: SDPA where the family has it
        )
    except Exception as exc:  # transformers raises OSError, ValueError, … for a missing or broken model
        raise ModelLoadError(f"cannot load model {location!r}: {exc}") from exc
    model.to(device).eval()
    model.requires_grad_(False)
    return model


def load_tokenizer_from(location: str):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        if (Path(location) / "tokenizer.json").is_file():
            # tokenizer.json is the exact pipeline; AutoTokenizer may rebuild a slow class from vocab + merges
            # and lose pre-tokenizer steps (transformers 5 drops SmolLM2's digit splitting that way).
            return PreTrainedTokenizerFast.from_pretrained(location, local_files_only=True)
        return AutoTokenizer.from_pretrained(location, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer of {location!r}: {exc}") from exc


_FINGERPRINTS: dict[tuple, str] = {}
_FINGERPRINT_LOCK = threading.Lock()  # concurrent first submissions hash a model directory once


def model_fingerprint(location: str) -> str:
    """sha256 over a model directory's config and weight files, remembered per (path, mtimes) in-process."""
    path = Path(location)
    if not path.is_dir():
        return f"name:{location}"
    key = (str(path.resolve()), tuple(sorted((f.name, f.stat().st_mtime_ns) for f in path.iterdir())))
    with _FINGERPRINT_LOCK:
        if key not in _FINGERPRINTS:
            _FINGERPRINTS[key] = _hash_model_dir(path)
        return _FINGERPRINTS[key]


def _hash_model_dir(path: Path) -> str:
    """Sampled beyond 2 GiB per file, so that 27B models still load quickly."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.suffix not in (".json", ".safetensors", ".bin", ".model", ".txt", ".jinja") or not f.is_file():
            continue
        h.update(f.name.encode())
        size = f.stat().st_size
        h.update(str(size).encode())
        with f.open("rb") as fh:
            if size <= 2 << 30:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(chunk)
            else:
                for offset in range(0, size, size // 64):
                    fh.seek(offset)
                    h.update(fh.read(1 << 16))
    return h.hexdigest()


def model_width(location: str) -> int:
    """The hidden size of the model at `location`, from its config alone (cheap: no weights)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(location, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot read the config of {location!r}: {exc}") from exc
    return int(getattr(config, "text_config", config).hidden_size)
