"""The lens registry: which lenses a deployment serves (TOML named by LENSWEB_LENS_REGISTRY, else the demo)."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import RegistryError, UnknownLensError
from .families import KINDS

DEMO_CHECKPOINT = "demo"
LENS_KINDS = KINDS  # a Consistency Lens checkpoint ("lens"); a Natural Language Autoencoder pair ("nla")
NLA_ONLY_KEYS = ("av", "ar", "nla_baseline_rawvar", "max_new_tokens")
# the untrained demo AV never stops on its own: 32 tokens a row, the golden SmolLM2 pair's bound
DEMO_NLA_MAX_NEW_TOKENS = 32
QUANTS = ("", "int8")  # a lens' `quant`, and LENSWEB_CPU_QUANT (inference.quant applies them)


@dataclass(frozen=True)
class LensSpec:
    id: str
    name: str
    checkpoint: str  # a .pt path, a directory (newest *.pt), or "demo"
    base_model: str | None = None  # HF directory or name; overrides the checkpoint's config["model_name"]
    donor_model: str | None = None  # a fine-tune of the same architecture that plays orig
    default: bool = False
    description: str = ""
    kind: str = "lens"  # "nla": checkpoint is a folder holding av/ and ar/, or av and ar name them
    av: str | None = None  # NLA: the activation verbaliser's directory
    ar: str | None = None  # NLA: the activation reconstructor's directory
    nla_baseline_rawvar: float | None = None  # NLA: fve_nrm's variance constant (else the sidecar's)
    max_new_tokens: int | None = None  # NLA: the longest explanation (else inference.nla's default)
    # "int8": 8-bit weights for this lens wherever it runs (inference.quant: bitsandbytes on CUDA, torch's
    # dynamic int8 on a CPU); "": as LENSWEB_CPU_QUANT says on a CPU, full precision on a GPU
    quant: str = ""
    untrained: bool = False  # never trained (the demo lens and pair): every page says so

    @property
    def is_demo(self) -> bool:
        return self.checkpoint == DEMO_CHECKPOINT

    @property
    def is_nla(self) -> bool:
        return self.kind == "nla"


DEMO_SPEC = LensSpec(
    id="demo-smollm2-l8",
    name="Demo: SmolLM2-135M-Instruct, layer 8 (untrained)",
    checkpoint=DEMO_CHECKPOINT,
    default=True,
    untrained=True,
    description=(
        "An untrained, Patchscope-style lens: the decoder and encoder prompts are the token embeddings of a "
        "few-shot dictionary prompt (chosen by measurement, bench/results/demo-prompts.md) and both "
        "projections are the identity. Explanations show what SmolLM2 says about its own layer-8 "
        "activation, not what a trained lens would."
    ),
)

DEMO_NLA_SPEC = LensSpec(
    id="demo-nla-smollm2-l8",
    name="Demo NLA: SmolLM2-135M-Instruct, layer 8 (untrained)",
    checkpoint=DEMO_CHECKPOINT,
    kind="nla",
    untrained=True,
    max_new_tokens=DEMO_NLA_MAX_NEW_TOKENS,
    description=(
        "An untrained Natural Language Autoencoder pair built from the demo base as the research code's "
        "SmolLM2 fixture is: the verbaliser is SmolLM2 itself, the reconstructor its first 9 blocks with a "
        "fixed random head. Explanations show what SmolLM2 says about an injected layer-8 activation and "
        "reconstruct nothing (fve below 0); try it for the workflow, not for what it says."
    ),
)
DEMO_SPECS = (DEMO_SPEC, DEMO_NLA_SPEC)  # what a server without a registry file serves


@dataclass(frozen=True)
class LensRegistry:
    lenses: tuple[LensSpec, ...]

    @property
    def default(self) -> LensSpec:
        return next((spec for spec in self.lenses if spec.default), self.lenses[0])

    def get(self, lens_id: str | None) -> LensSpec:
        if lens_id is None:
            return self.default
        for spec in self.lenses:
            if spec.id == lens_id:
                return spec
        known = ", ".join(spec.id for spec in self.lenses)
        raise UnknownLensError(f"unknown lens {lens_id!r}; this server has: {known}")

    @property
    def ids(self) -> list[str]:
        return [spec.id for spec in self.lenses]


def load_registry(path: str | Path | None = None) -> LensRegistry:
    """Read the registry file (or LENSWEB_LENS_REGISTRY); without either, the demo lens and the demo NLA."""
    path = path or os.environ.get("LENSWEB_LENS_REGISTRY") or None
    if path is None:
        return LensRegistry(DEMO_SPECS)
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RegistryError(f"lens registry {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"lens registry {path} is not valid TOML: {exc}") from None
    entries = data.get("lens")
    if not isinstance(entries, list) or not entries:
        raise RegistryError(f"lens registry {path} needs at least one [[lens]] table")
    specs = tuple(_spec_from_table(entry, i, path.parent) for i, entry in enumerate(entries))
    _check_unique(specs, path)
    return LensRegistry(specs)


def _spec_from_table(entry: dict, index: int, base_dir: Path) -> LensSpec:
    where = f"[[lens]] #{index + 1}"
    if entry.get("kind", "lens") != "lens":
        return _nla_spec_from_table(entry, where, base_dir)
    stray = [key for key in NLA_ONLY_KEYS if key in entry]
    if stray:
        raise RegistryError(f'{where}: {", ".join(stray)} apply to kind = "nla" only')
    for key in ("id", "name", "checkpoint"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise RegistryError(f"{where} needs a non-empty string '{key}'")
    allowed = set(LensSpec.__dataclass_fields__)
    unknown = set(entry) - allowed
    if unknown:
        raise RegistryError(f"{where} ({entry['id']}) has unknown key(s): {', '.join(sorted(unknown))}")
    checkpoint = entry["checkpoint"]
    if checkpoint != DEMO_CHECKPOINT:
        checkpoint = str(_relative_to(base_dir, checkpoint))
    elif entry.get("base_model"):
        raise RegistryError(f"{where}: the demo lens brings its own base model; drop 'base_model'")
    if checkpoint != DEMO_CHECKPOINT and not entry.get("base_model") and entry.get("base_model") is not None:
        raise RegistryError(f"{where}: 'base_model' must not be empty")
    return LensSpec(
        id=entry["id"],
        name=entry["name"],
        checkpoint=checkpoint,
        base_model=_maybe_path(base_dir, entry.get("base_model")),
        donor_model=_maybe_path(base_dir, entry.get("donor_model")),
        default=bool(entry.get("default", False)),
        description=str(entry.get("description", "")),
        quant=_quant(entry, where),
        untrained=_untrained(entry, where, checkpoint == DEMO_CHECKPOINT),
    )


def _untrained(entry: dict, where: str, demo: bool) -> bool:
    """`untrained = true` labels a lens that was never trained; the demo lens and pair always are."""
    value = entry.get("untrained", demo)
    if not isinstance(value, bool):
        raise RegistryError(f"{where}: 'untrained' is {value!r}; expected true or false")
    if demo and not value:
        raise RegistryError(f"{where}: the demo lens is untrained; drop 'untrained = false'")
    return value


def _quant(entry: dict, where: str) -> str:
    quant = entry.get("quant", "")
    if quant not in QUANTS:
        raise RegistryError(f"{where}: 'quant' is {quant!r}; expected \"int8\" (8-bit weights) or none")
    return quant


def _nla_spec_from_table(entry: dict, where: str, base_dir: Path) -> LensSpec:
    """An NLA pair: `checkpoint` a folder holding av/ and ar/, or `av` and `ar` (paths relative to the
    registry file); `base_model` the model explained (else the AV sidecar's base_checkpoint)."""
    if entry.get("kind") not in LENS_KINDS:
        raise RegistryError(f'{where}: kind is {entry.get("kind")!r}; expected "lens" or "nla"')
    for key in ("id", "name"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise RegistryError(f"{where} needs a non-empty string '{key}'")
    where = f"{where} ({entry['id']})"
    unknown = set(entry) - set(LensSpec.__dataclass_fields__)
    if unknown:
        raise RegistryError(f"{where} has unknown key(s): {', '.join(sorted(unknown))}")
    if entry.get("donor_model") is not None:
        raise RegistryError(f"{where}: an NLA explains its base model; drop 'donor_model'")
    for key in ("checkpoint", "av", "ar", "base_model"):
        if key in entry and (not isinstance(entry[key], str) or not entry[key]):
            raise RegistryError(f"{where}: '{key}' must be a non-empty string")
    has_pair = "av" in entry or "ar" in entry
    if "checkpoint" in entry and has_pair:
        raise RegistryError(
            f"{where}: give either 'checkpoint' (a folder holding av/ and ar/) or 'av' and 'ar'"
        )
    if has_pair and not ("av" in entry and "ar" in entry):
        raise RegistryError(f"{where}: give both 'av' and 'ar'")
    if not has_pair and "checkpoint" not in entry:
        raise RegistryError(f"{where} needs 'checkpoint' (a folder holding av/ and ar/) or 'av' and 'ar'")
    demo = entry.get("checkpoint") == DEMO_CHECKPOINT  # the demo pair, built from the demo base
    if demo and entry.get("base_model"):
        raise RegistryError(f"{where}: the demo pair brings its own base model; drop 'base_model'")
    var = entry.get("nla_baseline_rawvar")
    if var is not None and (
        isinstance(var, bool) or not isinstance(var, int | float) or not math.isfinite(var) or var <= 0
    ):
        raise RegistryError(f"{where}: 'nla_baseline_rawvar' is {var!r}; expected a positive number")
    steps = entry.get("max_new_tokens")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise RegistryError(f"{where}: 'max_new_tokens' is {steps!r}; expected a whole number >= 1")
    return LensSpec(
        id=entry["id"],
        name=entry["name"],
        checkpoint=(
            DEMO_CHECKPOINT
            if demo
            else str(_relative_to(base_dir, entry["checkpoint"]))
            if "checkpoint" in entry
            else ""
        ),
        base_model=_maybe_path(base_dir, entry.get("base_model")),
        default=bool(entry.get("default", False)),
        description=str(entry.get("description", "")),
        kind="nla",
        av=str(_relative_to(base_dir, entry["av"])) if has_pair else None,
        ar=str(_relative_to(base_dir, entry["ar"])) if has_pair else None,
        nla_baseline_rawvar=None if var is None else float(var),
        max_new_tokens=DEMO_NLA_MAX_NEW_TOKENS if demo and steps is None else steps,
        quant=_quant(entry, where),
        untrained=_untrained(entry, where, demo),
    )


def _relative_to(base_dir: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def _maybe_path(base_dir: Path, value: str | None) -> str | None:
    """Relative paths resolve against the registry file; a value that is no existing path stays a hub name."""
    if not value:
        return None
    candidate = _relative_to(base_dir, value)
    return str(candidate) if candidate.exists() else value


def _check_unique(specs: tuple[LensSpec, ...], path: Path) -> None:
    ids = [spec.id for spec in specs]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise RegistryError(f"lens registry {path} repeats id(s): {', '.join(sorted(dupes))}")
    if sum(spec.default for spec in specs) > 1:
        raise RegistryError(f"lens registry {path} marks more than one lens as default")
