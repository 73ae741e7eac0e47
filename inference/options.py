"""Each option declared once, on its options dataclass (types.AnalysisOptions, types.GenerationOptions): its
type and default as a field, and as the field's metadata its label, help text, bounds (a number, or the
name of a `Limits` field an operator may tune), whether it sits under "Advanced", and whether it is part of
the result-cache key. Every surface derives from that: validation here, the browser form
(lensweb.analyses.forms), the API schema and so the OpenAPI document (lensweb.api.schemas), the CLI flags
(inference.__main__), import defaults (lensweb.results.imports) and the request log's names."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import OptionError
from .limits import DEFAULT_LIMITS, Limits

# a number, the name of a Limits field, or a function of the limits
Bound = int | float | str | Callable[[Limits], int | float] | None
SHOWN_BOUND = 10**6  # bounds this wide say nothing a reader needs: help texts leave them out


@dataclass(frozen=True)
class Declaration:
    """What the field's metadata says of an option."""

    label: str
    help: str
    low: Bound = None
    high: Bound = None
    advanced: bool = False
    keyed: bool = True  # part of the result-cache key (inference.cachekey)
    max_items: Bound = None  # lists: at most this many
    placeholder: str = ""


def option(default: Any, **declaration: Any) -> Any:
    """A dataclass field that declares an option: `option(1, label=…, help=…, low=1, high="max_best_of_k")`."""
    return dataclasses.field(default=default, metadata={"option": Declaration(**declaration)})


@dataclass(frozen=True)
class Option:
    """One declared option, resolved: its name, kind ("int", "float", "bool", "ints"), default, whether
    it may be null, and its declaration."""

    name: str
    kind: str
    default: Any
    nullable: bool
    declared: Declaration

    @property
    def label(self) -> str:
        return self.declared.label

    @property
    def help(self) -> str:
        return self.declared.help

    @property
    def advanced(self) -> bool:
        return self.declared.advanced

    @property
    def keyed(self) -> bool:
        return self.declared.keyed

    def bounds(self, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, Any]:
        """(low, high) under `limits`: the values lists' items are bounded by, too."""
        return _resolve(self.declared.low, limits), _resolve(self.declared.high, limits)

    def described(self, limits: Limits = DEFAULT_LIMITS) -> str:
        """The help text, with the bounds where they tell a reader something ("(1–64)", not "0–2147483647")."""
        low, high = self.bounds(limits)
        if self.kind in ("int", "float") and low is not None and high is not None and high < SHOWN_BOUND:
            return f"{self.help.rstrip('.')} ({low:g}–{high:g})."
        return self.help

    def max_items(self, limits: Limits = DEFAULT_LIMITS) -> int | None:
        return _resolve(self.declared.max_items, limits)

    def check(self, value: Any, limits: Limits | None = DEFAULT_LIMITS) -> Any:
        """`value` if it is one this option takes (of its type only, with `limits` None); OptionError naming
        the option otherwise. A list comes back as a tuple (the options dataclasses are frozen, hashable)."""
        if value is None and self.nullable:
            return None
        low, high = self.bounds(limits) if limits is not None else (None, None)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise OptionError(f"{self.name} must be true or false, got {short(value)}")
        elif self.kind == "int":
            check_int(self.name, value, low, high)
        elif self.kind == "float":
            check_float(self.name, value, low, high)
        elif self.kind == "ints":
            if not isinstance(value, list | tuple):
                raise OptionError(f"{self.name} must be a list of whole numbers, got {short(value)}")
            most = self.max_items(limits) if limits is not None else None
            if most is not None and len(value) > most:
                raise OptionError(f"{self.name} has {len(value)} items; the limit is {most}")
            for item in value:
                check_int(self.name, item, low, high)
            return tuple(value)
        return value


def option_names(cls) -> frozenset[str]:
    return frozenset(o.name for o in options_of(cls))


def validate(instance, limits: Limits = DEFAULT_LIMITS):
    """`instance` with every option checked (lists made tuples); OptionError names the first bad one."""
    changes = {}
    for opt in options_of(type(instance)):
        value = getattr(instance, opt.name)
        checked = opt.check(value, limits)
        if checked is not value:
            changes[opt.name] = checked
    return dataclasses.replace(instance, **changes) if changes else instance


def as_dict(instance) -> dict[str, Any]:
    """The options as JSON holds them (lists, not tuples)."""
    return {
        o.name: list(value) if isinstance(value := getattr(instance, o.name), tuple) else value
        for o in options_of(type(instance))
    }


def from_dict(cls, data: dict[str, Any]):
    unknown = set(data) - option_names(cls)
    if unknown:
        raise OptionError(f"unknown option(s): {', '.join(sorted(unknown))}")
    return cls(**data)


# --- reading the declarations -------------------------------------------------------------------------


_KINDS = {bool: "bool", int: "int", float: "float"}
_CACHE: dict[type, tuple[Option, ...]] = {}


def options_of(cls) -> tuple[Option, ...]:
    """The declared options of an options dataclass, in declaration order."""
    if cls not in _CACHE:
        hints = typing.get_type_hints(cls)
        found = []
        for f in dataclasses.fields(cls):
            declared = f.metadata.get("option")
            if declared is None:
                raise TypeError(f"{cls.__name__}.{f.name} is not declared with inference.options.option()")
            kind, nullable = _kind(hints[f.name])
            found.append(Option(f.name, kind, f.default, nullable, declared))
        _CACHE[cls] = tuple(found)
    return _CACHE[cls]


def _kind(hint) -> tuple[str, bool]:
    args = typing.get_args(hint)
    nullable = isinstance(hint, types.UnionType) and type(None) in args
    if nullable:
        (hint,) = [a for a in args if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return "ints", nullable
    return _KINDS[hint], nullable


def _resolve(bound: Bound, limits: Limits):
    if isinstance(bound, str):
        return getattr(limits, bound)
    return bound(limits) if callable(bound) else bound


def check_int(name: str, value: Any, lo: int | None, hi: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"{name} must be a whole number, got {short(value)}")
    _check_range(name, value, lo, hi)


def check_float(name: str, value: Any, lo: float | None, hi: float | None) -> None:
    # an int is finite (and may be too large for math.isfinite, which converts it to a float)
    finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if isinstance(value, bool) or not isinstance(value, int | float) or not finite:
        raise OptionError(f"{name} must be a number, got {short(value)}")
    _check_range(name, value, lo, hi)


def _check_range(name: str, value, lo, hi) -> None:
    if lo is not None and hi is not None and not lo <= value <= hi:
        raise OptionError(f"{name} must be between {lo} and {hi}, got {short(value)}")
    if lo is not None and value < lo:
        raise OptionError(f"{name} must be at least {lo}, got {short(value)}")
    if hi is not None and value > hi:
        raise OptionError(f"{name} must be at most {hi}, got {short(value)}")


def short(value: Any, limit: int = 40) -> str:
    """repr for an error message, cut: a value may be thousands of digits long."""
    text = (
        repr(value)
        if not isinstance(value, int) or abs(value) < 10**limit
        else f"a {len(str(value))}-digit number"
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"
