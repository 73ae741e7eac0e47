"""The NLA checkpoint format (shared/spec/nla.md §1–§4): sidecars, load-time checks, injection sites, parsing.

No model weights here: everything in this module runs on the sidecars, the configs and the tokenizers, so a
broken pair is refused before gigabytes load. Every error names the file, the field and the value expected.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError

SIDECAR = "nla_meta.yaml"
VALUE_HEAD = "value_head.safetensors"
STOP_STRING = "</explanation>"
INJECT_SLOT = "{injection_char}"
EXPLANATION_SLOT = "{explanation}"
# Roles as released (av/ar), as trained (actor/critic) and as Neuronpedia names them (spec §1.2).
AV_ROLES = ("av", "actor", "verbalizer")
AR_ROLES = ("ar", "critic", "reconstructor")
# Models whose embedding module multiplies by sqrt(d); a raw row lookup skips it (spec §2.2.3).
SCALED_EMBEDDING_TYPES = ("gemma", "gemma2", "gemma3", "gemma3_text", "t5")
# R's client parser: the first tagged span, whitespace-trimmed (spec §2.4).
_EXPLANATION = re.compile(r"<explanation>\s*(.*?)\s*</explanation>", re.DOTALL)


@dataclass(frozen=True)
class NLAConfig:
    """What inference needs of the two sidecars, checked and resolved."""

    layer: int  # K: the AR holds blocks 0..K; the activation is the output of block K
    d_model: int  # the AV sidecar's
    ar_d_model: int  # the AR sidecar's: check_shapes holds both to the models and to each other
    injection_scale: float
    mse_scale: float
    injection_char: str
    injection_token_id: int
    left_neighbor_id: int
    right_neighbor_id: int
    critic_suffix_ids: tuple[int, ...] | None
    av_template: str
    ar_template: str
    variance: float | None  # the fve_nrm baseline V; None: fve_nrm is not reported
    variance_source: str | None


def read_sidecar(directory: Path, side: str) -> dict[str, Any]:
    """`side` is "av" or "ar"; the sidecar must be an nla_model of that role."""
    path = directory / SIDECAR
    if not path.is_file():
        raise CheckpointError(f"NLA {side} directory {directory} has no {SIDECAR}")
    import yaml  # a transformers dependency

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a mapping of fields, got {type(data).__name__}")
    if data.get("kind") != "nla_model":
        raise CheckpointError(f"{path}: kind is {data.get('kind')!r}; expected 'nla_model'")
    roles = AV_ROLES if side == "av" else AR_ROLES
    if data.get("role") not in roles:
        raise CheckpointError(
            f"{path}: role is {data.get('role')!r}; the {side} directory needs role "
            + " or ".join(repr(r) for r in roles)
        )
    return data


def field(data: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def parse_config(
    av: dict[str, Any],
    ar: dict[str, Any],
    av_dir: Path,
    ar_dir: Path,
    registry_variance: float | None = None,
) -> NLAConfig:
    """Resolve and type-check the fields inference reads; AV fields from the AV sidecar, AR fields (K, the
    AR template, mse_scale) from the AR sidecar, as the reference's two loaders do."""
    av_path, ar_path = av_dir / SIDECAR, ar_dir / SIDECAR
    d_model = _int(av, "d_model", av_path, minimum=1)
    ar_d = _int(ar, "d_model", ar_path, minimum=1)
    layer = _layer(ar, ar_path)
    av_layer = av.get("extraction_layer_index")
    if av_layer is not None and av_layer != layer:
        raise CheckpointError(
            f"{av_path}: extraction_layer_index is {av_layer!r}; expected {layer} (the AR's extraction layer)"
        )
    scale = field(av, "extraction.injection_scale")
    if not _positive_number(scale):
        raise CheckpointError(
            f"{av_path}: extraction.injection_scale is {scale!r}; expected a positive number (the L2 norm "
            "the activation is rescaled to before injection)"
        )
    mse_scale = _mse_scale(ar, ar_path, d_model)
    char = field(av, "tokens.injection_char")
    if not isinstance(char, str) or not char:
        raise CheckpointError(f"{av_path}: tokens.injection_char is {char!r}; expected the marker character")
    suffix = field(ar, "tokens.critic_suffix_ids")
    if suffix is not None and not (isinstance(suffix, list) and all(_is_int(i) for i in suffix)):
        raise CheckpointError(f"{ar_path}: tokens.critic_suffix_ids is {suffix!r}; expected a list of ids")
    variance, source = _variance(av, ar, av_path, ar_path, registry_variance)
    return NLAConfig(
        layer=layer,
        d_model=d_model,
        ar_d_model=ar_d,
        injection_scale=float(scale),
        mse_scale=mse_scale,
        injection_char=char,
        injection_token_id=_int(av, "tokens.injection_token_id", av_path, minimum=0),
        left_neighbor_id=_int(av, "tokens.injection_left_neighbor_id", av_path, minimum=0),
        right_neighbor_id=_int(av, "tokens.injection_right_neighbor_id", av_path, minimum=0),
        critic_suffix_ids=None if suffix is None else tuple(suffix),
        av_template=_template(av, ("av", "actor", "verbalizer"), INJECT_SLOT, av_path),
        ar_template=_template(ar, ("ar", "critic", "reconstructor"), EXPLANATION_SLOT, ar_path),
        variance=variance,
        variance_source=source,
    )


