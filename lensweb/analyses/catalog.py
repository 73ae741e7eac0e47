"""Which lenses a user sees and may use, and what they are called: the registry (TOML: files and families) seeds
one LensEntry per lens id; staff edit names, descriptions, visibility, the default and the order in admin.

Everyone sees and uses an `everyone` lens; `staff` lenses are listed to staff only and refused to others as
unknown; `hidden` ones are listed to no one (staff may still use them by id, e.g. to check one before showing
it). The specs handed to pages carry the entry's name, description and default; the engine keeps the
registry's own (its caches are keyed by them).
"""

from __future__ import annotations

import dataclasses

from django.db import IntegrityError

from inference.errors import UnknownLensError

from .engine import get_engine
from .models import LensEntry

Visibility = LensEntry.Visibility


def entries(specs=None) -> dict[str, LensEntry]:
    """The entry of every registry lens, created (seeded from the registry) for those that have none yet."""
    specs = list(get_engine().lenses()) if specs is None else specs
    found = {entry.lens_id: entry for entry in LensEntry.objects.filter(lens_id__in=[s.id for s in specs])}
    missing = [
        LensEntry(
            lens_id=spec.id, name=spec.name, description=spec.description or "", is_default=bool(spec.default)
        )
        for spec in specs
        if spec.id not in found
    ]
    if missing:
        try:
            LensEntry.objects.bulk_create(missing, ignore_conflicts=True)  # two processes may seed at once
        except IntegrityError:
            pass
        found = {
            entry.lens_id: entry for entry in LensEntry.objects.filter(lens_id__in=[s.id for s in specs])
        }
    return found


def _listed(entry: LensEntry | None, user) -> bool:
    visibility = entry.visibility if entry else Visibility.EVERYONE
    return visibility == Visibility.EVERYONE or (visibility == Visibility.STAFF and _is_staff(user))


def _usable(entry: LensEntry | None, user) -> bool:
    return _listed(entry, user) or _is_staff(user)


def _is_staff(user) -> bool:
    return bool(getattr(user, "is_staff", False) and getattr(user, "is_active", False))


def lenses_for(user=None) -> list:
    """The lenses listed to `user` (None: anyone), in the staff's order, as specs carrying the entry's name,
    description and default (exactly one is the default when any is listed)."""
    specs = list(get_engine().lenses())
    known = entries(specs)
    position = {spec.id: i for i, spec in enumerate(specs)}
    listed = [spec for spec in specs if _listed(known.get(spec.id), user)]
    listed.sort(key=lambda spec: (known[spec.id].order if spec.id in known else 0, position[spec.id]))
    default = next((s.id for s in listed if known.get(s.id) and known[s.id].is_default), None)
    default = default or next((s.id for s in listed if s.default), None) or (listed[0].id if listed else None)
    return [_as_listed(spec, known.get(spec.id), spec.id == default) for spec in listed]


def _as_listed(spec, entry: LensEntry | None, default: bool):
    if entry is None:
        return dataclasses.replace(spec, default=default)
    return dataclasses.replace(spec, name=entry.name, description=entry.description, default=default)


def default_for(user=None):
    """The lens a submission without one uses for `user`: the default of the lenses listed to them."""
    listed = lenses_for(user)
    if not listed:
        raise UnknownLensError("this server lists no lens to you")
    return next(spec for spec in listed if spec.default)


def check_usable(user, lens_id: str | None):
    """The registry's spec of `lens_id` (None: the user's default) if `user` may use it; else UnknownLensError,
    worded as for an unknown id and naming only the lenses listed to them."""
    if lens_id is None:
        return get_engine().get_spec(default_for(user).id)
    engine = get_engine()
    try:
        spec = engine.get_spec(lens_id)
    except UnknownLensError:
        spec = None
    if spec is None or not _usable(entries([spec]).get(spec.id), user):
        listed = ", ".join(s.id for s in lenses_for(user))
        raise UnknownLensError(f"unknown lens {lens_id!r}; this server has: {listed}")
    return spec


def record_loaded(lens_id: str, metadata: dict) -> None:
    """A worker loaded the lens: its base model, layer and T, for the lists and admin (grouped by base)."""
    LensEntry.objects.filter(lens_id=lens_id).update(
        base_model=str(metadata.get("base_model") or "")[:300],
        layer=metadata.get("layer") if isinstance(metadata.get("layer"), int) else None,
        t_text=metadata.get("t_text") if isinstance(metadata.get("t_text"), int) else None,
    )


def rows_budget(lens_id: str) -> int | None:
    """The rows per batch staff set for the lens in admin (None: the engine's own choice)."""
    return LensEntry.objects.filter(lens_id=lens_id).values_list("rows_budget", flat=True).first()
