"""Prefix reuse: a text whose token ids begin like an earlier analysis' of the same owner, lens and options
takes that analysis' rows for the shared prefix and computes only the rest (a chat extended by a turn
reuses its earlier turns). A row at position p depends only on the tokens up to p, and its sampling on
(seed, p): the reused rows are the ones the worker would compute, up to float rounding (measured: the same
explanations, numbers within 3e-6 relative, on the CPU).

The worker asks, once it holds the lens, so that only rows computed where it computes are taken: the same
lens files, engine version, device type and dtype (a bf16 GPU row is not a float32 CPU row). Only the
owner's own analyses are read: a result never tells one user what another analysed (the shared cache's
scope rule, lensweb.cache)."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F

from inference.options import options_of
from inference.types import AnalysisOptions

from . import notify
from .models import PLACEMENT_KEYS, Analysis, AnalysisRow

Status = Analysis.Status
# The owner's latest finished analyses of the lens that are read for a prefix (bounded work per job).
CANDIDATES = 50
# The options a row depends on (declared keyed: inference.options); `positions` and `last_n_messages` only
# choose positions.
KEYED = tuple(o.name for o in options_of(AnalysisOptions) if o.keyed)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def find_prefix(job: Analysis, token_ids: list[int], wanted: set[int], lens_metadata: dict):
    """(the analysis, its rows to reuse) that covers most of `wanted` with the longest common token
    prefix, or (None, [])."""
    defaults = AnalysisOptions().to_dict()
    keyed = {name: job.options.get(name, defaults[name]) for name in KEYED}
    placed = {f"metadata__{key}": lens_metadata.get(key) for key in PLACEMENT_KEYS}
    candidates = (
        Analysis.objects.filter(owner_id=job.owner_id, lens_id=job.lens_id, status=Status.DONE, **placed)
        .filter(**{f"options__{name}": value for name, value in keyed.items()})
        .exclude(pk=job.pk)
        .order_by("-id")
        .values_list("pk", "options", "metadata")[:CANDIDATES]
    )
    best, best_positions = None, set()
    for pk, options, metadata in candidates:
        if any(options.get(name, defaults[name]) != value for name, value in keyed.items()):
            continue  # the database's JSON comparison is loose about types (1 and true): this one is not
        ids = metadata.get("token_ids")
        if not isinstance(ids, list) or len(metadata.get("attempt_placements") or [None]) != 1:
            continue  # rows of one computation only
        reach = common_prefix(ids, token_ids)
        covered = {p for p in wanted if p < reach}
        if len(covered) > len(best_positions):
            best, best_positions = pk, covered
    if best is None:
        return None, []
    rows = list(
        AnalysisRow.objects.filter(analysis_id=best, position__in=best_positions)
        .order_by("position")
        .values_list("data", flat=True)
    )
    return best, rows


def do_reuse_prefix(
    job_id: int, worker_id: int, token_ids: list[int], wanted: list[int], lens_metadata: dict
):
    """Copy the rows of a shared prefix into the running job (the worker's, holding the lens whose
    `lens_metadata` it recorded); returns the positions copied (the worker computes the rest)."""
    job = Analysis.objects.filter(pk=job_id, worker_id=worker_id, status=Status.RUNNING).first()
    if job is None or not wanted:
        return set()
    source, rows = find_prefix(job, token_ids, set(wanted), lens_metadata)
    if not rows:
        return set()
    with transaction.atomic():
        running = Analysis.objects.select_for_update().filter(
            pk=job_id, worker_id=worker_id, status=Status.RUNNING
        )
        job = running.first()
        if job is None:
            return set()
        AnalysisRow.objects.bulk_create(
            [AnalysisRow(analysis_id=job_id, position=row["position"], data=row) for row in rows],
            ignore_conflicts=True,
        )
        done = AnalysisRow.objects.filter(analysis_id=job_id).count()
        reused = {row["position"] for row in rows}
        metadata = {
            **job.metadata,
            "reused_positions": len(reused) + int(job.metadata.get("reused_positions") or 0),
            "reused_from": source,
        }
        # attempt_base moves past the copies: the speed this attempt measures is of computed rows only
        running.update(
            progress_done=done,
            progress_partial=done,
            attempt_base=F("attempt_base") + len(reused),
            metadata=metadata,
        )
        job.refresh_from_db()
        transaction.on_commit(lambda: notify.job_rows(job, rows))
    return reused
