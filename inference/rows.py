"""One analysed position: the `Row` every lens family returns, declared once. Its fields, their types and
descriptions are what the API's row schema, the exporter's column groups and the importer's checks derive
from; stored and sent as `to_dict()` (a JSON object), read back with `from_dict()`.

Like transformers' ModelOutput, a Row is a dataclass that also answers `row["mse"]`, `row.get(...)` and `in`,
so code written against the JSON shape reads either. Torch-free: plain Python numbers and lists.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

# Field groups (a field's `group`), for the surfaces that treat them together.
FIDELITY = "fidelity"  # cos(A, Â), ‖A‖ and its outlier flag: on every row the engine now computes
NLA_METRIC = "nla_metric"  # an NLA's own metrics
NLA_EXTRA = "nla_extra"  # an NLA's verbaliser output: what tells a file's rows apart by family


class _Absent:
    """The default of a field only some rows have (one family's, an import's): absent from to_dict(), unlike
    None, which a row that has the field may hold (an NLA's fve_nrm without a variance constant)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def row_field(description: str = "", *, group: str = "", optional: bool = False, required: bool = False):
    """A Row field. `optional`: only some rows have it (ABSENT by default, and then not in to_dict())."""
    metadata = {"description": description, "group": group, "optional": optional}
    if required:
        return field(metadata=metadata)
    return field(default=ABSENT if optional else None, metadata=metadata)


@dataclass
class Row:
    position: int = row_field("the token's index in the text", required=True)
    token: str = row_field("the token analysed", required=True)
    explanation: str = row_field("the kept explanation, decoded whole", required=True)
    mse: float = row_field(
        "mse of the activation and its reconstruction from the explanation (an NLA's: the raw vectors')",
        required=True,
    )
    token_id: int | None = row_field("the token's id")
    explanation_tokens: list[str] | None = row_field(
        "the explanation's tokens (an NLA's: its words, the units of token_salience)"
    )
    explanation_token_ids: list[int] | None = row_field("the explanation's token ids, as decoded")
    token_salience: list[float] | None = row_field("per explanation token: how much the mse rises without it")
    relative_rmse: float | None = row_field("RMSE of the reconstruction over the activation's RMS")
    cosine_similarity: float | None = row_field(
        "cos(A, Â): the activation and its reconstruction from the kept explanation", group=FIDELITY
    )
    activation_norm: float | None = row_field("‖A‖₂, the activation's L2 norm", group=FIDELITY)
    activation_norm_outlier: bool | None = row_field(
        "‖A‖ far outside the lens' usual range (position 0, attention sinks; the rule and range are in "
        "metadata.activation_norm_range): the mse there is large because A is",
        group=FIDELITY,
    )
    kl: float | None = row_field("KL(original ‖ patched) of the next-token distribution, when asked")
    logit_lens_top: list[str] | None = row_field(
        "the activation's top tokens through the unembedding, when asked"
    )
    candidates: list[dict[str, Any]] | None = row_field("all best_of_k explanations, when asked")
    mse_nrm: float | None = row_field(
        "an NLA's mse of both vectors rescaled to norm sqrt(d)", group=NLA_METRIC, optional=True
    )
    fve_nrm: float | None = row_field(
        "an NLA's fraction of variance explained, 1 − mse_nrm / variance", group=NLA_METRIC, optional=True
    )
    av_text: str | None = row_field("an NLA verbaliser's raw text", group=NLA_EXTRA, optional=True)
    av_stop: str | None = row_field(
        "why the verbaliser stopped: eos, stop_string or max_new_tokens", group=NLA_EXTRA, optional=True
    )
    explanation_parsed: bool | None = row_field(
        "whether the verbaliser's text held the explanation format", group=NLA_EXTRA, optional=True
    )
    imported_fields: dict[str, Any] | None = row_field(
        "an imported file's own values this shape cannot rebuild, written back on export", optional=True
    )

    def to_dict(self) -> dict[str, Any]:
        """The row as stored and sent: every field it has (an optional one only where set)."""
        return {f.name: getattr(self, f.name) for f in ROW_FIELDS if getattr(self, f.name) is not ABSENT}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        """A stored row (older ones lack later fields: None); keys that are no field are left out."""
        return cls(**{name: data[name] for name in FIELD_NAMES if name in data})

    # ModelOutput-style reading by key, with the keys to_dict() has
    def __getitem__(self, key: str) -> Any:
        if key not in self:
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        spec = _BY_NAME.get(key) if isinstance(key, str) else None
        return spec is not None and getattr(self, spec.name) is not ABSENT

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self else default

    def keys(self) -> list[str]:
        return list(self.to_dict())

    def items(self):
        return self.to_dict().items()

    def __iter__(self):
        return iter(self.keys())


ROW_FIELDS = dataclasses.fields(Row)
FIELD_NAMES = tuple(f.name for f in ROW_FIELDS)
_BY_NAME = {f.name: f for f in ROW_FIELDS}
ROW_TYPES = typing.get_type_hints(Row)  # name → its type (the API schema's annotations)


def fields_in(group: str) -> tuple[str, ...]:
    return tuple(f.name for f in ROW_FIELDS if f.metadata["group"] == group)


def description(name: str) -> str:
    return _BY_NAME[name].metadata["description"]


def required(name: str) -> bool:
    return _BY_NAME[name].default is dataclasses.MISSING
