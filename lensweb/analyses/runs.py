"""A worker's analyses: the job it claimed, and the queued analyses of the same lens and option set that join
its batches while it runs (up to LENSWEB_SHARED_JOBS at once), owners taking turns (inference.sharing). Each
job keeps its own rows, progress, cancel and outcome: one that is cancelled, fails or finishes leaves, and the
others run on. A job joins only from the head of the fair queue, so sharing never overtakes a job that cannot
join (a generation, another lens, other options): that one waits for the run to end, as it waited for one job.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import close_old_connections

from inference.errors import LensError
from inference.types import AnalysisInput, AnalysisOptions

from . import catalog, prefixes, services
from .models import Analysis, Phase

log = logging.getLogger("lensweb.worker")


class AnalysisRun:
    def __init__(self, worker, first: Analysis):
        self.worker, self.engine, self.first = worker, worker.engine, first
        self.open: dict[int, Analysis] = {}  # the run's jobs not yet ended, by id
        self.jobs: dict = {}  # task → its job
        self.started: dict[int, float] = {}  # job id → when the run took it
        self.load_s = 0.0

    def run(self) -> None:
        """Every job of the run to its end; an error outside the engine (the database away, a bug) ends
        each job still open as the worker ends a job on that error (worker.job_failed)."""
        try:
            self._run()
        except Exception as exc:
            for job in list(self.open.values()):
                self.worker.job_failed(job, exc)
                self._close(job)

    def _run(self) -> None:
        spec = self.engine.get_spec(self.first.lens_id)
        self._take(self.first)
        work = self._prepare(self.first, spec)
        if not self.worker.holds(spec):
            self.worker.report_progress(self.first, Phase.LOADING, None)  # the card says so while it loads
        lens = self.worker.load(spec)
        self.load_s = time.monotonic() - self.started[self.first.pk]
        task = self._begin(self.first, lens, *work)
        if task is None:
            return
        budget = catalog.rows_budget(spec.id)  # staff's, in admin
        shared = self.engine.shared_batches(lens, task, budget)
        shared.add(task)
        while shared.running:
            self._join(shared, spec, lens)
            for ended in shared.step():
                self._end(self.jobs.pop(ended), ended)

    # --- the jobs joining ---------------------------------------------------------------------------------

    def _join(self, shared, spec, lens) -> None:
        """Queued analyses that can share the batches, from the head of the queue, while there is room."""
        while len(shared.running) < settings.LENSWEB_SHARED_JOBS and not self.worker.stopping:
            job = services.claim_next_job(
                self.worker.record, joins=lambda kind, pk: _joins(kind, pk, spec, shared)
            )
            if job is None:
                return
            self._take(job)
            try:
                task = self._begin(job, lens, *self._prepare(job, spec))
            except LensError as exc:  # its own text's fault: it fails alone
                self._finish(job, error=exc)
                continue
            if task is not None:
                shared.add(task)
                log.info("analysis %s joins the batches of %s other job(s)", job.pk, len(shared.running) - 1)

    def _take(self, job: Analysis) -> None:
        self.open[job.pk] = job
        self.started[job.pk] = time.monotonic()
        self.worker.running(job)

    def _prepare(self, job: Analysis, spec):
        """The job's text tokenised and the positions it still needs (it resumes after its persisted rows)."""
        close_old_connections()
        inp, options = AnalysisInput.from_dict(job.input), AnalysisOptions.from_dict(job.options)
        limits = services.limits()
        prepared = self.engine.prepare(spec, inp, options, limits)
        persisted = services.persisted_positions(job.pk)
        remaining = [p for p in prepared.positions if p not in persisted]
        return inp, options, limits, prepared, persisted, remaining

    def _begin(self, job: Analysis, lens, inp, options, limits, prepared, persisted, remaining):
        """The job's task, after its metadata is recorded and a prefix's rows reused; None when it had nothing
        left to compute (ended here)."""
        worker_id = self.worker.record.pk
        metadata = self.engine.metadata(lens, prepared)
        services.do_record_metadata(job.pk, worker_id, metadata, total=len(prepared.positions))
        if remaining and not persisted:  # a first attempt: an earlier analysis may hold a prefix's rows
            reused = prefixes.do_reuse_prefix(job.pk, worker_id, prepared.token_ids, remaining, metadata)
            persisted.update(reused)
            remaining = [p for p in remaining if p not in reused]
        if not remaining:
            self._finish(job, status="done")
            return None

        def on_batch(update) -> bool:
            fresh = [row for row in update.rows if row.position not in persisted]
            go_on = services.do_record_batch(job.pk, worker_id, fresh)
            persisted.update(row["position"] for row in fresh)
            return go_on and not self.worker.stopping and not self.worker.is_cancelled(job)

        task = self.engine.begin(
            lens,
            inp,
            options,
            remaining=remaining,
            prepared=prepared,  # tokenised once per attempt: here, not again in the engine
            on_batch=on_batch,
            on_progress=self.worker.progress_reporter(job),
            should_cancel=lambda: self.worker.is_cancelled(job),
            limits=limits,
            owner=job.owner_id,
        )
        self.jobs[task] = job
        return task

    # --- the jobs ending ----------------------------------------------------------------------------------

    def _end(self, job: Analysis, task) -> None:
        result = task.result()
        timings = dict(result.timings or {})
        work = sum(seconds for phase, seconds in timings.items() if phase != "total")  # its phases' share
        timings["work_s"] = round(work, 3)  # its share of the shared batches' time (lensweb.rates)
        timings["shared_with"] = len(task.partners)  # how many other jobs had positions in its batches
        self._finish(job, status=result.status, timings=timings, error=task.error)

    def _finish(self, job: Analysis, status: str = "", timings: dict | None = None, error=None) -> None:
        worker_id = self.worker.record.pk
        timings = dict(timings or {})
        timings.update(
            load_s=round(self.load_s if job is self.first else 0.0, 3),
            attempt_s=round(time.monotonic() - self.started[job.pk], 3),
        )
        try:
            if error is not None:
                self.worker.job_failed(job, error)
            elif self.worker.is_cancelled(job) or services.is_cancel_requested(job.pk):
                # A cancelled job never shows as done, even if its last batch completed it.
                services.do_finish_job(job.pk, worker_id, Analysis.Status.CANCELLED, timings=timings)
            elif status == "done":
                services.do_finish_job(job.pk, worker_id, Analysis.Status.DONE, timings=timings)
            elif self.worker.stopping:
                services.do_requeue_job(job.pk, worker_id)  # graceful: the attempt is given back
            # else: the job was taken from this worker (re-queued as stale); its new worker carries on.
        finally:
            self._close(job)

    def _close(self, job: Analysis) -> None:
        self.open.pop(job.pk, None)
        self.worker.ended(job)


def _joins(kind: str, job_id: int, spec, shared) -> bool:
    """Whether a queued job may join the running batches: an analysis of their lens and option set."""
    if kind != Analysis.kind:
        return False
    found = Analysis.objects.filter(pk=job_id).values_list("lens_id", "options").first()
    if found is None or found[0] != spec.id:
        return False
    try:
        return shared.fits(AnalysisOptions.from_dict(found[1]), shared.steps)
    except LensError:
        return False
