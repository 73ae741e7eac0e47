"""The whole suite runs the real engine: before any test, LENSWEB_LENS_REGISTRY names a registry whose one
lens is the tests' own tiny lens (tests/tinylens.py: random weights and a tokenizer built here, loaded in
about a second, a short text analysed in tens of milliseconds). Subprocesses (serve, runworker) inherit it.
Nothing here needs the golden files; only the fidelity tests under tests/inference read them.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.ratewindows import still_clock

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LENSWEB_SHARED_DIR") or REPO.parent / "shared")
GOLDEN = SHARED / "golden"  # for the fidelity tests only: golden_dir()
GOLDEN_MISSING = (
    f"the golden files are not at {GOLDEN}, so the fidelity tests that compare with them do not run "
    "(LENSWEB_SHARED_DIR names the folder holding golden/)"
)
TINY_NAME = "Tiny test lens"
TINY_DESCRIPTION = "The tests' own lens: a random 4-block Llama, layer 1, T = 6."
# The engine tests bring their own lenses; every other test runs against the registry below.
ENGINE_TESTS = Path(__file__).resolve().parent / "inference"

# ~140 tokens: with LENSWEB_ROWS_BUDGET=1 a job of many batches, for cancel, stop and resume tests.
SLOW_TEXT = (
    "The old lighthouse keeper climbed the spiral stairs every evening, carrying a brass lantern and a "
    "thermos of sweet tea. From the top he could see the fishing boats returning to the harbour, their "
    "lights flickering like fireflies against the darkening sea. "
) * 3

# directory (pytest_configure), lens and path (the first test that needs them), previous (the variable's
# value before the session)
_session: dict = {}


def scaled(seconds: float) -> float:
    """A deadline for waiting on real work, stretched by LENSWEB_TEST_TIMEOUT_SCALE (e.g. 3 on a machine
    whose other core is busy): one knob instead of guessing per test."""
    return seconds * float(os.environ.get("LENSWEB_TEST_TIMEOUT_SCALE") or 1)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(condition: bool, why: str) -> None:
    """Skip outside CI; in CI a missing service or file is a failure, not a skip."""
    if not condition:
        if in_ci():
            pytest.fail(f"{why} (CI=true: this must run)")
        pytest.skip(why)


def golden_dir() -> Path:
    """The golden folder, for the fidelity tests alone: without it they skip (fail in CI), all reported in
    one line (pytest_runtest_makereport below)."""
    require(GOLDEN.is_dir(), GOLDEN_MISSING)
    return GOLDEN


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A skip raised in a fixture is reported at its test's line, so `pytest -rs` would list every fidelity
    test that skipped for want of the golden files; report them all at golden_dir() instead: one line."""
    report = yield
    if report.skipped and isinstance(report.longrepr, tuple) and GOLDEN_MISSING in report.longrepr[2]:
        report.longrepr = (__file__, golden_dir.__code__.co_firstlineno, report.longrepr[2])
    return report


def tiny_lens():
    """The session's tiny lens (checkpoint, base), built on first use into the session's directory: the
    tests that never touch a lens (the engine's own) do not pay for it."""
    if "lens" not in _session:
        from tests.tinylens import build_tiny_lens

        if "directory" not in _session:  # used outside a pytest session
            _session["directory"] = Path(tempfile.mkdtemp(prefix="lensweb-tests-"))
        directory = _session["directory"]
        lens = build_tiny_lens(directory / "lens")
        _session["path"] = _write_registry(directory, lens)
        _session["lens"] = lens
    return _session["lens"]


def _write_registry(directory: Path, lens, extra: str = "") -> Path:
    path = directory / "lenses.toml"
    path.write_text(
        f'[[lens]]\nid = "tiny"\nname = "{TINY_NAME}"\ncheckpoint = "{lens.checkpoint}"\n'
        f'base_model = "{lens.base}"\ndefault = true\ndescription = "{TINY_DESCRIPTION}"\n{extra}'
    )
    return path


def write_tiny_registry(directory: Path, extra: str = "") -> Path:
    """lenses.toml with the tiny lens as the default, plus `extra` [[lens]] tables."""
    return _write_registry(directory, tiny_lens(), extra)


def write_registry_with_a_breakable_lens(directory: Path) -> tuple[Path, Path]:
    """(registry, checkpoint): the tiny lens, and lens "broken" on a copy of its checkpoint, which a test
    corrupts after submitting (a submit reads the checkpoint; the worker's load then fails)."""
    lens = tiny_lens()
    checkpoint = directory / "broken.pt"
    shutil.copyfile(lens.checkpoint, checkpoint)
    extra = (
        f'[[lens]]\nid = "broken"\nname = "Broken"\ncheckpoint = "{checkpoint}"\nbase_model = "{lens.base}"\n'
    )
    return write_tiny_registry(directory, extra), checkpoint


@functools.cache
def tiny_tokenizer():
    """The tiny lens' tokenizer, straight from transformers: what token ids and counts should be."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lens().base)


def token_ids(text: str) -> list[int]:
    return list(tiny_tokenizer()(text).input_ids)


def pytest_configure(config):
    """Name the registry now, so that every process the tests start inherits it; build it on first use."""
    directory = Path(tempfile.mkdtemp(prefix="lensweb-tests-"))
    _session.update(directory=directory, previous=os.environ.get("LENSWEB_LENS_REGISTRY", ""))
    os.environ["LENSWEB_LENS_REGISTRY"] = str(directory / "lenses.toml")


def pytest_unconfigure(config):
    if "directory" in _session:
        shutil.rmtree(_session["directory"], ignore_errors=True)
        if _session["previous"]:
            os.environ["LENSWEB_LENS_REGISTRY"] = _session["previous"]
        else:
            os.environ.pop("LENSWEB_LENS_REGISTRY", None)
    _session.clear()


def tiny_registry_path() -> Path:
    """The session's registry: the tiny lens alone."""
    tiny_lens()
    return _session["path"]


@pytest.fixture(autouse=True)
def still_rate_windows(monkeypatch):
    """One rate-limit window per test (tests/ratewindows.py says why)."""
    import django_ratelimit.core

    monkeypatch.setattr(django_ratelimit.core, "time", still_clock())


@pytest.fixture(autouse=True)
def tiny_lens_registry(request, monkeypatch):
    """Each web test starts on the tiny lens' registry (a test may point the variable elsewhere)."""
    if request.node.path.is_relative_to(ENGINE_TESTS):
        yield None
        return
    path = tiny_registry_path()
    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(path))
    yield path
