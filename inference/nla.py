"""Natural Language Autoencoders beside Consistency Lenses (shared/spec/nla.md).

An NLA pair is two Hugging Face directories with `nla_meta.yaml` sidecars: the activation verbaliser (AV)
writes an explanation of an activation injected into its prompt, the activation reconstructor (AR, blocks
0..K plus a value head) maps the explanation back to an activation. The model explained (the base) is a
third model: the registry's `base_model`, else the sidecar's `base_checkpoint`.

    load_nla(spec) -> NLALens             every check of the format first (nla_format), then the weights
    nla_tokenizer(spec)                   the base tokenizer alone (cheap: for bounds checks)
    nla_spec_identity(spec)               the identity load_nla(spec).identity will have, without weights
    analyze(nla, input, options, ...)     rows as inference.analysis.analyze (nla_analysis)
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import ENGINE_VERSION
from .demo_base import ensure_demo_base
from .driver import analyze as drive
from .errors import CheckpointError
from .loading import (
    load_model,
    load_tokenizer_from,
    model_fingerprint,
    model_width,
    pick_device,
    pick_dtype,
)
from .metrics import norm_range
from .models import KV, hidden_size, num_layers, run_prefix
from .nla_format import (
    SIDECAR,
    STOP_STRING,
    VALUE_HEAD,
    NLAConfig,
    av_prompt_ids,
    check_ar_tokenizer,
    check_base,
    check_marker,
    check_prompt,
    check_shapes,
    check_value_head,
    embed_scale,
    model_shape,
    parse_config,
    read_sidecar,
)
from .quant import dtype_name
from .registry import LensSpec
from .types import public_name

log = logging.getLogger(__name__)

# Explanations stop at EOS or </explanation>; the bound is a lens setting (registry `max_new_tokens`).
# 150 is the cap the reference's RL rollouts trained under, so a trained AV closes its tag within it.
DEFAULT_MAX_NEW_TOKENS = 150


@dataclass
class NLALens:
    spec: LensSpec
    cfg: NLAConfig
    base: Any  # the model explained: the activation at block K comes from it
    av: Any
    ar: Any  # blocks 0..K
    value_head: torch.Tensor  # (d, d), applied as W @ h
    tokenizer: Any  # the base's: the analysed text is tokenised with it
    av_tokenizer: Any
    ar_tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    paths: dict[str, str]  # av, ar, base
    identity: str
    sha256: str  # of the sidecars and the value head
    max_new_tokens: int
    prompt_ids: list[int]
    injection_position: int
    prompt_embeds: torch.Tensor = field(repr=False)  # (T, d) model dtype: bf16-rounded rows, scaled
    av_prefix: KV = field(repr=False, default_factory=list)  # K/V of the prompt before the marker
    eos_ids: frozenset[int] = frozenset()
    embed_scale: float = 1.0
    timings: dict[str, float] = field(default_factory=dict)
    quant: str = ""  # "int8": its models' blocks' Linear layers quantised (inference.quant)

    kind = "nla"

    @property
    def untrained(self) -> bool:
        """The registry says so (the demo pair); the sidecar's stage is provenance only."""
        return self.spec.untrained

    @property
    def orig(self):
        """The model explained, under the name inference.metrics and inference.generation use."""
        return self.base

    @property
    def layer(self) -> int:
        return self.cfg.layer

    @property
    def t_text(self) -> int:
        """The longest explanation (Consistency Lenses have exactly T tokens)."""
        return self.max_new_tokens

    @property
    def n_layers(self) -> int:
        return num_layers(self.base)

    def metadata(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "kind": "nla",
            "lens_id": self.spec.id,
            "name": self.spec.name,
            "description": self.spec.description,
            # names only: metadata reaches exports, share links and the API; paths stay in the server log
            "checkpoint": public_name(self.spec.checkpoint)
            or f"{public_name(self.paths['av'])} + {public_name(self.paths['ar'])}",
            "checkpoint_sha256": self.sha256,
            "av": public_name(self.paths["av"]),
            "ar": public_name(self.paths["ar"]),
            "base_model": public_name(self.paths["base"]),
            "donor_model": None,
            "layer": cfg.layer,
            "t_text": self.max_new_tokens,
            "max_new_tokens": self.max_new_tokens,
            "patched_blocks": 0,
            "encoder_output_layer": cfg.layer,
            "ar_blocks": cfg.layer + 1,
            "add_current_token": False,
            "injection_scale": cfg.injection_scale,
            "mse_scale": cfg.mse_scale,
            "fve_variance": cfg.variance,
            "fve_variance_source": cfg.variance_source,
            "injection_char": cfg.injection_char,
            "injection_token_id": cfg.injection_token_id,
            "injection_position": self.injection_position,
            "av_prompt_tokens": len(self.prompt_ids),
            "embed_scale": self.embed_scale,
            "stop": {"eos_token_ids": sorted(self.eos_ids), "stop_string": STOP_STRING},
            "identity": self.identity,
            "untrained": self.untrained,
            "device": str(self.device),
            "dtype": dtype_name(self),
            "activation_norm_range": norm_range(
                self
            ).to_dict(),  # the ‖A‖ flag's rule, for every page and export
            "engine_version": ENGINE_VERSION,
        }


