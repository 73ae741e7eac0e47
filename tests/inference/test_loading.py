"""Checkpoint reading (spec §9), registry files, and the errors each bad input gets."""

import shutil
from pathlib import Path

import pytest
import torch

from inference.analysis import analyze
from inference.checkpoints import read_checkpoint
from inference.errors import CheckpointError, ModelLoadError, RegistryError, UnknownLensError
from inference.lens import load_lens
from inference.registry import DEMO_NLA_SPEC, DEMO_SPEC, LensSpec, load_registry
from inference.types import AnalysisInput, AnalysisOptions

from .golden import golden_dir, tiny_spec

TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
]


def _raw(name="tiny_patch2_percur"):
    return torch.load(golden_dir() / "checkpoints" / f"{name}.pt", weights_only=False)


def _save(tmp_path, raw, name="lens.pt"):
    path = tmp_path / name
    torch.save(raw, path)
    return path


def _spec(path, **kw):
    return LensSpec(id="t", name="t", checkpoint=str(path), base_model=str(golden_dir() / "tiny-llama"), **kw)


def test_model_name_resolves_beside_the_checkpoint_folder():
    spec = LensSpec(id="t", name="t", checkpoint=str(golden_dir() / "checkpoints" / "tiny_patch2_percur.pt"))
    lens = load_lens(spec, device="cpu")
    assert lens.base_path.endswith("tiny-llama")
    assert lens.patched_blocks == 2 and lens.ckpt.decoder.per_layer


def test_single_projection_without_patching_reads_as_slot_only():
    ckpt = read_checkpoint(golden_dir() / "checkpoints" / "tiny_nopatch_single.pt")
    assert ckpt.patched_blocks(4) == 0
    assert ckpt.decoder.proj_weight.shape == (1, 64, 64) and not ckpt.decoder.per_layer
    assert ckpt.encoder.soft_prompt_postfix.shape == (2, 64)
    assert ckpt.encoder.proj_weight is None and ckpt.encoder.special_vector is None


def test_compiled_prefixes_and_directories(tmp_path, tiny_lens):
    raw = _raw()
    for part in ("decoder", "encoder"):
        raw["models"][part] = {f"_orig_mod.{k}": v for k, v in raw["models"][part].items()}
    old = _save(tmp_path, _raw(), "old.pt")
    new = _save(tmp_path, raw, "new.pt")
    import os

    os.utime(old, (1, 1))
    assert read_checkpoint(tmp_path).path == new  # a directory means its newest *.pt
    lens = load_lens(_spec(tmp_path), device="cpu")
    torch.testing.assert_close(lens.ckpt.decoder.proj_weight, tiny_lens.ckpt.decoder.proj_weight)
    opts = AnalysisOptions(temperature=1.0, salience=False)
    a = analyze(lens, AnalysisInput(text="Hello there"), opts)
    b = analyze(tiny_lens, AnalysisInput(text="Hello there"), opts)
    assert [r["explanation_token_ids"] for r in a.rows] == [r["explanation_token_ids"] for r in b.rows]


def test_patch_all_true_uses_every_block(tmp_path):
    raw = _raw()
    raw["config"]["trainable_components"]["decoder"]["patch_all_layers"] = True
    w = raw["models"]["decoder"]["proj_weight"]
    raw["models"]["decoder"]["proj_weight"] = torch.cat([w, w])  # 4 blocks need 4 projections
    raw["models"]["decoder"]["proj_bias"] = torch.cat([raw["models"]["decoder"]["proj_bias"]] * 2)
    lens = load_lens(_spec(_save(tmp_path, raw)), device="cpu")
    assert lens.patched_blocks == 4


def test_too_few_projections_for_the_patched_blocks(tmp_path):
    raw = _raw()
    raw["config"]["trainable_components"]["decoder"]["patch_all_layers"] = 3
    with pytest.raises(CheckpointError, match="2 per-layer projections but 3 blocks"):
        load_lens(_spec(_save(tmp_path, raw)), device="cpu")


def test_hidden_size_mismatch_names_the_key_and_both_shapes(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    base = tmp_path / "base32"
    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=49152,
    )
    LlamaForCausalLM(cfg).save_pretrained(base)
    for f in TOKENIZER_FILES:
        shutil.copy(golden_dir() / "tiny-llama" / f, base / f)
    spec = LensSpec(
        id="t",
        name="t",
        checkpoint=str(golden_dir() / "checkpoints" / "tiny_patch2_percur.pt"),
        base_model=str(base),
    )
    with pytest.raises(
        CheckpointError, match=r"decoder.proj_weight has shape \(2, 64, 64\).*needs \(2, 32, 32\)"
    ):
        load_lens(spec, device="cpu")


