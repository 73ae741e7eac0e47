"""Loading an NLA pair: every check of the format, each on a copy of the tiny pair broken in one place, and
the registry's `kind = "nla"` entries. The checks run before any weight loads, so these tests are quick."""

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from inference import engine
from inference.errors import CheckpointError, RegistryError
from inference.nla import NLALens, load_nla
from inference.nla_format import SIDECAR
from inference.registry import LensSpec, load_registry

from .nla_fixtures import copy_pair, golden_dir, nla_golden_dir


@pytest.fixture
def pair(tmp_path):
    return copy_pair(nla_golden_dir() / "tiny", tmp_path / "pair")


def _spec(path, **extra) -> LensSpec:
    return LensSpec(
        id="x",
        name="x",
        checkpoint=str(path),
        base_model=str(golden_dir() / "tiny-llama"),
        kind="nla",
        **extra,
    )


def _edit_sidecar(pair, side, change):
    path = pair / side / SIDECAR
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True))


def _edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _refused(pair, *patterns, **extra):
    with pytest.raises(CheckpointError) as info:
        load_nla(_spec(pair, **extra), device="cpu")
    for pattern in patterns:
        assert re.search(pattern, str(info.value)), str(info.value)
    return str(info.value)


def _set(dotted, value):
    def change(data):
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return change


def test_marker_that_is_not_one_token_is_refused(pair):
    # no character of U+3200-U+33FF is a single SmolLM2 token (golden-nla README)
    _edit_sidecar(pair, "av", _set("tokens.injection_char", "\u3200"))
    _refused(
        pair,
        r"av/nla_meta\.yaml: tokens\.injection_char '\u3200' encodes to \[\d+(, \d+)+\]",
        r"expected exactly one token, tokens\.injection_token_id = 45494",
    )


def test_marker_id_that_does_not_match_the_character_is_refused(pair):
    _edit_sidecar(pair, "av", _set("tokens.injection_token_id", 45495))
    _refused(pair, r"encodes to \[45494\]", r"tokens\.injection_token_id = 45495")


@pytest.mark.parametrize(
    "key, where, actual",
    [("injection_left_neighbor_id", "before", 46), ("injection_right_neighbor_id", "after", 9617)],
)
def test_wrong_neighbours_are_refused(pair, key, where, actual):
    _edit_sidecar(pair, "av", _set(f"tokens.{key}", 47))
    _refused(
        pair,
        rf"tokens\.{key} is 47 but the token {where} the marker \(position 117\) in the AV prompt is {actual}",
        r"expected 47 there",
    )


def test_marker_twice_in_the_prompt_is_refused(pair):
    def twice(data):
        data["prompt_templates"]["av"] += " <concept>{injection_char}</concept>"

    _edit_sidecar(pair, "av", twice)
    _refused(pair, r"holds tokens\.injection_token_id 45494 2 times; expected exactly once")


def test_ar_layer_count_other_than_k_plus_one_is_refused(pair):
    _edit_json(pair / "ar" / "config.json", _set("num_hidden_layers", 4))
    _refused(pair, r"ar/config\.json: num_hidden_layers is 4; expected K\+1 = 3", r"K = 2")


def test_extraction_layer_the_ar_does_not_end_at_is_refused(pair):
    _edit_sidecar(pair, "ar", _set("critic.extraction_layer_index", 1))
    _edit_sidecar(pair, "ar", _set("extraction_layer_index", 1))
    _edit_sidecar(pair, "av", _set("extraction_layer_index", 1))
    _refused(pair, r"num_hidden_layers is 3; expected K\+1 = 2")


def test_sidecars_that_disagree_on_k_are_refused(pair):
    _edit_sidecar(pair, "av", _set("extraction_layer_index", 1))
    _refused(pair, r"av/nla_meta\.yaml: extraction_layer_index is 1; expected 2")


def test_d_model_mismatch_is_refused(pair):
    _edit_sidecar(pair, "av", _set("d_model", 65))
    _refused(pair, r"av/nla_meta\.yaml: d_model is 65 but \S+av/config\.json has hidden_size 64; expected 64")


def test_ar_d_model_other_than_the_avs_is_refused(pair):
    _edit_sidecar(pair, "ar", _set("d_model", 65))
    _edit_json(pair / "ar" / "config.json", _set("hidden_size", 65))
    _refused(pair, r"ar/nla_meta\.yaml: d_model is 65; expected 64, the AV's")