def is_nla_folder(path: str | Path) -> bool:
    """A folder holding av/ and ar/ with their sidecars (the CLI's test for --checkpoint)."""
    p = Path(path).expanduser()
    return (p / "av" / SIDECAR).is_file() and (p / "ar" / SIDECAR).is_file()


def nla_files(spec: LensSpec) -> tuple:
    """Where the pair's files are (AV, AR, base), unchecked: what a changed file is noticed by."""
    if spec.is_demo:  # follows from the demo base, as the demo lens does
        return (spec.checkpoint, None, None)
    folder = spec.checkpoint and Path(spec.checkpoint)
    return (
        spec.av or (folder and str(folder / "av")),
        spec.ar or (folder and str(folder / "ar")),
        spec.base_model,
    )


def nla_paths(spec: LensSpec) -> tuple[Path, Path]:
    """(AV directory, AR directory): the registry's `av` and `ar`, else the folder's av/ and ar/ (the demo
    pair's built on first use: call it where weights load, in workers)."""
    if spec.is_demo:
        from .demo_nla import ensure_demo_nla

        folder = ensure_demo_nla()
        return folder / "av", folder / "ar"
    if spec.av or spec.ar:
        if not (spec.av and spec.ar):
            raise CheckpointError(f"NLA lens {spec.id!r} names only one of 'av' and 'ar'; expected both")
        av, ar = Path(spec.av).expanduser(), Path(spec.ar).expanduser()
    else:
        if not spec.checkpoint:
            raise CheckpointError(
                f"NLA lens {spec.id!r} needs a folder holding av/ and ar/, or 'av' and 'ar'"
            )
        folder = Path(spec.checkpoint).expanduser()
        av, ar = folder / "av", folder / "ar"
    for side, path in (("av", av), ("ar", ar)):
        if not path.is_dir():
            raise CheckpointError(f"NLA {side} directory {path} does not exist")
    return av, ar


def base_location(spec: LensSpec, av_meta: dict[str, Any], av_dir: Path) -> str:
    """An explicit base_model wins; else the sidecar's base_checkpoint, tried as a path (as given, then
    against the folders above the AV), else as a hub name (resolved from the local cache only)."""
    if spec.base_model:
        return spec.base_model
    name = av_meta.get("base_checkpoint")
    if not isinstance(name, str) or not name:
        raise CheckpointError(
            f"{av_dir / SIDECAR} names no base_checkpoint; give base_model (the model the NLA explains)"
        )
    given = Path(name).expanduser()
    candidates = [given] if given.is_absolute() else [given, *(up / name for up in av_dir.resolve().parents)]
    for cand in candidates[:6]:
        if cand.is_dir():
            return str(cand)
    return name


