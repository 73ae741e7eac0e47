"""A loaded lens: the frozen base (and optional donor), the decoder/encoder tensors and the shared prefixes."""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import ENGINE_VERSION
from .checkpoints import LensCheckpoint, read_checkpoint, resolve_checkpoint_path
from .errors import CheckpointError, ModelLoadError
from .loading import (  # noqa: F401  (pick_device, pick_dtype: this module's API too)
    load_model,
    load_tokenizer_from,
    model_fingerprint,
    model_width,
    pick_device,
    pick_dtype,
)
from .metrics import norm_range
from .models import (
    KV,
    embed_tokens,
    final_layers,
    hidden_size,
    input_embed_scale,
    num_layers,
    run_prefix,
)
from .quant import dtype_name
from .registry import LensSpec
from .types import public_name

log = logging.getLogger(__name__)


@dataclass
class Lens:
    spec: LensSpec
    ckpt: LensCheckpoint  # tensors on the lens' device and dtype
    model: Any  # the base causal LM: decoder and encoder
    orig: Any  # the model explained: the donor if any, else the base
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    base_path: str
    identity: str
    untrained: bool
    patched_blocks: int
    null_token_id: int
    decoder_prefix: KV = field(repr=False, default_factory=list)
    encoder_prefix: KV = field(repr=False, default_factory=list)
    encoder_prefix_len: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    quant: str = ""  # "int8": its blocks' Linear layers quantised (inference.quant)
    kind = "lens"  # its family (inference.families)

    @property
    def layer(self) -> int:
        return self.ckpt.layer

    @property
    def t_text(self) -> int:
        return self.ckpt.t_text

    @property
    def n_layers(self) -> int:
        return num_layers(self.model)

    def metadata(self) -> dict[str, Any]:
        return {
            "lens_id": self.spec.id,
            "name": self.spec.name,
            "description": self.spec.description,
            # names only: metadata reaches exports, share links and the API; paths stay in the server log
            "checkpoint": "demo" if self.spec.is_demo else public_name(str(self.ckpt.path)),
            "checkpoint_sha256": self.ckpt.sha256,
            "base_model": public_name(self.base_path),
            "donor_model": public_name(self.spec.donor_model),
            "layer": self.layer,
            "t_text": self.t_text,
            "patched_blocks": self.patched_blocks,
            "encoder_output_layer": self.ckpt.output_layer,
            "add_current_token": self.ckpt.add_current_token,
            "identity": self.identity,
            "untrained": self.untrained,
            "device": str(self.device),
            "dtype": dtype_name(self),
            "activation_norm_range": norm_range(
                self
            ).to_dict(),  # the ‖A‖ flag's rule, for every page and export
            "engine_version": ENGINE_VERSION,
        }


def load_tokenizer(spec: LensSpec):
    """The tokenizer alone: cheap, for bounds checks where the model is not loaded."""
    if spec.is_demo:
        from .demo_base import ensure_demo_base

        return load_tokenizer_from(str(ensure_demo_base()))
    return load_tokenizer_from(checkpoint_facts(spec).base)


def lens_files(spec: LensSpec) -> tuple:
    """Where the lens' files are (checkpoint, base, donor), unchecked: what a changed file is noticed by."""
    return (spec.checkpoint, spec.base_model, spec.donor_model)


def lens_width(spec: LensSpec) -> int:
    """The width of the activations the lens explains (its base's hidden size), without loading weights."""
    if spec.is_demo:
        from .demo_base import ensure_demo_base

        return model_width(str(ensure_demo_base()))
    return model_width(checkpoint_facts(spec).base)


@dataclass(frozen=True)
class CheckpointFacts:
    """What a web process needs of a lens' checkpoint: the file's hash (for the identity) and the base."""

    path: Path
    sha256: str
    base: str


# (checkpoint path, base_model) -> ((size, mtime) of the file when read, its facts); one lock per entry.
_facts: dict[tuple, tuple[tuple, CheckpointFacts]] = {}
_facts_locks: dict[tuple, threading.Lock] = {}
_facts_guard = threading.Lock()


def checkpoint_facts(spec: LensSpec) -> CheckpointFacts:
    """Read once per process per checkpoint file (again when it changes): concurrent first submissions wait
    for one read instead of each unpickling it. A failed read is not remembered; the next call tries again
    (and raises the CheckpointError again while the file stays broken)."""
    path = resolve_checkpoint_path(spec.checkpoint)
    try:
        info = path.stat()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    stamp = (info.st_size, info.st_mtime_ns)  # taken before reading: a file replaced meanwhile reads again
    key = (str(path), spec.base_model)
    with _facts_guard:
        lock = _facts_locks.setdefault(key, threading.Lock())
    with lock:
        cached = _facts.get(key)
        if cached is None or cached[0] != stamp:
            ckpt = read_checkpoint(path)
            cached = _facts[key] = (stamp, CheckpointFacts(path, ckpt.sha256, _base_location(spec, ckpt)))
    return cached[1]


