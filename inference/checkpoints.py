"""Reading research-format lens checkpoints (spec §9). Shapes come from the tensors, never from the prompts."""

from __future__ import annotations

import functools
import hashlib
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

_COMPILE_PREFIX = "_orig_mod."


@dataclass
class DecoderTensors:
    proj_weight: torch.Tensor  # (n_proj, d, d); a single projection is stored as n_proj = 1
    proj_bias: torch.Tensor  # (n_proj, d)
    prompt_left: torch.Tensor  # (n_left, d)
    prompt_right: torch.Tensor  # (n_right, d)
    per_layer: bool


@dataclass
class EncoderTensors:
    soft_prompt: torch.Tensor  # (n_pre, d)
    soft_prompt_postfix: torch.Tensor | None  # (n_post, d)
    proj_weight: torch.Tensor | None  # (d, d)
    proj_bias: torch.Tensor | None  # (d,)
    special_vector: torch.Tensor | None  # (d,)


@dataclass
class LensCheckpoint:
    path: Path | None
    sha256: str
    config: dict[str, Any]
    layer: int
    t_text: int
    patch_all_layers: bool | int  # True = every block, N = blocks 0..N-1, 0 = input slot only
    output_layer: int
    add_current_token: bool
    decoder: DecoderTensors
    encoder: EncoderTensors

    @property
    def hidden_size(self) -> int:
        return self.decoder.prompt_left.shape[-1]

    @property
    def model_name(self) -> str | None:
        return self.config.get("tokenizer_name") or self.config.get("model_name")

    def patched_blocks(self, num_layers: int) -> int:
        """How many blocks (from block 0) get the slot overwritten in the decoder prefill."""
        n = num_layers if self.patch_all_layers is True else int(self.patch_all_layers)
        if not 0 <= n <= num_layers:
            raise CheckpointError(
                f"patch_all_layers={self.patch_all_layers} but the base has {num_layers} blocks"
            )
        if self.decoder.per_layer and n > self.decoder.proj_weight.shape[0]:
            raise CheckpointError(
                f"decoder.proj_weight holds {self.decoder.proj_weight.shape[0]} per-layer projections "
                f"but {n} blocks are patched"
            )
        return n

    def check_against(self, hidden_size: int, num_layers: int) -> None:
        """Raise a CheckpointError naming the key and both shapes if the base model does not fit."""
        d = hidden_size
        expect: dict[str, tuple[torch.Tensor | None, tuple[int, ...]]] = {
            "decoder.proj_weight": (self.decoder.proj_weight, (self.decoder.proj_weight.shape[0], d, d)),
            "decoder.proj_bias": (self.decoder.proj_bias, (self.decoder.proj_bias.shape[0], d)),
            "decoder.prompt_left_emb": (self.decoder.prompt_left, (self.decoder.prompt_left.shape[0], d)),
            "decoder.prompt_right_emb": (self.decoder.prompt_right, (self.decoder.prompt_right.shape[0], d)),
            "encoder.soft_prompt_embeddings": (
                self.encoder.soft_prompt,
                (self.encoder.soft_prompt.shape[0], d),
            ),
            "encoder.proj.weight": (self.encoder.proj_weight, (d, d)),
            "encoder.proj.bias": (self.encoder.proj_bias, (d,)),
            "encoder.special_last_token_vector": (self.encoder.special_vector, (d,)),
        }
        if self.encoder.soft_prompt_postfix is not None:
            expect["encoder.soft_prompt_embeddings_postfix"] = (
                self.encoder.soft_prompt_postfix,
                (self.encoder.soft_prompt_postfix.shape[0], d),
            )
        for key, (tensor, shape) in expect.items():
            if tensor is not None and tuple(tensor.shape) != shape:
                raise CheckpointError(
                    f"checkpoint key {key} has shape {tuple(tensor.shape)} but the base model "
                    f"(hidden size {d}) needs {shape}"
                )
        if not 0 <= self.layer < num_layers:
            raise CheckpointError(f"layer_l={self.layer} but the base model has {num_layers} blocks")
        if not 0 <= self.output_layer < num_layers:
            raise CheckpointError(
                f"encoder output_layer={self.output_layer} but the base has {num_layers} blocks"
            )
        self.patched_blocks(num_layers)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> LensCheckpoint:
        def mv(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        dec, enc = self.decoder, self.encoder
        return LensCheckpoint(
            path=self.path,
            sha256=self.sha256,
            config=self.config,
            layer=self.layer,
            t_text=self.t_text,
            patch_all_layers=self.patch_all_layers,
            output_layer=self.output_layer,
            add_current_token=self.add_current_token,
            decoder=DecoderTensors(
                mv(dec.proj_weight),
                mv(dec.proj_bias),
                mv(dec.prompt_left),
                mv(dec.prompt_right),
                dec.per_layer,
            ),
            encoder=EncoderTensors(
                mv(enc.soft_prompt),
                mv(enc.soft_prompt_postfix),
                mv(enc.proj_weight),
                mv(enc.proj_bias),
                mv(enc.special_vector),
            ),
        )


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A directory means its newest `*.pt` (by modification time)."""
    p = Path(path).expanduser()
    if p.is_dir():
        candidates = sorted(p.glob("*.pt"), key=lambda f: f.stat().st_mtime)
        if not candidates:
            raise CheckpointError(f"no *.pt checkpoint in directory {p}")
        return candidates[-1]
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    return p


def read_checkpoint(path: str | Path) -> LensCheckpoint:
    resolved = resolve_checkpoint_path(path)
    raw = _torch_load(resolved)
    if not isinstance(raw, dict) or "models" not in raw or "config" not in raw:
        raise CheckpointError(
            f"{resolved} is not a lens checkpoint: it needs top-level 'models' and 'config'"
        )
    ckpt = parse_checkpoint(raw, sha256=_sha256(resolved))
    ckpt.path = resolved
    return ckpt


def parse_checkpoint(raw: dict[str, Any], sha256: str = "") -> LensCheckpoint:
    """Build a LensCheckpoint from the `{config, models}` dict; training extras are ignored."""
    config = raw["config"]
    models = raw["models"]
    if not isinstance(models, dict) or "decoder" not in models or "encoder" not in models:
        raise CheckpointError("checkpoint 'models' must hold 'decoder' and 'encoder' state dicts")
    dec_sd = _strip_prefix(models["decoder"])
    enc_sd = _strip_prefix(models["encoder"])
    dec_cfg = config.get("trainable_components", {}).get("decoder", {})
    enc_cfg = config.get("trainable_components", {}).get("encoder", {})

    decoder = _decoder_tensors(dec_sd)
    encoder = _encoder_tensors(enc_sd, enc_cfg)
    add_current = bool(enc_cfg.get("add_current_token", False))
    for key in ("layer_l", "t_text"):
        if key not in config:
            raise CheckpointError(f"checkpoint config has no '{key}'")
    layer = int(config["layer_l"])
    return LensCheckpoint(
        path=None,
        sha256=sha256,
        config=config,
        layer=layer,
        t_text=int(config["t_text"]),
        patch_all_layers=_patch_setting(dec_cfg.get("patch_all_layers", False)),
        output_layer=int(enc_cfg.get("output_layer", layer)),
        add_current_token=add_current,
        decoder=decoder,
        encoder=encoder,
    )


def _decoder_tensors(sd: dict[str, torch.Tensor]) -> DecoderTensors:
    if "proj_weight" in sd:
        weight, bias = sd["proj_weight"], sd.get("proj_bias")
        if weight.dim() != 3:
            raise CheckpointError(f"decoder.proj_weight must be (n_proj, d, d), got {tuple(weight.shape)}")
        per_layer = True
    elif "proj.weight" in sd:
        weight, bias = sd["proj.weight"].unsqueeze(0), sd.get("proj.bias")
        bias = None if bias is None else bias.unsqueeze(0)
        per_layer = False
    else:
        raise CheckpointError("decoder state dict has neither 'proj_weight' nor 'proj.weight'")
    if bias is None:
        bias = torch.zeros(weight.shape[0], weight.shape[1], dtype=weight.dtype)
    for key in ("prompt_left_emb", "prompt_right_emb"):
        if key not in sd:
            raise CheckpointError(f"decoder state dict has no '{key}'")
    return DecoderTensors(
        proj_weight=weight.float(),
        proj_bias=bias.float(),
        prompt_left=sd["prompt_left_emb"].float(),
        prompt_right=sd["prompt_right_emb"].float(),
        per_layer=per_layer,
    )


def _encoder_tensors(sd: dict[str, torch.Tensor], cfg: dict[str, Any]) -> EncoderTensors:
    if "soft_prompt_embeddings" not in sd:
        raise CheckpointError("encoder state dict has no 'soft_prompt_embeddings'")
    wants_proj = cfg.get("use_projection_layer")
    has_proj = "proj.weight" in sd
    if wants_proj and not has_proj:
        raise CheckpointError(
            "encoder config says use_projection_layer but the checkpoint has no encoder proj.weight"
        )
    wants_vec = bool(cfg.get("special_last_token_vector", False))
    vec = sd.get("special_last_token_vector")
    if wants_vec and vec is None:
        raise CheckpointError("encoder config asks for special_last_token_vector but the checkpoint has none")
    postfix = sd.get("soft_prompt_embeddings_postfix")

    def f(t):
        return None if t is None else t.float()

    return EncoderTensors(
        soft_prompt=sd["soft_prompt_embeddings"].float(),
        soft_prompt_postfix=f(postfix) if postfix is not None and postfix.shape[0] > 0 else None,
        proj_weight=f(sd.get("proj.weight")) if has_proj and wants_proj is not False else None,
        proj_bias=f(sd.get("proj.bias")) if has_proj and wants_proj is not False else None,
        special_vector=f(vec)
        if wants_vec or (vec is not None and "special_last_token_vector" not in cfg)
        else None,
    )


def _patch_setting(value: Any) -> bool | int:
    """`patch_all_layers`: True (all blocks), an int N (first N), or False/"just_input"/0 (slot only)."""
    if value is True:
        return True
    if value in (False, None, "just_input", "false"):
        return 0
    if value in ("true", "all"):
        return True
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CheckpointError(f"unsupported patch_all_layers value {value!r}") from None


def _strip_prefix(sd: dict[str, Any]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        while key.startswith(_COMPILE_PREFIX):
            key = key[len(_COMPILE_PREFIX) :]
        key = key.replace("." + _COMPILE_PREFIX, ".")
        out[key] = value
    return out


# torch.serialization.safe_globals edits one process-wide set: two threads in it at once would remove each
# other's entries (the second load then fails), so every read holds this lock (the scan too: it reads the set).
_SAFE_GLOBALS_LOCK = threading.Lock()


def _torch_load(path: Path) -> Any:
    """torch.load(weights_only=True), plus exactly the numpy names the research RNG state pickles.

    The pickle's globals are listed statically first and any other one is refused by name before anything
    is unpickled: every allowed global may be called while unpickling, and numpy also has callables with
    side effects (`numpy.testing._private.utils.runstring` is exec, `numpy.savetxt` writes files)."""
    try:
        with _SAFE_GLOBALS_LOCK:
            foreign = _foreign_globals(path)
            if foreign is None:  # not a zip checkpoint: torch's own allow-list alone
                return torch.load(path, map_location="cpu", weights_only=True)
            if foreign:
                raise CheckpointError(
                    f"checkpoint {path} pickles {', '.join(sorted(foreign))}, which a lens checkpoint does "
                    "not need (only tensors and numpy RNG state); refusing to unpickle it"
                )
            with torch.serialization.safe_globals(_rng_state_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # truncated, not a torch file, an opcode the safe unpickler lacks
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc


def _foreign_globals(path: Path) -> set[str] | None:
    """The pickle's globals that neither torch's weights-only defaults nor the RNG allow-list permit; None
    for a file that is not a zip checkpoint. A static scan of the pickle: nothing is imported or called."""
    with path.open("rb") as fh:
        if not zipfile.is_zipfile(fh):
            return None
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    return unsafe - set(_rng_state_globals_by_name())


def _rng_state_globals() -> list[Any]:
    """(object, pickled name) pairs for torch.serialization.safe_globals."""
    return [(obj, name) for name, obj in _rng_state_globals_by_name().items()]


@functools.cache
def _rng_state_globals_by_name() -> dict[str, Any]:
    """What `np.random.get_state()` and pickled Generator / RandomState objects need, and nothing else:
    array reconstruction, ndarray, dtype and its classes (the unpickler checks the type of what it builds),
    the bit-generator constructors and classes, SeedSequence. None of these has side effects, and each
    callable here only ever receives the others (or plain data) as arguments."""
    import numpy
    import numpy.dtypes
    import numpy.random
    import numpy.random._pickle as rng_pickle
    import numpy.random.bit_generator as bit_generator

    multiarray = getattr(numpy, "_core", None) or numpy.core  # numpy 2 renamed numpy.core
    reconstruct = multiarray.multiarray._reconstruct
    allowed: dict[str, Any] = {
        # Either name, whichever numpy wrote the file.
        "numpy._core.multiarray._reconstruct": reconstruct,
        "numpy.core.multiarray._reconstruct": reconstruct,
        "numpy.ndarray": numpy.ndarray,
        "numpy.dtype": numpy.dtype,
        "numpy.random._pickle.__randomstate_ctor": getattr(rng_pickle, "__randomstate_ctor"),
        "numpy.random._pickle.__bit_generator_ctor": getattr(rng_pickle, "__bit_generator_ctor"),
        "numpy.random._pickle.__generator_ctor": getattr(rng_pickle, "__generator_ctor"),
        "numpy.random.mtrand.RandomState": numpy.random.RandomState,
        "numpy.random.bit_generator.SeedSequence": bit_generator.SeedSequence,
    }
    unpickle_seed = getattr(bit_generator, "__pyx_unpickle_SeedSequence", None)
    if unpickle_seed is not None:
        allowed["numpy.random.bit_generator.__pyx_unpickle_SeedSequence"] = unpickle_seed
    for cls in (numpy.random.MT19937, numpy.random.PCG64, numpy.random.Philox, numpy.random.SFC64):
        allowed[f"{cls.__module__}.{cls.__name__}"] = cls
    if hasattr(numpy.random, "PCG64DXSM"):
        allowed["numpy.random._pcg64.PCG64DXSM"] = numpy.random.PCG64DXSM
    for cls in vars(numpy.dtypes).values():
        if isinstance(cls, type) and issubclass(cls, numpy.dtype):
            allowed[f"numpy.dtypes.{cls.__name__}"] = cls
    return allowed


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
