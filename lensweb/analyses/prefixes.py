"""Prefix reuse: a text whose token ids begin like an earlier analysis' of the same owner, lens and options
takes that analysis' rows for the shared prefix and computes only the rest (a chat extended by a turn
reuses its earlier turns). A row at position p depends only on the tokens up to p, and its sampling on
(seed, p): the reused rows are the ones the worker would compute, up to float rounding (measured: the same
explanations, numbers within 3e-6 relative, on the CPU).

The worker asks, once it holds the lens, so that only rows computed where it computes are taken: the same
lens files, engine version, device type and dtype (a bf16 GPU row is not a float32 CPU row). What is read
follows the result cache's scope rule (lensweb.cache): the owner's own analyses, and the cache entries the
owner may be answered from; never another user's."""

from __future__ import annotations

import functools

from django.db import transaction
from django.db.models import F

from inference.engine import (
    KEYED,
    common_prefix,
)  # KEYED: the options a row depends on ('positions' only chooses)
from inference.types import AnalysisOptions

from . import notify, store
from .models import PLACEMENT_KEYS, Analysis, AnalysisRow

Status = Analysis.Status
# The owner's latest finished analyses of the lens that are read for a prefix (bounded work per job).
CANDIDATES = 50


def find_prefix(job: Analysis, token_ids: list[int], wanted: set[int], lens_metadata: dict):
    """(where from, its rows to reuse) of the source that covers most of `wanted` through a common token
    prefix: one of the owner's analyses (its id) or the result cache ("the result cache"); or (None, [])."""
    defaults = AnalysisOptions().to_dict()
    keyed = {name: job.options.get(name, defaults[name]) for name in KEYED}
    best, best_positions, best_rows = None, set(), None
    for label, ids, rows_of in _sources(job, keyed, lens_metadata, defaults):
        reach = common_prefix(ids, token_ids)
        covered = {p for p in wanted if p < reach}
        if len(covered) > len(best_positions):
            best, best_positions, best_rows = label, covered, rows_of
    if best is None:
        return None, []
    return best, sorted(best_rows(best_positions), key=lambda row: row["position"])


def _sources(job: Analysis, keyed: dict, lens_metadata: dict, defaults: dict):
    """(label, token ids, rows loader) of every result a prefix may be taken from: the owner's latest
    finished analyses of the lens computed where this worker computes, then the result cache's."""
    placed = {f"metadata__{key}": lens_metadata.get(key) for key in PLACEMENT_KEYS}
    candidates = (
        Analysis.objects.filter(owner_id=job.owner_id, lens_id=job.lens_id, status=Status.DONE, **placed)
        .filter(**{f"options__{name}": value for name, value in keyed.items()})
        .exclude(pk=job.pk)
        .order_by("-id")
        .values_list("pk", "options", "metadata")[:CANDIDATES]
    )
    for pk, options, metadata in candidates:
        if any(options.get(name, defaults[name]) != value for name, value in keyed.items()):
            continue  # the database's JSON comparison is loose about types (1 and true): this one is not
        ids = metadata.get("token_ids")
        if isinstance(ids, list) and len(metadata.get("attempt_placements") or [None]) == 1:
            yield pk, ids, functools.partial(_analysis_rows, pk)  # rows of one computation only
    yield from store.result_store.prefix_sources(job.owner, job.lens_id, lens_metadata, keyed, CANDIDATES)


def _analysis_rows(pk: int, positions: set[int]) -> list[dict]:
    return list(
        AnalysisRow.objects.filter(analysis_id=pk, position__in=positions).values_list("data", flat=True)
    )


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
