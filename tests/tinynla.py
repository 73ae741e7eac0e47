"""The tests' own tiny Natural Language Autoencoder, built in-process from the tiny test lens' base model and
tokenizer (tests/tinylens.py), in the released NLA format (shared/spec/nla.md §1): a folder holding av/ (the
base copied, with its sidecar) and ar/ (blocks 0..K of the base, a value head, its sidecar). Untrained, as
the golden pairs are: the numbers test plumbing, not explanation quality. Deterministic: same base, same
bytes.

    build_tiny_nla(directory, base) -> TinyNLA      the pair under <directory>/{av,ar}
    tiny_nla() -> TinyNLA                            the session's pair (built once, beside the tiny lens)
    write_registry_with_nla(directory) -> Path       lenses.toml: "tiny" (default) and "tiny-nla"
    nla_registry_path() -> Path                      the session's copy of that registry

Web tests read nothing outside the repository: only the fidelity tests use shared/golden-nla.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.tinylens import HIDDEN, SEED, WORDS, _quiet_transformers

NLA_ID = "tiny-nla"
NLA_NAME = "Tiny test NLA"
NLA_DESCRIPTION = (
    "The tests' own NLA: an untrained verbaliser and reconstructor over the tiny Llama, layer 2."
)
LAYER = 2  # K: the AR keeps blocks 0..2 of the 4
MAX_NEW_TOKENS = 8  # short explanations keep a web test's job in the tens of milliseconds
# A letter to the pre-tokeniser, so "<concept>Z</concept>" always splits as ">", "Z", "<": one token between
# fixed neighbours, and no other "Z" in the prompt (the system turn and template avoid the letter).
INJECTION_CHAR = "Z"
AV_TEMPLATE = (
    "Short explanation of the text in the concept.\n\n<concept>{injection_char}</concept>\n\n"
    "Please write an explanation."
)
AR_TEMPLATE = "Summary of the following text: <text>{explanation}</text> <summary>"
# Texts whose block-K activations set the injection scale and the fve variance constant, as the reference
# derives both from its training activations (spec §1.2, §4).
_WORDS = WORDS.split()
CALIBRATION_TEXTS = [" ".join(_WORDS[i : i + 40]) for i in range(0, len(_WORDS), 40)]


@dataclass(frozen=True)
class TinyNLA:
    folder: Path  # holds av/ and ar/
    base: Path
    variance: float
    injection_scale: float

    @property
    def av(self) -> Path:
        return self.folder / "av"

    @property
    def ar(self) -> Path:
        return self.folder / "ar"


def build_tiny_nla(directory: Path, base: Path) -> TinyNLA:
    """Write <directory>/av and <directory>/ar from the HF directory `base` (the tiny lens' tiny-llama)."""
    import torch
    from transformers import AutoTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    av, ar = directory / "av", directory / "ar"
    tokenizer = AutoTokenizer.from_pretrained(base)
    marker = tokenizer.encode(INJECTION_CHAR, add_special_tokens=False)
    if len(marker) != 1:  # the tokenizer changed under us: say so here, not as a load error later
        raise ValueError(f"{INJECTION_CHAR!r} is {len(marker)} tokens with the tiny tokenizer; expected one")
    left, right = _neighbours(tokenizer, marker[0])
    scale, variance = _calibrate(base, tokenizer)

    shutil.copytree(base, av)  # the AV is the base itself, untrained
    _write_ar(base, ar, torch.Generator().manual_seed(SEED + 7))
    ar_tokenizer = AutoTokenizer.from_pretrained(base)
    # The tiny tokenizer names <|im_start|> as BOS but never prepends it; the reference's AR loader refuses
    # that, and its own SmolLM2 pair drops the BOS in ar/ alone (golden-nla README, work-around 1).
    ar_tokenizer.bos_token = None
    ar_tokenizer.save_pretrained(ar)
    suffix = AR_TEMPLATE.split("{explanation}", 1)[1]
    common = {
        "kind": "nla_model",
        "schema_version": 2,
        "stage": "rl",
        "base_checkpoint": str(base.resolve()),
        "d_model": HIDDEN,
        "tokens": {
            "injection_char": INJECTION_CHAR,
            "injection_token_id": marker[0],
            "injection_left_neighbor_id": left,
            "injection_right_neighbor_id": right,
            "critic_suffix_ids": tokenizer.encode(suffix, add_special_tokens=False)[1:],
        },
        "prompt_templates": {"av": AV_TEMPLATE, "ar": AR_TEMPLATE},
        "trained_on": ["none (untrained test fixture, tests/tinynla.py)"],
        "training": {"nla_baseline_rawvar": variance},
        "extraction_layer_index": LAYER,
    }
    _write_sidecar(av, {**common, "role": "av", "extraction": {"injection_scale": scale, "mse_scale": 8.0}})
    _write_sidecar(
        ar,
        {
            **common,
            "role": "ar",
            "extraction": {"injection_scale": None, "mse_scale": math.sqrt(HIDDEN)},
            "critic": {"extraction_layer_index": LAYER},
        },
    )
    return TinyNLA(folder=directory, base=base, variance=variance, injection_scale=scale)


def _neighbours(tokenizer, marker: int) -> tuple[int, int]:
    """The ids before and after the marker in the canonical AV prompt (the reference's schema computes them
    the same way: render the user turn, encode without special tokens)."""
    content = AV_TEMPLATE.format(injection_char=INJECTION_CHAR)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(rendered, add_special_tokens=False).input_ids
    sites = [p for p, t in enumerate(ids) if t == marker]
    if len(sites) != 1 or sites[0] in (0, len(ids) - 1):
        raise ValueError(f"the marker is at {sites} of the {len(ids)}-token AV prompt; expected once, inside")
    return ids[sites[0] - 1], ids[sites[0] + 1]


def _calibrate(base: Path, tokenizer) -> tuple[float, float]:
    """(injection_scale, variance): the next multiple of 5 above the mean activation norm at block K, and
    the raw-variance baseline of the activations normalised to sqrt(d) (spec §4), 4 significant digits."""
    import torch
    from transformers import AutoModelForCausalLM

    with _quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    acts = []
    with torch.inference_mode():
        for text in CALIBRATION_TEXTS:
            ids = torch.tensor([tokenizer(text).input_ids])
            acts.append(model(ids, output_hidden_states=True).hidden_states[LAYER + 1][0])
    v = torch.cat(acts).float()
    norms = v.norm(dim=-1, keepdim=True)
    scale = 5.0 * math.ceil(norms.mean().item() / 5.0)
    normalised = v / norms.clamp_min(1e-12) * math.sqrt(HIDDEN)
    variance = (normalised - normalised.mean(dim=0)).pow(2).mean().item()
    return scale, float(f"{variance:.4g}")


def _write_ar(base: Path, ar: Path, generator) -> None:
    """Blocks 0..K of the base (no final norm, no LM head: the AR reads block K's output through its value
    head) and a random value head, W ~ N(0, 1/d), applied as W @ h."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    ar.mkdir()
    config = json.loads((base / "config.json").read_text())
    config["num_hidden_layers"] = LAYER + 1
    (ar / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copyfile(base / "generation_config.json", ar / "generation_config.json")
    keep = ("model.embed_tokens.",) + tuple(f"model.layers.{i}." for i in range(LAYER + 1))
    with safe_open(str(base / "model.safetensors"), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in list(f.keys()) if k.startswith(keep)}
    save_file(tensors, str(ar / "model.safetensors"), metadata={"format": "pt"})
    head = torch.randn(HIDDEN, HIDDEN, generator=generator) / math.sqrt(HIDDEN)
    save_file({"weight": head}, str(ar / "value_head.safetensors"))


def _write_sidecar(directory: Path, data: dict) -> None:
    import yaml

    (directory / "nla_meta.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


_built: dict[str, TinyNLA | Path] = {}


def tiny_nla() -> TinyNLA:
    """The session's pair, next to the session's tiny lens (removed with it at the end of the session)."""
    if "nla" not in _built:
        from tests.conftest import tiny_lens

        lens = tiny_lens()
        folder = lens.checkpoint.parent.parent / "tiny-nla"
        if folder.exists():  # a half-built pair from an interrupted build
            shutil.rmtree(folder)
        _built["nla"] = build_tiny_nla(folder, lens.base)
    return _built["nla"]


def nla_table(nla: TinyNLA, lens_id: str = NLA_ID, **extra) -> str:
    """A [[lens]] table for the pair (kind = "nla"); `extra` adds keys (e.g. nla_baseline_rawvar)."""
    lines = [
        "[[lens]]",
        f'id = "{lens_id}"',
        f'name = "{NLA_NAME}"',
        'kind = "nla"',
        f'checkpoint = "{nla.folder}"',
        f'base_model = "{nla.base}"',
        f"max_new_tokens = {MAX_NEW_TOKENS}",
        f'description = "{NLA_DESCRIPTION}"',
        *(f"{key} = {json.dumps(value)}" for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def write_registry_with_nla(directory: Path) -> Path:
    """lenses.toml in `directory` serving the tiny Consistency Lens ("tiny", the default) and the tiny NLA
    ("tiny-nla")."""
    from tests.conftest import write_tiny_registry

    directory.mkdir(parents=True, exist_ok=True)
    return write_tiny_registry(directory, nla_table(tiny_nla()))


def nla_registry_path() -> Path:
    """The session's registry with both lenses, written once beside the pair (for tests that analyse without
    a web request; a web test points LENSWEB_LENS_REGISTRY at its own, write_registry_with_nla)."""
    if "registry" not in _built:
        _built["registry"] = write_registry_with_nla(tiny_nla().folder.parent / "nla-registry")
    return _built["registry"]
