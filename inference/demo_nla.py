"""The bundled demo NLA pair: SmolLM2-135M-Instruct verbalising and reconstructing its own layer-8 activation,
untrained, built once from the demo base as shared/golden-nla's SmolLM2 pair is (its README "How the two NLA
pairs were built"), so that both lens families are there to try on a fresh install.

- AV: the base model itself; its directory holds the sidecar beside links to the base's files, so the engine
  shares one model in memory between the base, the AV and the demo lens (inference.loading keys models by
  the files they read).
- AR: blocks 0..K of the base (K = 8) and its embeddings (the LM head, tied to them, is dropped), plus a value head that stands in
  for a trained one: randn(d, d) from a fixed seed, over √d. The AR tokenizer names no BOS (SmolLM2 never
  prepends it; the reference's loader asserts that a named BOS is prepended).
- Sidecars in the release form, with the reference's default templates and the golden pair's scales.
Nothing was trained: the AV answers in English about "the vector" and never closes an <explanation> tag, so
the whole reply is the explanation; mse_nrm is ≈ 2 (orthogonal) and fve_nrm below 0.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .demo_base import ensure_demo_base, exclusive_lock, make_cache_dir, make_durable_and_readable
from .nla_format import SIDECAR, VALUE_HEAD

DEMO_NLA_LAYER = 8
INJECTION_SCALE = 180.0  # the next multiple of 50 above the mean ‖v‖ at layer 8 (172.5)
D_MODEL = 576
MSE_SCALE = math.sqrt(D_MODEL)
BASELINE_RAWVAR = 0.4107  # the raw-variance baseline of the golden texts' layer-8 activations
HEAD_SEED = 4321
# A single-token character the pre-tokeniser keeps apart: `<concept>值</concept>` splits as `>`, `值`, `</`.
INJECTION_CHAR = "值"
INJECTION_TOKEN_ID = 45494
LEFT_NEIGHBOUR_ID, RIGHT_NEIGHBOUR_ID = 46, 9617
CRITIC_SUFFIX_IDS = [2692, 46, 2067, 18347, 46]  # "text", ">", " <", "summary", ">"
AV_TEMPLATE = (
    "You are a meticulous AI researcher conducting an important investigation into activation vectors from "
    "a language model. Your overall task is to describe the semantic content of that activation vector.\n\n"
    "We will pass the vector enclosed in <concept> tags into your context. You must then produce an "
    "explanation for the vector, enclosed within <explanation> tags. The explanation consists of 2-3 text "
    "snippets describing that vector.\n\nHere is the vector:\n\n<concept>{injection_char}</concept>\n\n"
    "Please provide an explanation."
)
AR_TEMPLATE = "Summary of the following text: <text>{explanation}</text> <summary>"
# Part of the folder name and the sidecars: a new version never reuses another's files or results.
DEMO_NLA_VERSION = "1"  # 1: as shared/golden-nla's SmolLM2 pair
MODEL_FILES = ("config.json", "model.safetensors", "generation_config.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
)


def sidecar(role: str, base_name: str) -> dict[str, Any]:
    """The release-form sidecar of one side (role "av" or "ar")."""
    data: dict[str, Any] = {
        "kind": "nla_model",
        "schema_version": 2,
        "role": role,
        "stage": "rl",
        "base_checkpoint": base_name,  # the base's folder name: found beside this pair's folder
        "d_model": D_MODEL,
        "extraction": {"injection_scale": INJECTION_SCALE if role == "av" else None, "mse_scale": MSE_SCALE},
        "tokens": {
            "injection_char": INJECTION_CHAR,
            "injection_token_id": INJECTION_TOKEN_ID,
            "injection_left_neighbor_id": LEFT_NEIGHBOUR_ID,
            "injection_right_neighbor_id": RIGHT_NEIGHBOUR_ID,
            "critic_suffix_ids": CRITIC_SUFFIX_IDS,
        },
        "prompt_templates": {"av": AV_TEMPLATE, "ar": AR_TEMPLATE},
        "trained_on": ["none (the untrained lensweb demo pair)"],
        "training": {"lr": 0.0, "nla_baseline_rawvar": BASELINE_RAWVAR},
        "lensweb_demo_nla_version": DEMO_NLA_VERSION,
        "extraction_layer_index": DEMO_NLA_LAYER,
    }
    if role == "ar":
        data["critic"] = {"extraction_layer_index": DEMO_NLA_LAYER}
    return data


def demo_nla_sha256() -> str:
    """Stands in for the pair's file hash: its files follow from these declarations and the demo base."""
    declared = {
        "sidecars": [sidecar(role, "<base>") for role in ("av", "ar")],
        "ar_blocks": DEMO_NLA_LAYER + 1,
        "head_seed": HEAD_SEED,
    }
    return hashlib.sha256(json.dumps(declared, sort_keys=True).encode()).hexdigest()


