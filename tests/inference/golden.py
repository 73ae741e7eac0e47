"""The golden folder beside the repo, and lenses loaded once per test session."""

import os
from pathlib import Path

import pytest

from inference.lens import load_lens
from inference.registry import LensSpec

REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    return Path(os.environ.get("LENSWEB_SHARED_DIR") or REPO.parent / "shared")


def golden_dir() -> Path:
    path = shared_dir() / "golden"
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"the golden fixtures are missing at {path}; CI must have shared/ beside the clone")
        pytest.skip(f"golden fixtures not found at {path}")
    return path


def tiny_spec(name: str) -> LensSpec:
    g = golden_dir()
    return LensSpec(
        id=name, name=name, checkpoint=str(g / "checkpoints" / f"{name}.pt"), base_model=str(g / "tiny-llama")
    )


_LENSES: dict = {}


def cached_lens(spec: LensSpec):
    if spec not in _LENSES:
        _LENSES[spec] = load_lens(spec, device="cpu")
    return _LENSES[spec]
