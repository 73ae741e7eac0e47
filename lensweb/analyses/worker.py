"""The inference worker: one per process, one job at a time (a model wants the whole device).

It polls the queue (doorbells only cut latency), claims jobs in fair order, runs the engine in a thread
so that cancel and doorbell messages keep arriving, persists each batch before announcing it, heartbeats,
and re-queues jobs whose worker went silent. Stopping (SIGTERM) finishes the current batch, hands the
rest of the job back to the queue and exits. Lenses load lazily, on the first job that needs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
import weakref

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.worker import Worker
from django.conf import settings
from django.db import close_old_connections, connections

from inference.errors import LensError
from inference.types import AnalysisInput, AnalysisOptions

from . import services
from .engine import get_engine
from .models import Analysis
from .notify import WORKER_CHANNEL

log = logging.getLogger("lensweb.worker")


def memory_in_use() -> int | None:
    """Device memory when a GPU holds the lens, else this process' resident set."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.memory_allocated())
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class LensWorker:
    def __init__(self, engine=None):
        self.engine = engine or get_engine()
        self.record = None
        self.channel_name = ""
        self.finished = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._cancelled: set[int] = set()
        self._job_id: int | None = None
        self._task: asyncio.Task | None = None
        self._lens = None  # (lens id, loaded lens): one at a time, swapped when a job needs another

    # --- control, from the event loop ----------------------------------------------------------------

    def start(self, channel_name: str = "") -> asyncio.Task:
        if self._task is None:
            self.channel_name = channel_name
            self._task = asyncio.get_running_loop().create_task(self.run(), name="lens-worker")
        return self._task

    def ring(self) -> None:
        self._wake.set()

    def request_cancel(self, job_id) -> None:
        self._cancelled.add(int(job_id))

    def request_stop(self) -> None:
        if not self._stopping:
            log.info("worker stopping: finishing the current batch, then re-queueing the rest")
        self._stopping = True
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def current_job_id(self) -> int | None:
        return self._job_id

    # --- the loop --------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            self.record = await database_sync_to_async(services.register_worker)(self.channel_name)
            log.info("worker %s ready on %s", self.record.name, self.channel_name or "(no channel)")
            heartbeat = asyncio.create_task(self._heartbeat_forever())
            try:
                while not self._stopping:
                    self._wake.clear()
                    try:
                        worked = await self.step()
                    except Exception:  # the database may be away for a moment: keep serving
                        log.exception("worker step failed; retrying after the poll interval")
                        worked = False
                    if not worked and not self._stopping:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), settings.LENSWEB_POLL_INTERVAL)
            finally:
                heartbeat.cancel()
                await database_sync_to_async(services.worker_stopped)(self.record.pk)
                log.info("worker %s stopped", self.record.name)
        finally:
            self.finished.set()

    async def step(self) -> bool:
        """One analysis step, then one generation if any waits (so neither kind starves the other)."""
        worked = await self._analysis_step()
        if not self._stopping:
            worked = await sync_to_async(self._generation_step, thread_sensitive=False)() or worked
        return worked

    def _generation_step(self) -> bool:
        from lensweb.api.generation_worker import process_one_generation

        try:
            return process_one_generation(
                self.record, lambda lens_id: self._load(self.engine.get_spec(lens_id))
            )
        finally:
            connections.close_all()

    async def _analysis_step(self) -> bool:
        """Re-queue stale jobs, claim the next one and run it. False when there was nothing to do."""
        await database_sync_to_async(services.requeue_stale_jobs)()
        job = await database_sync_to_async(services.claim_next_job)(self.record)
        if job is None:
            return False
        self._job_id = job.pk
        try:
            # Off the event loop, and not in Django's one sync thread: requests and heartbeats go on.
            await sync_to_async(self._execute, thread_sensitive=False)(job)
        finally:
            self._job_id = None
            self._cancelled.discard(job.pk)
        return True

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(settings.LENSWEB_HEARTBEAT_INTERVAL)
            job_id = self._job_id
            lens_id, device = (
                (self._lens[0], getattr(self._lens[1], "device", "")) if self._lens else ("", "")
            )
            try:
                cancel = await database_sync_to_async(services.worker_heartbeat)(
                    self.record.pk, job_id, lens_id, str(device), memory_in_use()
                )
            except Exception:
                log.exception("heartbeat failed")
                continue
            if cancel and job_id is not None:
                self._cancelled.add(job_id)

    # --- one job, in a worker thread ---------------------------------------------------------------------

    def _execute(self, job: Analysis) -> None:
        try:
            self._run_job(job)
        except LensError as exc:
            services.do_fail_job(job.pk, self.record.pk, str(exc))
        except Exception as exc:
            log.exception("analysis %s failed", job.pk)
            services.do_fail_job(job.pk, self.record.pk, f"internal error ({type(exc).__name__}): {exc}")
        finally:
            connections.close_all()  # this pool thread's connections; the next job opens fresh ones

    def _load(self, spec):
        if self._lens is None or self._lens[0] != spec.id:
            self._lens = None
            gc.collect()
            started = time.monotonic()
            self._lens = (spec.id, self.engine.load(spec))
            log.info("lens %s loaded in %.1f s", spec.id, time.monotonic() - started)
        return self._lens[1]

    def _run_job(self, job: Analysis) -> None:
        close_old_connections()
        started = time.monotonic()
        worker_id = self.record.pk
        spec = self.engine.get_spec(job.lens_id)
        inp, options = AnalysisInput.from_dict(job.input), AnalysisOptions.from_dict(job.options)
        limits = services.limits()
        prepared = self.engine.prepare(spec, inp, options, limits)
        persisted = services.persisted_positions(job.pk)
        # Resume after the persisted rows: results are deterministic per position.
        remaining = [p for p in prepared.positions if p not in persisted]
        lens = self._load(spec)
        loaded = time.monotonic()
        services.do_record_metadata(
            job.pk, worker_id, self.engine.metadata(lens), total=len(prepared.positions)
        )

        def on_batch(update) -> bool:
            fresh = [row for row in update.rows if row["position"] not in persisted]
            go_on = services.do_record_batch(job.pk, worker_id, fresh)
            persisted.update(row["position"] for row in fresh)
            return go_on and not self._stopping and job.pk not in self._cancelled

        status, timings = "done", {}
        if remaining:
            result = self.engine.analyze(
                lens,
                inp,
                options,
                positions=remaining,
                on_batch=on_batch,
                should_cancel=lambda: job.pk in self._cancelled,
                limits=limits,
            )
            leftover = [row for row in result.rows if row["position"] not in persisted]
            if leftover:  # an engine may hand the last rows only in its result
                services.do_record_batch(job.pk, worker_id, leftover)
            status, timings = result.status, dict(result.timings or {})
        timings.update(load_s=round(loaded - started, 3), attempt_s=round(time.monotonic() - started, 3))
        if job.pk in self._cancelled or services.is_cancel_requested(job.pk):
            # A cancelled job never shows as done, even if its last batch completed it.
            services.do_finish_job(job.pk, worker_id, Analysis.Status.CANCELLED, timings=timings)
        elif status == "done":
            services.do_finish_job(job.pk, worker_id, Analysis.Status.DONE, timings=timings)
        elif self._stopping:
            services.do_requeue_job(job.pk, worker_id)
        # else: the job was taken from this worker (re-queued as stale); its new worker carries on.