def value_head():
    """The AR's head: a fixed random matrix (the golden pair's, bit for bit), applied as W @ h."""
    import torch

    generator = torch.Generator().manual_seed(HEAD_SEED)
    return torch.randn((D_MODEL, D_MODEL), generator=generator, dtype=torch.float32) / math.sqrt(D_MODEL)


def demo_nla_folder(base: Path) -> Path:
    """Where the pair built from `base` lives: beside it in the model cache."""
    return base.parent / f"{base.name}-nla-v{DEMO_NLA_VERSION}"


@functools.cache
def _ensured(base: Path) -> Path:
    target = demo_nla_folder(base)
    if _is_complete(target):
        return target
    with exclusive_lock(base.parent / f".{target.name}.lock"):
        if not _is_complete(target):  # another process may have built it while we waited
            _build_atomically(base, target)
    return target


def ensure_demo_nla(base: Path | None = None) -> Path:
    """The demo pair's folder (holding av/ and ar/), built from the demo base on first use (seconds; the
    worker's first load of the pair, never a web process)."""
    base = Path(base) if base is not None else ensure_demo_base()
    make_cache_dir(base.parent)
    return _ensured(base.resolve())


def _is_complete(folder: Path) -> bool:
    # the rename of the whole folder makes every file appear at once
    return (folder / "ar" / VALUE_HEAD).is_file() and (folder / "av" / SIDECAR).is_file()


def _build_atomically(base: Path, target: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _write_pair(base, work)
        for folder in (work / "av", work / "ar", work):
            folder.chmod(0o755)  # mkdtemp makes it 0700; a web server running as another user reads it
        for side in ("av", "ar"):
            make_durable_and_readable(work / side)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _write_pair(base: Path, out: Path) -> None:
    import yaml  # a transformers dependency
    from safetensors import safe_open
    from safetensors.torch import save_file

    av, ar = out / "av", out / "ar"
    av.mkdir()
    ar.mkdir()
    _link(base, av, MODEL_FILES + TOKENIZER_FILES)
    _link(base, ar, tuple(name for name in TOKENIZER_FILES if name != "tokenizer_config.json"))
    tokenizer_config = json.loads((base / "tokenizer_config.json").read_text())
    tokenizer_config["bos_token"] = None  # SmolLM2 names <|im_start|> as BOS but never prepends it
    (ar / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    config = json.loads((base / "config.json").read_text())
    config["num_hidden_layers"] = DEMO_NLA_LAYER + 1
    (ar / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    # the final norm is never applied (the AR reads block K's output) but kept: transformers warns of a missing one
    keep = ("model.embed_tokens.", "model.norm.") + tuple(
        f"model.layers.{i}." for i in range(DEMO_NLA_LAYER + 1)
    )
    with safe_open(str(base / "model.safetensors"), framework="pt") as f:
        names = f.keys()  # a safetensors handle, not a dict
        tensors = {key: f.get_tensor(key) for key in names if key.startswith(keep)}
    save_file(tensors, str(ar / "model.safetensors"), metadata={"format": "pt"})
    save_file({"weight": value_head()}, str(ar / VALUE_HEAD), metadata={"format": "pt"})
    for side, role in ((av, "av"), (ar, "ar")):
        text = yaml.safe_dump(sidecar(role, base.name), sort_keys=False, allow_unicode=True)
        (side / SIDECAR).write_text(text, encoding="utf-8")


def _link(base: Path, side: Path, names: tuple[str, ...]) -> None:
    """Links to the base's files that exist, relative: the model cache may move as a whole."""
    for name in names:
        if (base / name).is_file():
            (side / name).symlink_to(Path("..", "..", base.name, name))
