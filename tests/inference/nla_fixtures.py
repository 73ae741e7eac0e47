"""The NLA golden pairs beside the repo (shared/golden-nla), loaded once per test session.

The tiny pair is complete. The SmolLM2 pair ships without weights (golden-nla README "Rebuilding"): its AV
is the SmolLM2 base (the demo base, byte-identical to make_smollm2_dir.py's output) plus the shipped small
files, its AR blocks 0..8 of the same weights plus the shipped value head; both are written once into the
model cache. Without the golden folders these tests skip, as the other fidelity tests do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from inference.engine import load
from inference.registry import LensSpec
from tests.conftest import SHARED, golden_dir, require

NLA_GOLDEN = SHARED / "golden-nla"
SMOL_AR_BLOCKS = 9  # K = 8


def nla_golden_dir() -> Path:
    golden_dir()  # the tiny pair's base and the SmolLM2 tokenizer live there
    require(NLA_GOLDEN.is_dir(), f"the NLA golden files are not at {NLA_GOLDEN}")
    return NLA_GOLDEN


def golden(which: str) -> dict:
    return json.loads((nla_golden_dir() / f"{which}_golden.json").read_text())


def golden_tensors(which: str) -> dict:
    import torch

    return torch.load(nla_golden_dir() / f"{which}_golden.pt", weights_only=True)


def tiny_spec(**extra) -> LensSpec:
    """The tiny pair; its AV sidecar's base_checkpoint (golden/tiny-llama) resolves beside golden-nla."""
    return LensSpec(
        id="tiny-nla", name="tiny NLA", checkpoint=str(nla_golden_dir() / "tiny"), kind="nla", **extra
    )


def smol_spec(base: Path, **extra) -> LensSpec:
    return LensSpec(
        id="smol-nla",
        name="smol NLA",
        checkpoint=str(smol_pair(base)),
        base_model=str(base),
        kind="nla",
        **extra,
    )


def smol_pair(base: Path) -> Path:
    """<model cache>/nla-smol-<hash>/{av,ar}, built once from the SmolLM2 directory `base`."""
    shipped = nla_golden_dir() / "smol"
    h = hashlib.sha256(str(base.resolve()).encode())
    for f in sorted(shipped.glob("*/*")):
        h.update(f"{f.parent.name}/{f.name}".encode() + f.read_bytes())
    target = base.parent / f"nla-smol-{h.hexdigest()[:12]}"
    if (target / "ar" / "model.safetensors").is_file():
        return target
    work = Path(tempfile.mkdtemp(prefix=".nla-smol-", dir=base.parent))
    try:
        _write_pair(base, shipped, work)
        os.replace(work, target)  # all at once: a crash never leaves a half-built pair under the name
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
        if not (target / "ar" / "model.safetensors").is_file():
            raise
    return target


def _write_pair(base: Path, shipped: Path, out: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    tiny = nla_golden_dir() / "tiny"
    for side in ("av", "ar"):
        (out / side).mkdir()
        for f in (shipped / side).iterdir():
            shutil.copyfile(f, out / side / f.name)
        shutil.copyfile(tiny / side / "tokenizer.json", out / side / "tokenizer.json")  # identical (README)
    (out / "av" / "model.safetensors").symlink_to((base / "model.safetensors").resolve())
    keep = ("model.embed_tokens.",) + tuple(f"model.layers.{i}." for i in range(SMOL_AR_BLOCKS))
    with safe_open(str(base / "model.safetensors"), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in list(f.keys()) if k.startswith(keep)}
    save_file(tensors, str(out / "ar" / "model.safetensors"), metadata={"format": "pt"})


_LOADED: dict = {}


def cached_nla(spec: LensSpec):
    if spec not in _LOADED:
        _LOADED[spec] = load(spec, device="cpu")
    return _LOADED[spec]


def copy_pair(src: Path, dst: Path) -> Path:
    """A writable copy of a pair (the golden files are read-only), for breaking one field at a time: the
    weights and tokenizer.json are links (replace, never edit them), everything else is copied."""

    def copy(s: str, d: str) -> None:
        if Path(s).name in ("model.safetensors", "tokenizer.json"):
            os.symlink(Path(s).resolve(), d)
        else:
            shutil.copyfile(s, d)

    shutil.copytree(src, dst, copy_function=copy)
    for d in [dst, *dst.rglob("*")]:
        if d.is_dir():
            d.chmod(0o755)
    return dst