def nla_tokenizer(spec: LensSpec):
    """The base model's tokenizer, which analysed texts are tokenised with."""
    if spec.is_demo:  # the demo base's: web processes never build the demo pair
        return load_tokenizer_from(str(ensure_demo_base()))
    av_dir, _ = nla_paths(spec)
    return load_tokenizer_from(base_location(spec, read_sidecar(av_dir, "av"), av_dir))


def nla_width(spec: LensSpec) -> int:
    """The width of the activations the pair explains: its AV sidecar's d_model (checked against the models
    when the pair loads), without loading weights."""
    if spec.is_demo:
        return model_width(str(ensure_demo_base()))
    av_dir, _ = nla_paths(spec)
    width = read_sidecar(av_dir, "av").get("d_model")
    if not isinstance(width, int) or width < 1:
        raise CheckpointError(f"the AV sidecar in {av_dir} has no d_model")
    return width


def nla_spec_identity(spec: LensSpec) -> str:
    """A content hash of the three models, the sidecars and the settings that change a row."""
    settings = f"|var={spec.nla_baseline_rawvar}|max_new={_max_new_tokens(spec)}"
    if spec.is_demo:  # its files follow from the demo base and inference.demo_nla, as the demo lens' do
        from .demo_nla import demo_nla_sha256

        base = model_fingerprint(str(ensure_demo_base()))
        return hashlib.sha256(f"nla-demo|{demo_nla_sha256()}|{base}{settings}".encode()).hexdigest()[:32]
    av_dir, ar_dir = nla_paths(spec)
    base = base_location(spec, read_sidecar(av_dir, "av"), av_dir)
    h = hashlib.sha256(b"nla|")
    h.update(_files_sha(av_dir, ar_dir).encode())
    for location in (str(av_dir), str(ar_dir), base):
        h.update(b"|" + model_fingerprint(location).encode())
    h.update(settings.encode())
    return h.hexdigest()[:32]


def _files_sha(av_dir: Path, ar_dir: Path) -> str:
    """sha256 of both sidecars and the value head: what the checkpoint is, beside the model weights."""
    h = hashlib.sha256()
    for path in (av_dir / SIDECAR, ar_dir / SIDECAR, ar_dir / VALUE_HEAD):
        h.update(path.name.encode() + b"\0")
        try:
            h.update(path.read_bytes())
        except OSError as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from exc
    return h.hexdigest()


def _max_new_tokens(spec: LensSpec) -> int:
    return spec.max_new_tokens or DEFAULT_MAX_NEW_TOKENS