def load_lens(spec: LensSpec, device: str | None = None, dtype: str | None = None) -> Lens:
    """Load base model(s), tensors and shared prefixes. Slow (seconds): call it in the worker only (through
    inference.engine.load, which picks the spec's family)."""
    import time

    t0 = time.perf_counter()
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    if spec.is_demo:
        from .demo import demo_checkpoint
        from .demo_base import ensure_demo_base

        base = str(ensure_demo_base())
        model = load_model(base, dev, dt, spec.quant)
        tokenizer = load_tokenizer_from(base)
        ckpt = demo_checkpoint(model, tokenizer)
    else:
        ckpt = read_checkpoint(spec.checkpoint)
        base = _base_location(spec, ckpt)
        model = load_model(base, dev, dt, spec.quant)
        tokenizer = load_tokenizer_from(base)
    t_model = time.perf_counter()
    orig = load_model(spec.donor_model, dev, dt, spec.quant) if spec.donor_model else model
    if orig is not model:
        _check_same_architecture(model, orig, spec.donor_model)
    ckpt.check_against(hidden_size(model), num_layers(model))
    ckpt = ckpt.to(dev, dt)
    ckpt = _scale_prompts(model, ckpt)
    lens = Lens(
        spec=spec,
        ckpt=ckpt,
        model=model,
        orig=orig,
        tokenizer=tokenizer,
        device=dev,
        dtype=dt,
        base_path=base,
        identity=_identity(ckpt.sha256, base, spec.donor_model),
        untrained=spec.untrained,  # the registry's: true for the demo (registry._untrained)
        patched_blocks=ckpt.patched_blocks(num_layers(model)),
        null_token_id=_null_token_id(tokenizer),
    )
    _build_prefixes(lens)
    lens.timings = {"load_models": t_model - t0, "total": time.perf_counter() - t0}
    return lens


def _build_prefixes(lens: Lens) -> None:
    """The left decoder prompt and the encoder soft prompt do not depend on A: their K/V are computed once."""
    with torch.inference_mode():
        lens.decoder_prefix = run_prefix(lens.model, lens.ckpt.decoder.prompt_left, stop_after=None)
        lens.encoder_prefix = run_prefix(
            lens.model, lens.ckpt.encoder.soft_prompt, stop_after=lens.ckpt.output_layer
        )
        lens.encoder_prefix_len = lens.ckpt.encoder.soft_prompt.shape[0]


def _base_location(spec: LensSpec, ckpt: LensCheckpoint) -> str:
    """An explicit base model wins; else config["model_name"], tried as a path, beside the checkpoint, as a name."""
    if spec.base_model:
        return spec.base_model
    name = ckpt.config.get("model_name")
    if not name:
        raise CheckpointError("the checkpoint names no model_name; give base_model in the lens registry")
    candidates = [Path(name).expanduser()]
    if ckpt.path is not None:
        candidates += [ckpt.path.parent / name, ckpt.path.parent.parent / name]
    for cand in candidates:
        if cand.is_dir():
            return str(cand)
    return name  # a hub name, resolved from the local cache only


def _check_same_architecture(base, donor, name: str) -> None:
    if (hidden_size(base), num_layers(base)) != (hidden_size(donor), num_layers(donor)):
        raise ModelLoadError(
            f"donor model {name!r} has hidden size {hidden_size(donor)} and {num_layers(donor)} blocks; "
            f"the base has {hidden_size(base)} and {num_layers(base)}"
        )


def _scale_prompts(model, ckpt: LensCheckpoint) -> LensCheckpoint:
    """Gemma-3 scales embeddings in its embedding module, not in the model: pre-scale the stored prompts."""
    scale = input_embed_scale(model)
    if scale != 1.0:
        ckpt.decoder.prompt_left = ckpt.decoder.prompt_left * scale
        ckpt.decoder.prompt_right = ckpt.decoder.prompt_right * scale
        ckpt.encoder.soft_prompt = ckpt.encoder.soft_prompt * scale
        if ckpt.encoder.soft_prompt_postfix is not None:
            ckpt.encoder.soft_prompt_postfix = ckpt.encoder.soft_prompt_postfix * scale
    return ckpt


def _null_token_id(tokenizer) -> int:
    """Salience replaces a token with the single-space token, else EOS (spec §5)."""
    ids = tokenizer.encode(" ", add_special_tokens=False)
    return ids[0] if ids else tokenizer.eos_token_id


def _identity(ckpt_sha: str, base: str, donor: str | None) -> str:
    """A content hash of checkpoint and models: a moved file keeps its identity, a changed one does not."""
    h = hashlib.sha256(ckpt_sha.encode())
    for location in (base, donor):
        h.update(b"|")
        if location:
            h.update(model_fingerprint(location).encode())
    return h.hexdigest()[:32]


def spec_identity(spec: LensSpec) -> str:
    """The identity `load_lens(spec).identity` will have, without loading any weights (for cache keys)."""
    if spec.is_demo:
        from .demo import demo_sha256
        from .demo_base import ensure_demo_base

        return _identity(demo_sha256(), str(ensure_demo_base()), spec.donor_model)
    facts = checkpoint_facts(spec)  # the file's hash; read once per process, shared with load_tokenizer
    return _identity(facts.sha256, facts.base, spec.donor_model)


def embed(lens: Lens, ids: torch.Tensor) -> torch.Tensor:
    return embed_tokens(lens.model, ids)


__all__ = ["Lens", "load_lens", "load_tokenizer", "pick_device", "pick_dtype", "embed", "final_layers"]
