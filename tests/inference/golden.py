"""The golden folder beside the repo, and lenses loaded once per test session. The engine tests that read
golden files are fidelity tests: without the folder they skip in one line (tests.conftest.golden_dir)."""

from inference.lens import load_lens
from inference.registry import LensSpec
from tests.conftest import REPO, golden_dir  # noqa: F401  (REPO, golden_dir: for the test modules)


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