def test_missing_keys_and_bad_files(tmp_path):
    raw = _raw()
    del raw["models"]["decoder"]["prompt_left_emb"]
    with pytest.raises(CheckpointError, match="prompt_left_emb"):
        read_checkpoint(_save(tmp_path, raw))
    raw = _raw()
    raw["config"]["trainable_components"]["encoder"]["use_projection_layer"] = True
    del raw["models"]["encoder"]["proj.weight"]
    with pytest.raises(CheckpointError, match="use_projection_layer"):
        read_checkpoint(_save(tmp_path, raw))
    with pytest.raises(CheckpointError, match="not a lens checkpoint"):
        read_checkpoint(_save(tmp_path, {"weights": torch.zeros(2)}, "other.pt"))
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes((golden_dir() / "checkpoints" / "tiny_patch2_percur.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no \\*.pt"):
        read_checkpoint(tmp_path / "empty")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_checkpoint_pickling_code_is_refused(tmp_path):
    raw = _raw()
    raw["extra"] = Evil()
    with pytest.raises(CheckpointError, match=r"pickles builtins\.print\b.*refusing"):
        read_checkpoint(_save(tmp_path, raw))


def test_unloadable_base_and_donor(tmp_path):
    ckpt = golden_dir() / "checkpoints" / "tiny_patch2_percur.pt"
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_lens(LensSpec(id="t", name="t", checkpoint=str(ckpt), base_model=str(tmp_path / "nothing")))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError):
        load_lens(LensSpec(id="t", name="t", checkpoint=str(ckpt), base_model=str(tmp_path / "broken")))


def test_a_donor_plays_orig(tiny_lens, tmp_path):
    spec = tiny_spec("tiny_patch2_percur")
    copy = tmp_path / "donor"  # the base's weights in another folder, its config copied: a model of its own
    shutil.copytree(spec.base_model, copy, copy_function=lambda src, dst: Path(dst).symlink_to(src))
    (copy / "config.json").unlink()
    shutil.copyfile(Path(spec.base_model) / "config.json", copy / "config.json")
    donor = LensSpec(**{**spec.__dict__, "donor_model": str(copy)})
    lens = load_lens(donor, device="cpu")
    assert lens.orig is not lens.model
    linked = tmp_path / "linked"  # every file a link to the base's: the same model, shared in memory
    shutil.copytree(spec.base_model, linked, copy_function=lambda src, dst: Path(dst).symlink_to(src))
    assert (
        load_lens(LensSpec(**{**spec.__dict__, "donor_model": str(linked)}), device="cpu").orig is lens.model
    )
    opts = AnalysisOptions(temperature=1.0, salience=False)
    a = analyze(lens, AnalysisInput(text="Hello there"), opts)
    b = analyze(tiny_lens, AnalysisInput(text="Hello there"), opts)
    assert [r["mse"] for r in a.rows] == pytest.approx([r["mse"] for r in b.rows], rel=1e-5)


def test_registry_file(tmp_path, monkeypatch):
    g = golden_dir()
    reg = tmp_path / "lenses.toml"
    reg.write_text(
        f"""
[[lens]]
id = "a"
name = "Lens A"
checkpoint = "{g}/checkpoints/tiny_patch2_percur.pt"
base_model = "{g}/tiny-llama"

[[lens]]
id = "b"
name = "Lens B"
checkpoint = "{g}/checkpoints/tiny_nopatch_single.pt"
base_model = "{g}/tiny-llama"
default = true
"""
    )
    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(reg))
    registry = load_registry()
    assert registry.ids == ["a", "b"] and registry.default.id == "b"
    assert registry.get("a").name == "Lens A"
    with pytest.raises(UnknownLensError, match="unknown lens 'zzz'; this server has: a, b"):
        registry.get("zzz")
    monkeypatch.delenv("LENSWEB_LENS_REGISTRY")
    assert load_registry().lenses == (DEMO_SPEC, DEMO_NLA_SPEC)
    assert load_registry().default == DEMO_SPEC


@pytest.mark.parametrize(
    "body, match",
    [
        ("[[lens]]\nid = 'a'\nname = 'A'\n", "checkpoint"),
        ("[[lens]]\nid = 'a'\nname = 'A'\ncheckpoint = 'demo'\ncolour = 'red'\n", "unknown key"),
        (
            "[[lens]]\nid='a'\nname='A'\ncheckpoint='demo'\n[[lens]]\nid='a'\nname='B'\ncheckpoint='demo'\n",
            "repeats",
        ),
        ("not toml [", "not valid TOML"),
        ("title = 'x'\n", "at least one"),
    ],
)
def test_malformed_registries(tmp_path, body, match):
    reg = tmp_path / "r.toml"
    reg.write_text(body)
    with pytest.raises(RegistryError, match=match):
        load_registry(reg)
