"""Moving a loaded lens of either family between devices (inference.placement, through the engine's door):
the walk reaches every tensor (moved to the meta device, none is left behind), shared weights stay shared and
count once, and a lens moved back gives the same rows. On the tiny lens and the tiny NLA, built in-process."""

from __future__ import annotations

import pytest
import torch

from inference import engine
from inference.placement import _tensors
from inference.registry import LensSpec
from inference.types import AnalysisInput, AnalysisOptions
from tests.conftest import tiny_lens
from tests.tinynla import MAX_NEW_TOKENS, NLA_ID, tiny_nla


def lens_spec() -> LensSpec:
    lens = tiny_lens()
    return LensSpec(id="tiny", name="tiny", checkpoint=str(lens.checkpoint), base_model=str(lens.base))


def nla_spec() -> LensSpec:
    nla = tiny_nla()
    return LensSpec(
        id=NLA_ID,
        name="nla",
        checkpoint=str(nla.folder),
        base_model=str(nla.base),
        kind="nla",
        max_new_tokens=MAX_NEW_TOKENS,
    )


SPECS = {"lens": lens_spec, "nla": nla_spec}


def rows(lens):
    result = engine.analyze(lens, AnalysisInput(text="a b c"), AnalysisOptions(seed=1, salience=False))
    return [row.to_dict() for row in result.rows]


@pytest.mark.parametrize("family", SPECS)
def test_a_lens_moved_away_and_back_gives_the_same_rows(family):
    lens = engine.load(SPECS[family](), device="cpu")
    before = rows(lens)
    assert engine.move(lens, "cpu") is lens and lens.device == torch.device("cpu")
    parameters = sum(p.numel() * p.element_size() for p in next(iter(_modules(lens))).parameters())
    assert engine.nbytes(lens) >= parameters > 0
    assert rows(lens) == before


@pytest.fixture
def own_models(monkeypatch):
    """Models of this test's own: moving them must not move those other loaded lenses share."""
    import weakref

    from inference import loading

    monkeypatch.setattr(loading, "_SHARED", weakref.WeakValueDictionary())


@pytest.mark.parametrize("family", SPECS)
def test_every_tensor_of_a_lens_moves(family, own_models):
    lens = engine.load(SPECS[family](), device="cpu")
    modules = _modules(lens)
    shared_before = {id(m) for m in modules}
    engine.move(lens, "meta")
    tensors = list(_tensors(lens, set()))
    assert tensors and {t.device.type for t in tensors} == {"meta"}, "a tensor was left on the CPU"
    assert lens.device == torch.device("meta")
    assert {id(m) for m in _modules(lens)} == shared_before  # modules move in place: still shared


def _modules(lens) -> list[torch.nn.Module]:
    return [getattr(lens, name) for name in vars(lens) if isinstance(getattr(lens, name), torch.nn.Module)]


def test_lenses_of_one_base_share_its_weights_and_let_go_of_them_together(own_models):
    import dataclasses
    import gc
    import weakref

    first = engine.load(lens_spec(), device="cpu")
    second = engine.load(dataclasses.replace(lens_spec(), id="tiny-b"), device="cpu")
    assert second.model is first.model  # one base in memory, read once
    assert rows(second) == rows(first)
    model = weakref.ref(first.model)
    del first, second
    gc.collect()
    assert model() is None  # the last lens gone, its base goes too
