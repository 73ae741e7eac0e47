"""Rules for reading, sharing, deleting, comparing and importing analyses (check_* look up and refuse,
do_* write), so that views and the JSON API agree on who sees what."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import CharField, Q, Value
from django.utils import timezone

from lensweb.analyses import services as analyses_services
from lensweb.analyses import signals
from lensweb.analyses.models import Analysis, AnalysisRow, Generation
from lensweb.analyses.quotas import check_daily_positions

from . import display, export, imports
from .models import ResultsPreference, ShareLink


class CompareError(Exception):
    """Two analyses that cannot be put side by side; the message says why."""


# --- who may see what --------------------------------------------------------------------------------


def check_viewable(user, analysis_id) -> Analysis:
    """The analysis if `user` owns it or is staff; Analysis.DoesNotExist otherwise (never 'forbidden':
    someone else's analysis does not exist for you)."""
    analyses = Analysis.objects.all() if user.is_staff else Analysis.objects.filter(owner=user)
    return analyses.get(pk=analysis_id)


def check_owned(user, analysis_id) -> Analysis:
    """Changing an analysis (share, delete) is for its owner only, staff included."""
    return Analysis.objects.get(pk=analysis_id, owner=user)


def check_shared(token: str) -> Analysis:
    link = ShareLink.objects.select_related("analysis").get(token=token)
    return link.analysis


def rows_of(analysis: Analysis) -> list[dict]:
    return list(
        AnalysisRow.objects.filter(analysis=analysis).order_by("position").values_list("data", flat=True)
    )


def input_tokens(analysis: Analysis) -> tuple[list[str], set[int]] | None:
    """(every token of the analysis' input, the positions it analyses) with its lens' tokenizer (no model is
    loaded), for the full-text view; None where the lens or input cannot be read (an imported analysis of a
    lens not served here, a registry changed since)."""
    try:
        _, _, _, prepared = analyses_services.check_prepared_submission(
            analysis.lens_id, analysis.input, analysis.options
        )
    except Exception:  # SubmissionError, LensUnavailable: the view shows the rows it has
        return None
    return prepared.tokens, set(prepared.positions)


# --- sharing -------------------------------------------------------------------------------------------


def share_link_of(analysis: Analysis) -> ShareLink | None:
    return ShareLink.objects.filter(analysis=analysis).first()


def do_share(user, analysis_id) -> ShareLink:
    analysis = check_owned(user, analysis_id)
    with transaction.atomic():
        link, created = ShareLink.objects.get_or_create(analysis=analysis, defaults={"created_by": user})
        if created:
            signals.shared_by_link.send(sender=ShareLink, analysis=analysis, public=True)
    return link


def do_unshare(user, analysis_id) -> None:
    analysis = check_owned(user, analysis_id)
    with transaction.atomic():
        if ShareLink.objects.filter(analysis=analysis).delete()[0]:
            signals.shared_by_link.send(sender=ShareLink, analysis=analysis, public=False)


# --- deleting ------------------------------------------------------------------------------------------


def do_delete(user, analysis_id) -> None:
    """A queued or running job is cancelled first (the worker must stop writing rows), then deleted."""
    analysis = check_owned(user, analysis_id)
    if not analysis.is_final:
        analyses_services.do_cancel(user, analysis.pk)
    analysis.delete()


def do_delete_generation(user, generation_id) -> None:
    """As do_delete: an unfinished generation is cancelled first, so its worker stops writing tokens."""
    generation = analyses_services.get_generation_for(user, generation_id, write=True)
    if not generation.is_final:
        analyses_services.do_cancel_generation(user, generation.pk)
    generation.delete()


# --- history -------------------------------------------------------------------------------------------


def _filtered(model, user, q: str, lens: str, status: str):
    found = model.objects.filter(owner=user).order_by("-created_at", "-id")
    if q:
        found = found.filter(Q(input__text__icontains=q) | Q(input__messages__icontains=q))
    if lens:
        found = found.filter(lens_id=lens)
    if status:
        found = found.filter(status=status)
    return found


def history(user, q: str = "", lens: str = "", status: str = ""):
    """`user`'s analyses, newest first (the API's history: analyses only)."""
    return _filtered(Analysis, user, q, lens, status)


def generation_history(user, q: str = "", lens: str = "", status: str = ""):
    """`user`'s generations with history's filters (`q` searches the prompt), newest first."""
    return _filtered(Generation, user, q, lens, status)


class Timeline:
    """`user`'s analyses and generations in one list, newest first, that a Paginator can page: a page's keys
    come from one UNION query and only that page's jobs are loaded."""

    def __init__(self, user, q: str = "", lens: str = "", status: str = ""):
        self.analyses = history(user, q, lens, status)
        self.generations = generation_history(user, q, lens, status)
        self.counts = {"analyses": self.analyses.count(), "generations": self.generations.count()}

    def count(self) -> int:
        return self.counts["analyses"] + self.counts["generations"]

    def _keys(self, found, kind: str):
        return found.annotate(job_kind=Value(kind, output_field=CharField())).values_list(
            "job_kind", "id", "created_at"
        )

    def __getitem__(self, index: slice) -> list[Analysis | Generation]:
        keys = list(
            self._keys(self.analyses.order_by(), Analysis.kind)
            .union(self._keys(self.generations.order_by(), Generation.kind), all=True)
            .order_by("-created_at", "-id", "job_kind")[index]
        )
        loaded = {
            Analysis.kind: self.analyses.in_bulk([pk for kind, pk, _ in keys if kind == Analysis.kind]),
            Generation.kind: self.generations.in_bulk(
                [pk for kind, pk, _ in keys if kind == Generation.kind]
            ),
        }
        return [loaded[kind][pk] for kind, pk, _ in keys if pk in loaded[kind]]


def _cursor(job: Analysis) -> str:
    raw = f"{job.created_at.isoformat()}|{job.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _after_cursor(found, cursor: str):
    """Keyset pagination on (created_at, id), newest first: stable while new jobs arrive."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, pk = raw.rpartition("|")
        created_at, pk = datetime.fromisoformat(created), int(pk)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise ValueError("this cursor is not one this API gave; start again without it") from None
    return found.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=pk))


def history_page(
    user,
    *,
    status=None,
    lens=None,
    q=None,
    created_after=None,
    created_before=None,
    limit: int = 20,
    cursor: str | None = None,
) -> tuple[list[Analysis], str | None]:
    """One page of `user`'s analyses (history's filters and order) and the cursor of the next, or None."""
    found = history(user, q=q or "", lens=lens or "", status=status or "")
    if created_after is not None:
        found = found.filter(created_at__gt=created_after)
    if created_before is not None:
        found = found.filter(created_at__lt=created_before)
    if cursor:
        found = _after_cursor(found, cursor)
    page = list(found[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return page, (_cursor(page[-1]) if more and page else None)


# --- downloads (the browser's and the API's: the same bytes) ------------------------------------------


def analysis_download(analysis: Analysis, kind: str, raw: bool = False) -> tuple[bytes, str, str]:
    """(content, content type, file name) of an analysis' JSON, research-shape JSON ("research") or CSV
    export. CSV cells are spreadsheet-safe unless `raw` (export.FORMULA_STARTS): a shared link's cells reach
    other people."""
    rows = rows_of(analysis)
    if kind in ("json", "research"):
        research = kind == "research"
        content = export.export_json(
            analysis, rows, analyses_services.user_scores(analysis), research=research
        )
        name = f"analysis-{analysis.pk}.research.json" if research else f"analysis-{analysis.pk}.json"
        return content, "application/json", name
    return (
        export.export_csv(analysis, rows, raw=raw),
        "text/csv; charset=utf-8",
        f"analysis-{analysis.pk}.csv",
    )


def generation_download(generation, kind: str, raw: bool = False) -> tuple[bytes, str, str]:
    if kind == "json":
        return export.generation_json(generation), "application/json", f"generation-{generation.pk}.json"
    return (
        export.generation_csv(generation, raw=raw),
        "text/csv; charset=utf-8",
        f"generation-{generation.pk}.csv",
    )


def lenses_used(user) -> list[str]:
    """The lenses of `user`'s analyses and generations: history's lens filter."""
    return sorted(
        {
            *Analysis.objects.filter(owner=user).values_list("lens_id", flat=True).distinct(),
            *Generation.objects.filter(owner=user).values_list("lens_id", flat=True).distinct(),
        }
    )


# --- preferences ---------------------------------------------------------------------------------------


def preference_for(user) -> ResultsPreference | None:
    if not user.is_authenticated:
        return None
    return ResultsPreference.objects.filter(user=user).first()


def do_save_preference(user, *, columns=None, offered=(), scale=None, palette=None) -> ResultsPreference:
    """`columns`: those on among the ones the page `offered` (its lens family's); the other family's
    columns keep their saved state."""
    pref, _ = ResultsPreference.objects.get_or_create(user=user)
    if columns is not None:
        pref.columns = display.columns_to_save(pref.columns, list(columns), list(offered))
    if scale in ResultsPreference.Scale.values:
        pref.scale = scale
    if palette in ResultsPreference.Palette.values:
        pref.palette = palette
    pref.save()
    return pref


# --- compare -------------------------------------------------------------------------------------------


def token_ids_of(analysis: Analysis, rows: list[dict]) -> list[int | None]:
    ids = (analysis.metadata or {}).get("token_ids")
    if isinstance(ids, list) and ids:
        return ids
    return [r.get("token_id") for r in rows]


def check_comparable(a: Analysis, rows_a: list[dict], b: Analysis, rows_b: list[dict]) -> None:
    ids_a, ids_b = token_ids_of(a, rows_a), token_ids_of(b, rows_b)
    if None in ids_a or None in ids_b:
        tokens_a, tokens_b = [r.get("token") for r in rows_a], [r.get("token") for r in rows_b]
        if tokens_a != tokens_b:
            raise CompareError(
                f"#{a.pk} and #{b.pk} are not over the same tokens, so their rows cannot be aligned. "
                "Compare two analyses of the same text with the same tokenizer."
            )
        return
    if ids_a != ids_b:
        at = next(
            (i for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=False)) if x != y),
            min(len(ids_a), len(ids_b)),
        )
        raise CompareError(
            f"#{a.pk} and #{b.pk} have different token ids ({len(ids_a)} and {len(ids_b)} tokens, first "
            f"difference at position {at}), so their rows cannot be aligned. Compare two analyses of the "
            "same text with lenses that share a tokenizer."
        )


# --- import --------------------------------------------------------------------------------------------


# Rows go in by this many per INSERT: one statement stays small, and a 10,000-row file is 20 round trips.
IMPORT_BATCH_ROWS = 500


def max_import_bytes() -> int:
    return getattr(settings, "LENSWEB_MAX_IMPORT_BYTES", imports.DEFAULT_MAX_IMPORT_BYTES)


def parse_upload(content: bytes, filename: str) -> list[imports.ImportedTranscript]:
    """The file's transcripts within this server's bounds (ImportFormatError says which one it breaks)."""
    return imports.parse_import(
        content,
        filename,
        max_bytes=max_import_bytes(),
        max_rows=settings.LENSWEB_MAX_TOKENS,
        max_total_rows=settings.LENSWEB_MAX_IMPORT_ROWS,
        max_candidates=settings.LENSWEB_MAX_BEST_OF_K,
        max_text_chars=settings.LENSWEB_MAX_TEXT_CHARS,
    )


def _summary(rows: list[dict]) -> dict:
    """The summary a computed analysis gets (the history's means), for either family."""
    return analyses_services.summarize_rows(rows)


def do_import(user, transcripts: list[imports.ImportedTranscript], filename: str) -> list[Analysis]:
    """Each transcript becomes a finished, read-only analysis in the user's history (all or none).
    Imported rows count against the daily positions quota as analysed ones do (positions_today sums
    every analysis created today): QuotaExceeded when this file would pass it."""
    now = timezone.now()
    created = []
    with transaction.atomic():
        # Lock the owner's row (as a submit does) so two imports at once cannot both pass the quota.
        get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
        check_daily_positions(user, sum(len(t.rows) for t in transcripts))
        for t in transcripts:
            metadata = {
                **t.metadata,
                "imported": True,
                "imported_from": filename[:200],
                "imported_at": now.isoformat(),
                "summary": _summary(t.rows),
            }
            analysis = Analysis.objects.create(
                owner=user,
                lens_id=t.lens_id,
                input=t.input,
                options=t.options,
                status=Analysis.Status.DONE,
                metadata=metadata,
                timings=t.timings,
                progress_done=len(t.rows),
                progress_total=len(t.rows),
                created_at=now,
                finished_at=now,
            )
            AnalysisRow.objects.bulk_create(
                [AnalysisRow(analysis=analysis, position=r["position"], data=r) for r in t.rows],
                batch_size=IMPORT_BATCH_ROWS,
            )
            created.append(analysis)
    return created
