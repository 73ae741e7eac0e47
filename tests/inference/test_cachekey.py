"""Lens identity and the result-cache key: content, not paths; every result-changing input, nothing else."""

import shutil

import pytest

import inference
from inference.cachekey import result_key
from inference.lens import spec_identity
from inference.registry import LensSpec
from inference.types import AnalysisOptions

from .golden import golden_dir, tiny_spec

IDS, POS = [504, 414, 46682], [0, 1, 2]


def test_spec_identity_matches_the_loaded_lens_and_ignores_the_path(tmp_path, tiny_lens):
    spec = tiny_spec("tiny_patch2_percur")
    assert spec_identity(spec) == tiny_lens.identity
    moved = tmp_path / "copy.pt"
    shutil.copy(spec.checkpoint, moved)
    assert spec_identity(LensSpec(id="x", name="y", checkpoint=str(moved), base_model=spec.base_model)) == (
        tiny_lens.identity
    )


def test_a_changed_checkpoint_changes_the_identity(tmp_path):
    import torch

    spec = tiny_spec("tiny_patch2_percur")
    raw = torch.load(spec.checkpoint, weights_only=False)
    raw["models"]["decoder"]["proj_bias"] += 1e-3
    changed = tmp_path / "changed.pt"
    torch.save(raw, changed)
    assert spec_identity(LensSpec(id="t", name="t", checkpoint=str(changed), base_model=spec.base_model)) != (
        spec_identity(spec)
    )
    other = tiny_spec("tiny_nopatch_single")
    assert spec_identity(other) != spec_identity(spec)
    assert golden_dir()  # the fixtures are present


@pytest.mark.parametrize(
    "change",
    [
        {"best_of_k": 2},
        {"temperature": 0.5},
        {"seed": 43},
        {"salience": False},
        {"kl": True},
        {"logit_lens": True},
        {"keep_candidates": True},
    ],
)
def test_every_option_is_part_of_the_key(change):
    base = result_key("lens", IDS, POS, AnalysisOptions())
    assert result_key("lens", IDS, POS, AnalysisOptions(**change)) != base
    assert result_key("lens", IDS, POS, AnalysisOptions()) == base


def test_lens_tokens_positions_and_engine_version_are_part_of_the_key(monkeypatch):
    base = result_key("lens", IDS, POS, AnalysisOptions())
    assert result_key("other", IDS, POS, AnalysisOptions()) != base
    assert result_key("lens", IDS[:2], POS[:2], AnalysisOptions()) != base
    assert result_key("lens", IDS, POS[1:], AnalysisOptions(last_n_messages=1)) != base
    monkeypatch.setattr(inference.cachekey, "ENGINE_VERSION", "999")
    assert result_key("lens", IDS, POS, AnalysisOptions()) != base