_workers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_worker() -> LensWorker:
    """The worker of this event loop (the in-memory layer is per loop, so is the worker)."""
    loop = asyncio.get_running_loop()
    worker = _workers.get(loop)
    if worker is None:
        worker = _workers[loop] = LensWorker()
    return worker


class LensChannelWorker(Worker):
    """channels' Worker, plus: it starts the lens worker at once (channels would create the background
    consumer only when a first message arrives), optionally stops it on SIGTERM/SIGINT, and returns when
    the lens worker has stopped."""

    def __init__(self, *args, install_signal_handlers=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.install_signal_handlers = install_signal_handlers

    async def handle(self):
        listening = asyncio.ensure_future(super().handle())
        if WORKER_CHANNEL not in self.channels:
            await listening
            return
        lens_worker = get_worker()
        if self.install_signal_handlers:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, lens_worker.request_stop)
        scope = {"type": "channel", "channel": WORKER_CHANNEL}
        self.get_or_create_application_instance(WORKER_CHANNEL, scope).put_nowait({"type": "worker.start"})
        finished = asyncio.ensure_future(lens_worker.finished.wait())
        await asyncio.wait([listening, finished], return_when=asyncio.FIRST_COMPLETED)
        if listening.done() and not finished.done():
            lens_worker.request_stop()  # the channel layer failed: hand the job back before exiting
            await finished
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        for scope_id in list(self.application_instances):
            self.delete_application_instance(scope_id)
        if listening.done() and not listening.cancelled() and listening.exception():
            raise listening.exception()