def test_base_model_of_another_width_is_refused(pair, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"hidden_size": 32, "num_hidden_layers": 4}))
    with pytest.raises(CheckpointError, match=r"has hidden_size 32; expected d_model = 64"):
        load_nla(LensSpec(id="x", name="x", checkpoint=str(pair), base_model=str(base), kind="nla"))


@pytest.mark.parametrize(
    "tensors, message",
    [
        ({"weight": torch.zeros(64, 32)}, r"weight has shape \[64, 32\]; expected \[64, 64\]"),
        ({"weight": torch.zeros(64, 64), "bias": torch.zeros(64)}, r"expected exactly one, 'weight'"),
    ],
)
def test_value_head_of_the_wrong_shape_is_refused(pair, tensors, message):
    from safetensors.torch import save_file

    head = pair / "ar" / "value_head.safetensors"
    head.unlink()
    save_file(tensors, str(head))
    _refused(pair, message)


@pytest.mark.parametrize(
    "side, change, message",
    [
        ("av", _set("role", "ar"), r"role is 'ar'; the av directory needs role 'av' or 'actor'"),
        ("ar", _set("role", "actor"), r"role is 'actor'; the ar directory needs role 'ar' or 'critic'"),
        ("ar", _set("kind", "nla_dataset"), r"kind is 'nla_dataset'; expected 'nla_model'"),
        ("av", _set("extraction.injection_scale", None), r"extraction\.injection_scale is None; expected a"),
        ("ar", _set("extraction.mse_scale", None), r"extraction\.mse_scale is None; .*sqrt\(d_model\) = 8"),
        (
            "ar",
            _set("prompt_templates.ar", "Summary: <text>"),
            r"prompt_templates\.ar has no \{explanation\}",
        ),
        ("av", _set("training.nla_baseline_rawvar", 0.5), r"nla_baseline_rawvar is 0\.5; expected 0\.9065"),
        ("ar", _set("critic.extraction_layer_index", None), r"names no extraction layer"),
        (
            "ar",
            _set("tokens.critic_suffix_ids", [1, 2]),
            r"critic_suffix_ids is \[1, 2\] but the AR tokenizer gives \[2692, 46, 2067, 18347, 46\]",
        ),
    ],
)
def test_sidecar_fields_are_checked(pair, side, change, message):
    if "critic.extraction_layer_index" in message or "extraction layer" in message:
        _edit_sidecar(pair, side, lambda d: d.pop("extraction_layer_index"))
    _edit_sidecar(pair, side, change)
    _refused(pair, message)


def test_missing_sidecar_is_refused(pair):
    (pair / "ar" / SIDECAR).unlink()
    _refused(pair, r"NLA ar directory \S+ has no nla_meta\.yaml")


def test_ar_tokenizer_that_names_a_bos_it_does_not_add_is_refused(pair):
    # the SmolLM2 tokenizer names <|im_start|> as BOS and never adds it (README "Work-around 1")
    _edit_json(pair / "ar" / "tokenizer_config.json", _set("bos_token", "<|im_start|>"))
    _refused(pair, r"names bos_token_id 1 but does not prepend it", r"set bos_token to null")


def test_checks_run_before_any_weight_loads(pair):
    (pair / "ar" / "model.safetensors").unlink()
    (pair / "av" / "model.safetensors").unlink()
    _edit_sidecar(pair, "av", _set("tokens.injection_left_neighbor_id", 47))
    _refused(pair, r"injection_left_neighbor_id is 47")


# --- loading through the engine's doors, and the registry -------------------------------------------------------


def test_the_engines_load_tokenizer_and_identity_pick_the_family_by_kind(pair):
    spec = _spec(pair)
    nla = engine.load(spec, device="cpu")
    assert isinstance(nla, NLALens) and nla.kind == "nla"
    assert nla.metadata()["kind"] == "nla" and nla.metadata()["layer"] == 2
    assert nla.identity == engine.identity(spec)
    assert engine.tokenizer(spec).encode("The Eiffel Tower") == nla.tokenizer.encode("The Eiffel Tower")
    # the variance constant and the explanation bound change rows, so they are part of the identity
    assert engine.identity(_spec(pair, nla_baseline_rawvar=1.5)) != nla.identity
    assert engine.identity(_spec(pair, max_new_tokens=8)) != nla.identity
    _edit_sidecar(pair, "av", _set("extraction.injection_scale", 60.0))
    assert engine.identity(spec) != nla.identity