def load_nla(spec: LensSpec, device: str | None = None, dtype: str | None = None) -> NLALens:
    """Check the pair (sidecars, configs, tokenizers, value head) before any weight loads, then load the base,
    the AV and the AR and compute the AV prompt's shared prefix. Slow (seconds): call it in the worker."""
    t0 = time.perf_counter()
    av_dir, ar_dir = nla_paths(spec)
    av_meta, ar_meta = read_sidecar(av_dir, "av"), read_sidecar(ar_dir, "ar")
    cfg = parse_config(av_meta, ar_meta, av_dir, ar_dir, spec.nla_baseline_rawvar)
    av_type = check_shapes(cfg, av_dir, ar_dir)
    check_value_head(ar_dir / VALUE_HEAD, cfg.d_model)
    av_tok = load_tokenizer_from(str(av_dir))
    ar_tok = load_tokenizer_from(str(ar_dir))
    check_marker(cfg, av_tok, av_dir)
    prompt = av_prompt_ids(cfg, av_tok)
    position = check_prompt(cfg, prompt, av_tok, av_dir)
    check_ar_tokenizer(cfg, ar_tok, ar_dir)
    base_path = base_location(spec, av_meta, av_dir)
    if Path(base_path).is_dir():  # a local base is checked before loading; a hub name after
        check_base(cfg, *model_shape(Path(base_path), "base")[:2], base_path)
    base_tok = load_tokenizer_from(base_path)
    t_checks = time.perf_counter()

    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    base = load_model(base_path, dev, dt, spec.quant)
    check_base(cfg, hidden_size(base), num_layers(base), base_path)
    av = load_model(str(av_dir), dev, dt, spec.quant)
    ar = load_model(str(ar_dir), dev, dt, spec.quant)
    _drop_unused_head(ar)
    from safetensors.torch import load_file

    head = load_file(str(ar_dir / VALUE_HEAD))["weight"].to(device=dev, dtype=dt)
    scale = embed_scale(av_type, cfg.d_model)
    embeds = _prompt_embeds(av, prompt, scale)
    sha = _files_sha(av_dir, ar_dir)
    nla = NLALens(
        spec=spec,
        cfg=cfg,
        base=base,
        av=av,
        ar=ar,
        value_head=head,
        tokenizer=base_tok,
        av_tokenizer=av_tok,
        ar_tokenizer=ar_tok,
        device=dev,
        dtype=dt,
        paths={"av": str(av_dir), "ar": str(ar_dir), "base": base_path},
        identity=nla_spec_identity(spec),
        sha256=sha,
        max_new_tokens=_max_new_tokens(spec),
        prompt_ids=prompt,
        injection_position=position,
        prompt_embeds=embeds,
        eos_ids=_eos_ids(av_dir, av_tok),
        embed_scale=scale,
    )
    with torch.inference_mode():
        nla.av_prefix = run_prefix(av, embeds[:position], stop_after=None)
    nla.timings = {
        "checks": t_checks - t0,
        "load_models": time.perf_counter() - t_checks,
        "total": time.perf_counter() - t0,
    }
    return nla


def _drop_unused_head(ar) -> None:
    """The AR's LM head is never used (the value head replaces it): free an untied one."""
    head = ar.get_output_embeddings()
    if head is not None and head.weight is not ar.get_input_embeddings().weight:
        ar.set_output_embeddings(torch.nn.Identity())


def _prompt_embeds(av, ids: list[int], scale: float) -> torch.Tensor:
    """Rows of the embedding matrix cast to bfloat16, times the embed scale in bfloat16, then widened: the
    reference reads a bf16 matrix whatever the model's dtype (spec §2.2.1–3)."""
    weight = av.get_input_embeddings().weight
    index = torch.tensor(ids, device=weight.device)
    rows = (weight.detach()[index].to(torch.bfloat16) * scale).float()
    return rows.to(weight.dtype)


def _eos_ids(av_dir: Path, tokenizer) -> frozenset[int]:
    """The AV's generation_config eos_token_id (an id or a list), else its tokenizer's EOS."""
    from transformers import GenerationConfig

    eos = None
    if (av_dir / "generation_config.json").is_file():
        try:
            eos = GenerationConfig.from_pretrained(str(av_dir), local_files_only=True).eos_token_id
        except Exception as exc:  # a malformed file: the tokenizer's EOS still stops generation
            log.warning("cannot read %s/generation_config.json: %s", av_dir, exc)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        raise CheckpointError(f"the AV in {av_dir} has no EOS token (generation_config.json or tokenizer)")
    return frozenset([eos] if isinstance(eos, int) else eos)


def analyze(nla: NLALens, inp, options, **kwargs):
    """inference.driver.analyze, which runs every lens family (this one's batch step: nla_analysis);
    `max_new_tokens` defaults to the lens' setting and is bounded by `limits.max_new_tokens`."""
    return drive(nla, inp, options, **kwargs)


__all__ = [
    "NLALens",
    "DEFAULT_MAX_NEW_TOKENS",
    "analyze",
    "is_nla_folder",
    "load_nla",
    "nla_paths",
    "nla_spec_identity",
    "nla_tokenizer",
]