def _layer(ar: dict[str, Any], path: Path) -> int:
    """K: critic.extraction_layer_index (older critic.num_hidden_layers), else the release's top-level copy."""
    for key in ("critic.extraction_layer_index", "critic.num_hidden_layers", "extraction_layer_index"):
        value = field(ar, key)
        if value is not None:
            if not _is_int(value) or value < 0:
                raise CheckpointError(f"{path}: {key} is {value!r}; expected a block index >= 0")
            top = ar.get("extraction_layer_index")
            if top is not None and top != value:
                raise CheckpointError(f"{path}: extraction_layer_index is {top!r}; expected {value} ({key})")
            return int(value)
    raise CheckpointError(
        f"{path} names no extraction layer: expected critic.extraction_layer_index (or extraction_layer_index)"
    )


def _mse_scale(ar: dict[str, Any], path: Path, d_model: int) -> float:
    extraction = ar.get("extraction") if isinstance(ar.get("extraction"), dict) else {}
    if "mse_scale" not in extraction:
        return math.sqrt(d_model)  # the reference's default when the field is absent
    value = extraction["mse_scale"]
    if not _positive_number(value):
        raise CheckpointError(
            f"{path}: extraction.mse_scale is {value!r}; expected a positive number (sqrt(d_model) = "
            f"{math.sqrt(d_model):g}): the AR scores normalised activations"
        )
    return float(value)


def _variance(av, ar, av_path, ar_path, registry_variance) -> tuple[float | None, str | None]:
    """The fve_nrm baseline: the registry's value, else training.nla_baseline_rawvar of the sidecars."""
    if registry_variance is not None:
        return float(registry_variance), "registry"
    found = []
    for data, path in ((ar, ar_path), (av, av_path)):
        value = field(data, "training.nla_baseline_rawvar")
        if value is None:
            continue
        if not _positive_number(value):
            raise CheckpointError(
                f"{path}: training.nla_baseline_rawvar is {value!r}; expected a positive number"
            )
        found.append((float(value), path))
    if not found:
        return None, None
    if len(found) == 2 and found[0][0] != found[1][0]:
        raise CheckpointError(
            f"{av_path}: training.nla_baseline_rawvar is {found[1][0]}; expected {found[0][0]} "
            f"(the value in {ar_path})"
        )
    return found[0][0], f"{found[0][1].parent.name}/{SIDECAR} training.nla_baseline_rawvar"


def _template(data: dict[str, Any], keys: tuple[str, ...], slot: str, path: Path) -> str:
    templates = data.get("prompt_templates")
    if isinstance(templates, dict):
        for key in keys:
            if isinstance(templates.get(key), str):
                text = templates[key]
                if slot not in text:
                    raise CheckpointError(f"{path}: prompt_templates.{key} has no {slot} slot")
                return text
    raise CheckpointError(f"{path}: expected prompt_templates.{keys[0]} (a template with a {slot} slot)")


