"""The engine adapter over the tiny test lens: one loaded lens per process, reloaded when its files change;
tokenizers re-read when a checkpoint changes; generation through the adapter."""

import shutil

import pytest

from inference.errors import CheckpointError
from inference.limits import DEFAULT_LIMITS
from inference.types import AnalysisInput, AnalysisOptions, GenerationOptions
from tests.conftest import (
    tiny_lens,
    token_ids,
    write_registry_with_a_breakable_lens,
    write_tiny_registry,
)


def test_a_lens_loads_once_per_process(tiny_engine):
    spec = tiny_engine.default_lens()
    assert tiny_engine.load(spec) is tiny_engine.load(tiny_engine.get_spec("tiny"))


def test_a_checkpoint_replaced_at_the_same_path_loads_anew(tiny_engine, tmp_path, monkeypatch):
    copy = tmp_path / "copy.pt"
    shutil.copyfile(tiny_lens().checkpoint, copy)
    extra = (
        f'[[lens]]\nid = "copy"\nname = "Copy"\ncheckpoint = "{copy}"\nbase_model = "{tiny_lens().base}"\n'
    )
    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(write_tiny_registry(tmp_path, extra)))
    spec = tiny_engine.get_spec("copy")
    first = tiny_engine.load(spec)
    assert tiny_engine.load(spec) is first
    shutil.copyfile(tiny_lens().checkpoint, tmp_path / "new.pt")
    (tmp_path / "new.pt").replace(copy)  # same path, same bytes, a new file
    assert tiny_engine.load(spec) is not first


def test_a_broken_checkpoint_fails_before_the_loaded_lens_is_let_go(tiny_engine, tmp_path, monkeypatch):
    registry, checkpoint = write_registry_with_a_breakable_lens(tmp_path)
    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(registry))
    broken = tiny_engine.get_spec("broken")
    options = AnalysisOptions()
    assert tiny_engine.prepare(
        broken, AnalysisInput(text="a b"), options, DEFAULT_LIMITS
    ).token_ids == token_ids("a b")
    lens = tiny_engine.load(tiny_engine.get_spec("tiny"))
    checkpoint.write_bytes(b"half a checkpoint")
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {checkpoint}"):
        tiny_engine.prepare(broken, AnalysisInput(text="a b"), options, DEFAULT_LIMITS)
    assert tiny_engine.load(tiny_engine.get_spec("tiny")) is lens


def test_generate_through_the_adapter(tiny_engine, warm_lens):
    options = GenerationOptions(n=2, max_new_tokens=4, temperature=0.7, seed=5)
    result = tiny_engine.generate(warm_lens, AnalysisInput(text="Once upon a time"), options)
    again = tiny_engine.generate(warm_lens, AnalysisInput(text="Once upon a time"), options)
    assert result["prompt_token_ids"] == token_ids("Once upon a time")
    assert len(result["samples"]) == 2 and all(len(s["token_ids"]) == 4 for s in result["samples"])
    assert result["samples"] == again["samples"]  # seeded
    cancelled = tiny_engine.generate(
        warm_lens, AnalysisInput(text="Once upon a time"), options, should_cancel=lambda: True
    )
    assert cancelled["cancelled"] is True and result["cancelled"] is False
    assert all(len(s["token_ids"]) < 4 for s in cancelled["samples"])
