"""An analysis that grows: positions clicked in the full-text view join the same analysis, whose worker
computes only those (it resumes after the rows the job holds: rows are deterministic per position). One
job of record, one results page, one export: the rows of a selection are never spread over linked jobs."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from inference.engine import chosen_positions
from inference.errors import OptionError
from inference.types import AnalysisOptions

from . import notify, quotas, store
from .access import get_analysis_for
from .errors import SubmissionError
from .lifecycle import GREW_WHILE_RUNNING
from .limits import limits
from .models import Analysis, AnalysisRow
from .option_fields import option_fields
from .store import COPY_MARKS
from .submit import check_capacity, check_prepared_submission
from .workers import ring_doorbell

Status = Analysis.Status


def do_add_positions(user, analysis_id, asked: list[int]) -> tuple[Analysis, list[int]]:
    """Add positions (negative ones count from the end) to the owner's analysis; returns the job and the
    positions new to it (none: nothing changes). A finished job is queued again; a queued or running one
    takes them on; a failed one is for "Re-run". SubmissionError says what is wrong."""
    job = get_analysis_for(user, analysis_id, write=True)
    if job.status == Status.FAILED:
        raise SubmissionError("this analysis failed; re-run it instead", "positions")
    if not isinstance(asked, list) or not asked:
        raise SubmissionError("choose at least one token", "positions")
    # The job's own text and options: its tokens, to check the new positions against.
    _, _, _, prepared = check_prepared_submission(job.lens_id, job.input, job.options)
    n_tokens = len(prepared.token_ids)
    try:
        wanted = set(chosen_positions(tuple(asked), n_tokens))
    except OptionError as exc:  # a position outside the text
        raise SubmissionError(str(exc), "positions") from exc
    with transaction.atomic():
        job = Analysis.objects.select_for_update().get(pk=job.pk)  # another click's growth is seen whole
        asked_before = job.options.get("positions")
        current = set(chosen_positions(tuple(asked_before), n_tokens) if asked_before else prepared.positions)
        new = sorted(wanted - current)
        if not new:
            return job, []
        union = sorted(current | wanted)
        most = limits().max_chosen_positions
        if len(union) > most:
            raise SubmissionError(
                f"an analysis of chosen positions holds at most {most}; this one would have {len(union)}. "
                "Analyse the whole text instead (Re-run with changes, positions left empty).",
                "positions",
            )
        quotas.check_daily_positions(user, len(new))
        metadata = {k: v for k, v in job.metadata.items() if k not in COPY_MARKS}
        changes = {
            "options": {**job.options, "positions": union, "last_n_messages": None},
            "progress_total": len(union),
            "metadata": metadata,
        }
        if job.status == Status.RUNNING:
            changes["metadata"] = {**metadata, GREW_WHILE_RUNNING: True}
        elif job.status != Status.QUEUED:  # done or cancelled: queued again, to compute the new ones
            check_capacity(user)
            done = AnalysisRow.objects.filter(analysis=job).count()
            changes.update(
                status=Status.QUEUED,
                progress_done=done,
                progress_partial=done,
                phase="",
                cancel_requested=False,
                finished_at=None,
                error="",
            )
        Analysis.objects.filter(pk=job.pk).update(**changes)
        store.result_store.detach(job)  # its key named the positions it had: the grown result is another
        job.refresh_from_db()
        transaction.on_commit(lambda: (notify.job_state(job), ring_doorbell(), notify.queue_moved()))
    return job, new


def parse_positions(raw: str) -> list[int]:
    """Posted positions ("3, 7, -1"), parsed and bounded as the form's `positions` field is: by the option's
    declaration (empty: none, which do_add_positions refuses with the reason)."""
    field = option_fields(AnalysisOptions, limits())["positions"]
    try:
        return field.clean(raw) or []
    except ValidationError as exc:
        raise SubmissionError(f"positions: {exc.messages[0]}", "positions") from None
