"""The whole suite runs the real engine: before any test, LENSWEB_LENS_REGISTRY names a registry whose one
lens is the tiny golden lens (it loads in seconds and analyses a short text in tens of milliseconds).
Subprocesses (serve, runworker) inherit it. Without the golden files the web tests skip (fail in CI).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LENSWEB_SHARED_DIR") or REPO.parent / "shared")
GOLDEN = SHARED / "golden"
TINY_CHECKPOINT = GOLDEN / "checkpoints" / "tiny_patch2_percur.pt"
TINY_BASE = GOLDEN / "tiny-llama"
TINY_DESCRIPTION = "The golden test lens: a 4-block Llama, layer 1, T = 6."
TINY_MISSING = (
    f"the tiny golden lens is not at {GOLDEN} (set LENSWEB_SHARED_DIR to the folder holding golden/)"
)
# The engine tests bring their own lenses; every other test runs against the registry below.
ENGINE_TESTS = Path(__file__).resolve().parent / "inference"

# ~150 tokens: with LENSWEB_ROWS_BUDGET=1 a job of many batches, for cancel, stop and resume tests.
SLOW_TEXT = (
    "The old lighthouse keeper climbed the spiral stairs every evening, carrying a brass lantern and a "
    "thermos of sweet tea. From the top he could see the fishing boats returning to the harbour, their "
    "lights flickering like fireflies against the darkening sea. "
) * 3

_registry: dict = {}  # path, directory, previous: set in pytest_configure


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(condition: bool, why: str) -> None:
    """Skip outside CI; in CI a missing service or file is a failure, not a skip."""
    if not condition:
        if in_ci():
            pytest.fail(f"{why} (CI=true: this must run)")
        pytest.skip(why)


def tiny_lens_available() -> bool:
    return TINY_CHECKPOINT.is_file() and TINY_BASE.is_dir()


def _write_registry(directory: Path, extra: str = "") -> Path:
    path = directory / "lenses.toml"
    path.write_text(
        f'[[lens]]\nid = "tiny"\nname = "Tiny golden lens"\ncheckpoint = "{TINY_CHECKPOINT}"\n'
        f'base_model = "{TINY_BASE}"\ndefault = true\ndescription = "{TINY_DESCRIPTION}"\n{extra}'
    )
    return path


def write_tiny_registry(directory: Path, extra: str = "") -> Path:
    """lenses.toml with the tiny golden lens as the default, plus `extra` [[lens]] tables."""
    require(tiny_lens_available(), TINY_MISSING)
    return _write_registry(directory, extra)


def write_registry_with_a_breakable_lens(directory: Path) -> tuple[Path, Path]:
    """(registry, checkpoint): the tiny lens, and lens "broken" on a copy of its checkpoint, which a test
    corrupts after submitting (a submit reads the checkpoint; the worker's load then fails)."""
    checkpoint = directory / "broken.pt"
    require(tiny_lens_available(), TINY_MISSING)
    shutil.copyfile(TINY_CHECKPOINT, checkpoint)
    extra = (
        f'[[lens]]\nid = "broken"\nname = "Broken"\ncheckpoint = "{checkpoint}"\nbase_model = "{TINY_BASE}"\n'
    )
    return write_tiny_registry(directory, extra), checkpoint


@functools.cache
def tiny_tokenizer():
    """The tiny lens' tokenizer, straight from transformers: what token ids and counts should be."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY_BASE)


def token_ids(text: str) -> list[int]:
    return list(tiny_tokenizer()(text).input_ids)


def pytest_configure(config):
    if tiny_lens_available():
        directory = Path(tempfile.mkdtemp(prefix="lensweb-tests-"))
        _registry.update(directory=directory, previous=os.environ.get("LENSWEB_LENS_REGISTRY", ""))
        _registry["path"] = _write_registry(directory)
        os.environ["LENSWEB_LENS_REGISTRY"] = str(_registry["path"])


def pytest_unconfigure(config):
    if "directory" in _registry:
        shutil.rmtree(_registry["directory"], ignore_errors=True)
        if _registry["previous"]:
            os.environ["LENSWEB_LENS_REGISTRY"] = _registry["previous"]
        else:
            os.environ.pop("LENSWEB_LENS_REGISTRY", None)


def tiny_registry_path() -> Path:
    """The session's registry: the tiny golden lens alone."""
    require("path" in _registry, TINY_MISSING)
    return _registry["path"]


@pytest.fixture(autouse=True)
def tiny_lens_registry(request, monkeypatch):
    """Each web test starts on the tiny lens' registry (a test may point the variable elsewhere)."""
    if request.node.path.is_relative_to(ENGINE_TESTS):
        yield None
        return
    path = tiny_registry_path()
    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(path))
    yield path
