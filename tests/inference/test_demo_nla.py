"""The demo NLA pair (inference.demo_nla): built from the demo base as shared/golden-nla's SmolLM2 pair is, served
by default beside the demo lens, labelled untrained. test_nla_golden.py's "demo" cases check its outputs against
that pair's goldens; these check what it is made of, how it is registered and that its AV is the base in memory.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from inference.analysis import analyze
from inference.demo_nla import demo_nla_folder, ensure_demo_nla, value_head
from inference.families import family_of
from inference.nla_format import SIDECAR, VALUE_HEAD, parse_config, read_sidecar
from inference.placement import nbytes
from inference.registry import DEMO_NLA_SPEC, DEMO_SPEC, load_registry
from inference.types import AnalysisInput, AnalysisOptions

from .golden import cached_lens
from .nla_fixtures import cached_nla, nla_golden_dir


@pytest.fixture(scope="module")
def demo_pair(smol_base):
    return ensure_demo_nla(smol_base)


def test_it_is_the_golden_smollm2_pair(demo_pair, smol_base):
    """Same sidecar settings, same value head bit for bit, same AR blocks and tokenizer rule as the reference's
    SmolLM2 fixture (whose weights are not shipped)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    golden = nla_golden_dir() / "smol"
    ours = parse_config(
        read_sidecar(demo_pair / "av", "av"),
        read_sidecar(demo_pair / "ar", "ar"),
        demo_pair / "av",
        demo_pair / "ar",
    )
    theirs = parse_config(
        read_sidecar(golden / "av", "av"), read_sidecar(golden / "ar", "ar"), golden / "av", golden / "ar"
    )
    assert ours == theirs
    assert torch.equal(
        load_file(str(demo_pair / "ar" / VALUE_HEAD))["weight"],
        load_file(str(golden / "ar" / VALUE_HEAD))["weight"],
    )
    assert torch.equal(value_head(), load_file(str(golden / "ar" / VALUE_HEAD))["weight"])
    ar_config = json.loads((demo_pair / "ar" / "config.json").read_text())
    assert (
        ar_config["num_hidden_layers"]
        == json.loads((golden / "ar" / "config.json").read_text())["num_hidden_layers"]
    )
    with safe_open(str(demo_pair / "ar" / "model.safetensors"), framework="pt") as f:
        blocks = {int(k.split(".")[2]) for k in f.keys() if k.startswith("model.layers.")}  # noqa: SIM118
        assert blocks == set(range(9)) and not any(k.startswith("lm_head") for k in f.keys())  # noqa: SIM118
    assert json.loads((demo_pair / "ar" / "tokenizer_config.json").read_text())["bos_token"] is None
    # the AV is the base: links to its files, nothing copied
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (demo_pair / "av" / name).resolve() == (smol_base / name).resolve()


def test_it_is_built_once_beside_the_base_and_atomically(smol_base, demo_pair):
    assert (
        demo_pair == demo_nla_folder(smol_base.resolve()) and demo_pair.parent == smol_base.resolve().parent
    )
    mtime = (demo_pair / "ar" / SIDECAR).stat().st_mtime_ns
    assert (
        ensure_demo_nla(smol_base) == demo_pair and (demo_pair / "ar" / SIDECAR).stat().st_mtime_ns == mtime
    )
    assert not list(demo_pair.parent.glob(f".{demo_pair.name}-*"))  # no staging folder left behind


def test_a_fresh_cache_gets_its_own_pair(tmp_path, smol_base):
    """Built from whichever base it is given, into that base's cache, with readable files."""
    base = tmp_path / smol_base.name
    base.mkdir()
    for f in smol_base.iterdir():
        (base / f.name).symlink_to(f.resolve())
    folder = ensure_demo_nla(base)
    assert folder.parent == base.resolve().parent and (folder / "av" / SIDECAR).is_file()
    assert read_sidecar(folder / "av", "av")["base_checkpoint"] == base.name
    assert (folder / "ar" / VALUE_HEAD).stat().st_mode & 0o044 == 0o044
    assert (folder / "ar").stat().st_mode & 0o055 == 0o055


def test_served_by_default_and_labelled_untrained(monkeypatch):
    monkeypatch.delenv("LENSWEB_LENS_REGISTRY", raising=False)
    registry = load_registry()
    assert registry.ids == [DEMO_SPEC.id, DEMO_NLA_SPEC.id] and registry.default == DEMO_SPEC
    assert DEMO_NLA_SPEC.is_nla and DEMO_NLA_SPEC.untrained and DEMO_SPEC.untrained
    assert "untrained" in DEMO_NLA_SPEC.name


def test_registry_entry_for_the_demo_pair(tmp_path):
    reg = tmp_path / "r.toml"
    reg.write_text(
        '[[lens]]\nid = "n"\nname = "N"\nkind = "nla"\ncheckpoint = "demo"\n'
        '[[lens]]\nid = "m"\nname = "M"\nkind = "nla"\ncheckpoint = "demo"\nmax_new_tokens = 8\n'
        '[[lens]]\nid = "t"\nname = "T"\ncheckpoint = "x.pt"\nuntrained = true\n'
    )
    n, m, t = load_registry(reg).lenses
    assert n.is_demo and n.is_nla and n.untrained and n.max_new_tokens == DEMO_NLA_SPEC.max_new_tokens
    assert m.max_new_tokens == 8
    assert t.untrained and not t.is_demo


@pytest.mark.slow
def test_loaded_pair_shares_the_base_and_says_untrained(smol_base):
    nla = cached_nla(DEMO_NLA_SPEC)
    assert nla.av is nla.base  # one model in memory: the AV's files are the base's
    assert nla.ar is not nla.base and len(nla.ar.model.layers) == 9
    meta = nla.metadata()
    assert meta["untrained"] is True and meta["checkpoint"] == "demo" and meta["max_new_tokens"] == 32
    assert nla.identity == family_of(DEMO_NLA_SPEC).identity(DEMO_NLA_SPEC)
    other = dataclasses.replace(DEMO_NLA_SPEC, max_new_tokens=8)
    assert family_of(other).identity(other) != nla.identity  # settings change the rows
    demo = cached_lens(DEMO_SPEC)  # the demo lens: the same base, one model in memory
    assert demo.model is nla.base
    base_bytes = nbytes(nla.base)
    assert (
        nbytes((demo, nla)) == nbytes(demo) + nbytes(nla) - base_bytes
    )  # the worker's CPU cache counts it once
    result = analyze(nla, AnalysisInput(text="Paris is"), AnalysisOptions(salience=False))
    assert result.metadata["untrained"] is True and len(result.rows) == 2
    assert all(len(r["explanation_token_ids"]) <= 32 and r["fve_nrm"] < 0.5 for r in result.rows)