def _int(data: dict[str, Any], dotted: str, path: Path, minimum: int) -> int:
    value = field(data, dotted)
    if not _is_int(value) or value < minimum:
        raise CheckpointError(f"{path}: {dotted} is {value!r}; expected a whole number >= {minimum}")
    return int(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_number(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


# --- checks against the models' configs and tokenizers ----------------------------------------------------


def model_shape(directory: Path, side: str) -> tuple[int, int, str]:
    """(hidden size, blocks, model_type) from config.json (text_config for multimodal wrappers)."""
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"NLA {side} directory {directory} has no config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    try:
        return int(text["hidden_size"]), int(text["num_hidden_layers"]), str(text.get("model_type", ""))
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: expected hidden_size and num_hidden_layers") from None


def check_shapes(cfg: NLAConfig, av_dir: Path, ar_dir: Path) -> str:
    """d_model against both models, the AR's K+1 blocks; returns the AV's model_type (for the embed scale)."""
    av_d, _, av_type = model_shape(av_dir, "av")
    ar_d, ar_blocks, _ = model_shape(ar_dir, "ar")
    for directory, d_model, hidden in ((av_dir, cfg.d_model, av_d), (ar_dir, cfg.ar_d_model, ar_d)):
        if hidden != d_model:
            raise CheckpointError(
                f"{directory / SIDECAR}: d_model is {d_model} but {directory / 'config.json'} has "
                f"hidden_size {hidden}; expected {hidden}"
            )
    if cfg.ar_d_model != cfg.d_model:
        raise CheckpointError(
            f"{ar_dir / SIDECAR}: d_model is {cfg.ar_d_model}; expected {cfg.d_model}, the AV's "
            "(the AR reconstructs the activations the AV reads)"
        )
    if ar_blocks != cfg.layer + 1:
        raise CheckpointError(
            f"{ar_dir / 'config.json'}: num_hidden_layers is {ar_blocks}; expected K+1 = {cfg.layer + 1} "
            f"(the AR is blocks 0..K, extraction layer K = {cfg.layer})"
        )
    return av_type


def check_base(cfg: NLAConfig, hidden: int, blocks: int, where: str) -> None:
    if hidden != cfg.d_model:
        raise CheckpointError(
            f"base model {where} has hidden_size {hidden}; expected d_model = {cfg.d_model} (the NLA's)"
        )
    if not cfg.layer < blocks:
        raise CheckpointError(
            f"base model {where} has {blocks} blocks; the NLA reads block {cfg.layer} (extraction layer K)"
        )


def check_marker(cfg: NLAConfig, tokenizer, av_dir: Path) -> None:
    """The marker character is exactly the one token the sidecar names, and not UNK (spec §1.3.1)."""
    path = av_dir / SIDECAR
    ids = list(tokenizer.encode(cfg.injection_char, add_special_tokens=False))
    if ids != [cfg.injection_token_id]:
        raise CheckpointError(
            f"{path}: tokens.injection_char {cfg.injection_char!r} encodes to {ids} with the AV tokenizer; "
            f"expected exactly one token, tokens.injection_token_id = {cfg.injection_token_id}"
        )
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and cfg.injection_token_id == unk:
        raise CheckpointError(
            f"{path}: tokens.injection_token_id {cfg.injection_token_id} is the tokenizer's unknown token; "
            "expected a real token"
        )


def av_prompt_ids(cfg: NLAConfig, tokenizer) -> list[int]:
    """The canonical AV prompt (spec §2.1): the user turn rendered, then encoded without special tokens
    (adding them again would double a BOS the template already wrote)."""
    if not getattr(tokenizer, "chat_template", None):
        raise CheckpointError("the AV tokenizer has no chat template; the AV prompt is a chat user turn")
    content = fill(cfg.av_template, injection_char=cfg.injection_char)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer(rendered, add_special_tokens=False).input_ids)


def fill(template: str, **values: str) -> str:
    """str.format, as the reference fills both templates (so `{{` in a template means a brace)."""
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise CheckpointError(f"prompt template {template[:60]!r}… cannot be filled: {exc!r}") from None


def injection_sites(ids: list[int], marker: int, left: int, right: int) -> list[int]:
    """Positions the reference overwrites (spec §2.2.5): the marker, not at either end, between its two
    neighbour ids."""
    return [
        p for p in range(1, len(ids) - 1) if ids[p] == marker and ids[p - 1] == left and ids[p + 1] == right
    ]


def check_prompt(cfg: NLAConfig, ids: list[int], tokenizer, av_dir: Path) -> int:
    """The marker occurs once in the AV prompt, inside it, between the sidecar's neighbours (spec §1.3.2);
    returns its position."""
    path = av_dir / SIDECAR
    found = [p for p, t in enumerate(ids) if t == cfg.injection_token_id]
    if len(found) != 1:
        raise CheckpointError(
            f"{path}: the AV prompt holds tokens.injection_token_id {cfg.injection_token_id} "
            f"{len(found)} times; expected exactly once"
        )
    p = found[0]
    if p in (0, len(ids) - 1):
        raise CheckpointError(
            f"{path}: the marker is at position {p} of the {len(ids)}-token AV prompt; expected it inside"
        )
    for name, where, expected, actual in (
        ("tokens.injection_left_neighbor_id", "before", cfg.left_neighbor_id, ids[p - 1]),
        ("tokens.injection_right_neighbor_id", "after", cfg.right_neighbor_id, ids[p + 1]),
    ):
        if actual != expected:
            raise CheckpointError(
                f"{path}: {name} is {expected} but the token {where} the marker (position {p}) in the AV "
                f"prompt is {actual} ({tokenizer.decode([actual])!r}); expected {expected} there: the AV "
                "tokenizer or prompt template differs from the one the AV was trained with"
            )
    return p


def check_ar_tokenizer(cfg: NLAConfig, tokenizer, ar_dir: Path) -> None:
    """A BOS the tokenizer names must be the one it prepends (spec §3); the AR template's suffix tokenises
    to the sidecar's critic_suffix_ids (spec §1.2)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        first = list(tokenizer("x", add_special_tokens=True).input_ids)[:1]
        if first != [bos]:
            raise CheckpointError(
                f"{ar_dir}: the AR tokenizer names bos_token_id {bos} but does not prepend it "
                f"(its first token for 'x' is {first[0] if first else None}); expected the AR prompt to "
                "start with it. If the AR was trained without a BOS, set bos_token to null in its "
                "tokenizer_config.json (as the reference's own SmolLM2 pair does)"
            )
    if cfg.critic_suffix_ids is not None:
        suffix = cfg.ar_template.split(EXPLANATION_SLOT, 1)[1]
        got = tuple(tokenizer.encode(suffix, add_special_tokens=False))[1:]
        if got != cfg.critic_suffix_ids:
            raise CheckpointError(
                f"{ar_dir / SIDECAR}: tokens.critic_suffix_ids is {list(cfg.critic_suffix_ids)} but the AR "
                f"tokenizer gives {list(got)} for the template's suffix {suffix!r} (first token dropped); "
                "expected them equal"
            )


def check_value_head(path: Path, d_model: int) -> None:
    """One tensor `weight` of shape [d, d] (a bias-free Linear), read from the header only."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"the NLA AR directory has no {path.name} (expected at {path})")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            shape = tuple(f.get_slice("weight").get_shape()) if keys == ["weight"] else None
    except Exception as exc:  # a truncated or foreign file
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    if keys != ["weight"]:
        raise CheckpointError(f"{path} holds tensors {keys}; expected exactly one, 'weight'")
    if shape != (d_model, d_model):
        raise CheckpointError(f"{path}: weight has shape {list(shape)}; expected [{d_model}, {d_model}]")


def embed_scale(model_type: str, d_model: int) -> float:
    return math.sqrt(d_model) if model_type in SCALED_EMBEDDING_TYPES else 1.0


# --- explanations -------------------------------------------------------------------------------------------


def parse_explanation(text: str) -> tuple[str, bool]:
    """(explanation, whether the tags matched): the first <explanation>…</explanation>, trimmed, else the
    whole text, as the reference's client does (spec §2.4)."""
    match = _EXPLANATION.search(text)
    return (match.group(1).strip(), True) if match else (text, False)


def explanation_words(text: str) -> list[str]:
    """Salience units: each word with the whitespace before it (and the text's trailing whitespace on the
    last), so that the words join back to the text."""
    return re.findall(r"\s*\S+(?:\s+$)?", text)


def without_word(words: list[str], j: int) -> str:
    """The explanation with word j removed; the first word's leading whitespace stays at the start."""
    rest = [w for i, w in enumerate(words) if i != j]
    if j == 0 and rest:
        lead = words[0][: len(words[0]) - len(words[0].lstrip())]
        rest[0] = lead + rest[0].lstrip()
    return "".join(rest)