def test_variance_constant_comes_from_the_sidecar_or_the_registry(pair):
    assert load_nla(_spec(pair), device="cpu").cfg.variance == 0.9065
    nla = load_nla(_spec(pair, nla_baseline_rawvar=2.0), device="cpu")
    assert nla.cfg.variance == 2.0 and nla.metadata()["fve_variance_source"] == "registry"
    for side in ("av", "ar"):
        _edit_sidecar(pair, side, lambda d: d["training"].pop("nla_baseline_rawvar"))
    nla = load_nla(_spec(pair), device="cpu")
    assert nla.cfg.variance is None and nla.metadata()["fve_variance"] is None


def test_base_model_defaults_to_the_sidecars_base_checkpoint():
    nla = load_nla(LensSpec(id="t", name="t", checkpoint=str(nla_golden_dir() / "tiny"), kind="nla"), "cpu")
    assert Path(nla.paths["base"]).resolve() == (golden_dir() / "tiny-llama").resolve()
    assert nla.metadata()["base_model"] == "tiny-llama"  # users see the folder's name, not the server's path
    assert math.isclose(nla.cfg.mse_scale, 8.0) and nla.cfg.injection_scale == 50.0


def _registry(tmp_path, body):
    path = tmp_path / "lenses.toml"
    path.write_text(body)
    return load_registry(path)


def test_registry_reads_nla_entries_in_both_forms(tmp_path):
    reg = _registry(
        tmp_path,
        """
[[lens]]
id = "cl"
name = "A lens"
checkpoint = "lens.pt"

[[lens]]
id = "folder"
name = "NLA folder"
kind = "nla"
checkpoint = "pairs/qwen"
nla_baseline_rawvar = 0.7335
max_new_tokens = 200

[[lens]]
id = "pair"
name = "NLA pair"
kind = "nla"
av = "pairs/av"
ar = "/abs/ar"
base_model = "Qwen/Qwen2.5-7B-Instruct"
""",
    )
    cl, folder, named = reg.lenses
    assert cl == LensSpec(id="cl", name="A lens", checkpoint=str(tmp_path / "lens.pt"))
    assert cl.kind == "lens" and not cl.is_nla
    assert folder.is_nla and folder.checkpoint == str(tmp_path / "pairs/qwen") and folder.av is None
    assert (folder.nla_baseline_rawvar, folder.max_new_tokens) == (0.7335, 200)
    assert named.is_nla and named.checkpoint == "" and named.av == str(tmp_path / "pairs/av")
    assert named.ar == "/abs/ar" and named.base_model == "Qwen/Qwen2.5-7B-Instruct"


@pytest.mark.parametrize(
    "body, message",
    [
        ('kind = "nla"\ncheckpoint = "p"\nav = "a"\nar = "b"', r"either 'checkpoint' .* or 'av' and 'ar'"),
        ('kind = "nla"\nav = "a"', r"give both 'av' and 'ar'"),
        ('kind = "nla"', r"needs 'checkpoint' \(a folder holding av/ and ar/\) or 'av' and 'ar'"),
        ('kind = "nla"\ncheckpoint = "p"\ndonor_model = "d"', r"drop 'donor_model'"),
        ('kind = "nla"\ncheckpoint = "demo"\nbase_model = "b"', r"the demo pair brings its own base model"),
        ('kind = "nla"\ncheckpoint = "demo"\nuntrained = false', r"the demo lens is untrained"),
        (
            'kind = "nla"\ncheckpoint = "p"\nuntrained = "yes"',
            r"'untrained' is 'yes'; expected true or false",
        ),
        (
            'kind = "nla"\ncheckpoint = "p"\nnla_baseline_rawvar = -1',
            r"'nla_baseline_rawvar' is -1; expected",
        ),
        ('kind = "nla"\ncheckpoint = "p"\nmax_new_tokens = 0', r"'max_new_tokens' is 0; expected a whole"),
        ('kind = "nla"\ncheckpoint = "p"\nsurprise = 1', r"unknown key\(s\): surprise"),
        ('kind = "sae"\ncheckpoint = "p"', r"kind is 'sae'; expected \"lens\" or \"nla\""),
        ('checkpoint = "p.pt"\nav = "a"', r'av apply to kind = "nla" only'),
    ],
)
def test_registry_refuses_malformed_nla_entries(tmp_path, body, message):
    with pytest.raises(RegistryError, match=message):
        _registry(tmp_path, f'[[lens]]\nid = "x"\nname = "X"\n{body}\n')
