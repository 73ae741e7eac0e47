"""The inference worker: one per process (a model wants the whole device), one job at a time, except that
queued analyses of the lens and options it is running join its batches (lensweb.analyses.runs).

It polls the queue (doorbells only cut latency), claims jobs in fair order, runs the engine in a thread
so that cancel and doorbell messages keep arriving, persists each batch before announcing it, heartbeats,
and re-queues jobs whose worker went silent. Stopping (SIGTERM) finishes the current batch, hands the
rest of the job back to the queue and exits. Lenses load lazily, on the first job that needs one.

Outages: a database error while running a job (SQLite "database is locked", a PostgreSQL restart) hands
the job back to the queue, where it resumes after its persisted rows; only engine errors fail a job. A
channel layer (Redis) that fails does not stop the worker: it goes on polling the database and listens
again with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import time
import weakref

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.worker import Worker
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connections

from inference.errors import InputError, LensError, OptionError
from inference.types import AnalysisInput, AnalysisOptions, GenerationOptions

from . import catalog, notify, services, status, warmup
from .engine import get_engine
from .models import Analysis, Generation, JobStatus, Probe
from .notify import WORKER_CHANNEL
from .runs import AnalysisRun

log = logging.getLogger("lensweb.worker")

# The database is away for a moment (locked, restarting, a dropped connection): not the job's fault.
DATABASE_AWAY = (OperationalError, InterfaceError)
# Listening on the channel layer again after it failed: first and longest wait, and how long a probe of
# the layer may take (seconds).
LISTEN_RETRY_FIRST, LISTEN_RETRY_MAX, LISTEN_PROBE_TIMEOUT = 1.0, 15.0, 5.0


def retry_while_database_away(action, what: str, give_up_after: float, stop=lambda: False):
    """action(), retried with backoff while the database is away; None once `give_up_after` seconds have
    passed (or `stop()` says so) without success. Each try starts on a fresh connection."""
    deadline = time.monotonic() + give_up_after
    delay = 0.2
    while True:
        try:
            return action()
        except DATABASE_AWAY as exc:
            if time.monotonic() + delay > deadline or stop():
                log.error("could not %s: the database is still away (%s); giving up", what, exc)
                return None
            log.warning("could not %s (%s); trying again in %.1f s", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            # Only after a failure: a broken connection is never reused (a good one, e.g. a test's open
            # transaction, is left alone).
            connections.close_all()


def public_error(exc: LensError, lens_id: str) -> str:
    """What the job's owner reads: the input's or the options' fault in the engine's words; the server's files
    (a checkpoint, a model, the registry) in general words, with the paths and library text in the log."""
    if isinstance(exc, InputError | OptionError):
        return str(exc)
    log.error("lens %s: %s: %s", lens_id, type(exc).__name__, exc)
    return f"lens {lens_id} could not be loaded on this server ({exc.code}); the server log has the details"


def memory_in_use() -> int | None:
    """Device memory when a GPU holds the lens, else this process' resident set."""
    # torch may be half-imported by the job thread while the heartbeat asks: `cuda` is then not there yet.
    cuda = getattr(sys.modules.get("torch"), "cuda", None)
    with contextlib.suppress(AttributeError):
        if cuda is not None and cuda.is_available() and cuda.is_initialized():
            return int(cuda.memory_allocated())
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
        self._cancelled: set[tuple[str, int]] = set()  # (kind, id)
        self._jobs: dict[tuple[str, int], None] = {}  # the running jobs' (kind, id), in the order taken
        self._task: asyncio.Task | None = None
        self._acquired = None  # the spec whose lens the running job holds (released when it ends)

    # --- control, from the event loop ----------------------------------------------------------------

    def start(self, channel_name: str = "") -> asyncio.Task:
        if self._task is None:
            self.channel_name = channel_name
            self._task = asyncio.get_running_loop().create_task(self.run(), name="lens-worker")
        elif channel_name and channel_name != self.channel_name:
            # The consumer restarted after the channel layer failed, on a new channel of its own.
            self.channel_name = channel_name
            if self.record is not None:
                asyncio.get_running_loop().create_task(self._record_channel(channel_name))
        return self._task

    async def _record_channel(self, channel_name: str) -> None:
        try:
            await database_sync_to_async(services.worker_listens_on)(self.record.pk, channel_name)
        except Exception:  # doorbells only cut latency: the worker polls regardless
            log.exception("could not record the worker's new channel")

    def ring(self) -> None:
        self._wake.set()

    def request_cancel(self, job_id, kind: str = Analysis.kind) -> None:
        self._cancelled.add((kind, int(job_id)))

    def request_stop(self) -> None:
        if not self._stopping:
            log.info("worker stopping: finishing the current batch, then re-queueing the rest")
        self._stopping = True
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def current_jobs(self) -> list[tuple[str, int]]:
        """The running jobs' (kind, id): one, or the analyses sharing its batches."""
        return list(self._jobs)

    def running(self, job) -> None:
        self._jobs[(job.kind, job.pk)] = None

    def ended(self, job) -> None:
        self._jobs.pop((job.kind, job.pk), None)
        self._cancelled.discard((job.kind, job.pk))

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
                    except DATABASE_AWAY as exc:  # away for a moment: keep serving
                        log.warning("worker step: the database is away (%s); polling again", exc)
                        worked = False
                    except Exception:
                        log.exception("worker step failed; retrying after the poll interval")
                        worked = False
                    if not worked and not self._stopping:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), settings.LENSWEB_POLL_INTERVAL)
            finally:
                heartbeat.cancel()
                try:
                    await database_sync_to_async(services.worker_stopped)(self.record.pk)
                except DATABASE_AWAY as exc:  # its record goes "lost" once stale
                    log.warning("could not record that the worker stopped: %s", exc)
                log.info("worker %s stopped", self.record.name)
        finally:
            self.finished.set()

    async def step(self) -> bool:
        """Re-queue stale jobs, claim the next job of either kind and run it. False when there was none."""
        await database_sync_to_async(services.requeue_stale_jobs)()
        job = await database_sync_to_async(services.claim_next_job)(self.record)
        if job is None:
            return False
        self.running(job)
        try:
            # Off the event loop, and not in Django's one sync thread: requests and heartbeats go on.
            await sync_to_async(self._execute, thread_sensitive=False)(job)
        finally:
            for key in list(self._jobs):
                self._cancelled.discard(key)
            self._jobs.clear()
        return True

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(settings.LENSWEB_HEARTBEAT_INTERVAL)
            try:
                held = await self.tidy()
                cancel = await database_sync_to_async(services.worker_heartbeat)(
                    self.record.pk,
                    self.current_jobs,
                    held["lens_id"],
                    held["device"],
                    memory_in_use(),
                    held["cached"],
                )
                if held["changed"]:  # a lens let go, recorded just now: the status strips read it again
                    await sync_to_async(notify.status_changed)()
            except Exception:
                log.exception("heartbeat failed")
                continue
            self._cancelled |= cancel

    async def tidy(self) -> dict:
        """Staff's pins and unloads (admin) applied, an idle device copy let go (LENSWEB_IDLE_UNLOAD_S), and
        what this process holds now, for the heartbeat. The lens cache's work runs off the event loop and off
        Django's one sync thread (it may wait for a load in progress)."""
        pinned, unload = await database_sync_to_async(services.worker_directives)(self.record.pk)
        held = await sync_to_async(self._tidy_lenses, thread_sensitive=False)(pinned, unload)
        if unload:
            await database_sync_to_async(services.unloads_done)(self.record.pk, unload)
        return held

    def _tidy_lenses(self, pinned: set[str], unload: set[str]) -> dict:
        """What the process holds after the tidy; `changed`: it let go of something (the strips re-read)."""
        changed = self.engine.tidy(pinned=pinned, unload=unload)
        return {**self.engine.held(), "changed": changed}

    # --- one job, in a worker thread ---------------------------------------------------------------------

    def _execute(self, job: Analysis | Generation) -> None:
        try:
            if job.kind == Analysis.kind:
                AnalysisRun(self, job).run()  # it ends each of its jobs, on an error too
            else:
                run = {Generation.kind: self._run_generation, Probe.kind: self._run_probe}[job.kind]
                try:
                    run(job)
                except Exception as exc:
                    self.job_failed(job, exc)
        finally:
            if self._acquired is not None:
                self.engine.release(self._acquired)
                self._acquired = None
            connections.close_all()  # this pool thread's connections; the next job opens fresh ones

    def job_failed(self, job, exc: Exception) -> None:
        """End a job on an error: the engine's (the input's, or the lens') fails it; the database away hands
        it back to the queue, to resume after its persisted rows (the attempt counts); anything else fails it
        as an internal error. Called where the error was caught."""
        worker_id, kind = self.record.pk, job.kind
        if isinstance(exc, LensError):
            error = public_error(exc, job.lens_id)
            self._write_outcome(
                job, "fail", lambda: services.do_fail_job(job.pk, worker_id, error, kind=kind)
            )
        elif isinstance(exc, DATABASE_AWAY):
            error = f"{type(exc).__name__}: {exc}"
            log.warning("%s %s: database error (%s); handing it back to the queue", kind, job.pk, error)
            self._write_outcome(
                job, "hand back", lambda: services.do_requeue_job(job.pk, worker_id, error=error, kind=kind)
            )
        else:
            log.error("%s %s failed", kind, job.pk, exc_info=exc)
            error = f"internal error ({type(exc).__name__}): {exc}"
            self._write_outcome(
                job, "fail", lambda: services.do_fail_job(job.pk, worker_id, error, kind=kind)
            )

    def _write_outcome(self, job, what: str, action) -> None:
        """Write how a job ended, retrying while the database is away. Past LENSWEB_STALE_AFTER (or when
        stopping) the job is left running without a heartbeat: the stale rule re-queues it."""
        retry_while_database_away(
            action, f"{what} {job.kind} {job.pk}", settings.LENSWEB_STALE_AFTER, lambda: self._stopping
        )

    def is_cancelled(self, job) -> bool:
        return (job.kind, job.pk) in self._cancelled

    def holds(self, spec) -> bool:
        return self.engine.holds(spec)

    def load(self, spec):
        """The job's lens on the device, in use until the job ends (_execute releases it): a switch from another
        lens waits for the jobs running on that one (lenscache)."""
        if self.holds(spec):
            lens = self.engine.acquire(spec)
        else:
            warmup.wait_until_warm(timeout=600)  # an embedded worker: after the web process' tokenizer reads
            status.worker_loading(self.record.pk, spec.id)
            started, lens = time.monotonic(), None
            try:
                lens = self.engine.acquire(spec)
            finally:
                seconds = time.monotonic() - started
                source = self.engine.last_load_source() if lens is not None else ""
                status.worker_loaded(self.record.pk, spec.id if lens is not None else None, seconds, source)
            log.info("lens %s loaded (from %s) in %.1f s", spec.id, source, seconds)
            catalog.record_loaded(spec.id, self.engine.metadata(lens))  # its base, layer and T for the lists
        self._acquired = spec
        return lens

    def progress_reporter(self, job):
        """The engine's on_progress for `job`: written at most every LENSWEB_PROGRESS_EVERY seconds (a
        decode step of a small lens takes milliseconds)."""
        last = [-float("inf")]

        def on_progress(progress) -> None:
            now = time.monotonic()
            if now - last[0] >= settings.LENSWEB_PROGRESS_EVERY:
                last[0] = now
                self.report_progress(job, progress.phase, progress.done)

        return on_progress

    def report_progress(self, job, phase: str, partial: float | None) -> None:
        try:
            services.do_record_progress(job.pk, self.record.pk, phase, partial)
        except Exception as exc:  # progress is a courtesy: the job goes on without it
            log.warning("could not record the progress of analysis %s: %s", job.pk, exc)

    def _run_probe(self, probe: Probe) -> None:
        """A score (one encoder pass over the owner's explanation) or activations (one forward of the text),
        on its analysis' text and options: answered in one step, so an attempt after a crash starts again."""
        close_old_connections()
        started = time.monotonic()
        lens = self.load(self.engine.get_spec(probe.lens_id))
        loaded = time.monotonic()
        inp, limits, asked = AnalysisInput.from_dict(probe.input), services.limits(), probe.request
        if probe.what == Probe.What.SCORE:
            options = AnalysisOptions.from_dict(probe.options)
            row = self.engine.score(
                lens,
                inp,
                options,
                asked["position"],
                explanation=asked.get("explanation"),
                explanation_token_ids=asked.get("explanation_token_ids"),
                limits=limits,
            )
            own = services.row_at(probe.analysis_id, row.position)
            delta = row.mse - own["mse"] if isinstance((own or {}).get("mse"), int | float) else None
            result = {"row": row.to_dict(), "delta_mse": delta}
        elif probe.what == Probe.What.DESCRIBE:
            described = self.engine.describe(
                lens,
                asked["vectors"],
                AnalysisOptions.from_dict(probe.options),
                token_ids=asked.get("token_ids"),
                limits=limits,
                should_cancel=lambda: self.is_cancelled(probe),
            )
            left_out = ("token_ids", "positions", "rendered_text")  # the caller's vectors say it all
            metadata = {k: v for k, v in described.metadata.items() if k not in left_out}
            result = {"rows": [row.to_dict() for row in described.rows], "metadata": metadata}
        elif probe.what == Probe.What.COMPARE:
            a, b = (
                side["vector"]
                if "vector" in side
                else self.engine.activations(
                    lens, AnalysisInput.from_dict(side["input"]), [side["position"]], limits=limits
                )[0]
                for side in (asked["a"], asked["b"])
            )
            difference = [x - y for x, y in zip(a, b, strict=True)]
            described = self.engine.describe(
                lens, [difference], AnalysisOptions.from_dict(probe.options), limits=limits
            )
            result = {
                "row": described.rows[0].to_dict(),
                "diff_norm": math.sqrt(sum(d * d for d in difference)),
                "norms": [math.sqrt(sum(x * x for x in v)) for v in (a, b)],
            }
        else:
            vectors = self.engine.activations(lens, inp, asked["positions"], limits=limits)
            result = {"positions": asked["positions"], "activations": vectors}
        timings = {"load_s": round(loaded - started, 3), "attempt_s": round(time.monotonic() - started, 3)}
        services.do_finish_job(
            probe.pk, self.record.pk, Analysis.Status.DONE, timings=timings, kind=Probe.kind, result=result
        )

    def _run_generation(self, generation: Generation) -> None:
        """Generate, persisting and streaming the tokens as they come; deterministic for its seed, so an
        attempt after a crash or a hand-back starts again and produces the same text."""
        close_old_connections()
        started = time.monotonic()
        worker_id, pk = self.record.pk, generation.pk
        spec = self.engine.get_spec(generation.lens_id)
        lens = self.load(spec)
        loaded = time.monotonic()
        tokenizer = lens.tokenizer
        state = {"at": 0.0, "go_on": True}

        def on_tokens(sequences: list[list[int]]) -> None:
            now = time.monotonic()
            if now - state["at"] < services.TOKENS_EVERY_SECONDS:
                return
            state["at"] = now
            samples = [
                {"text": tokenizer.decode(ids), "token_ids": list(ids), "finished": False}
                for ids in sequences
            ]
            steps = max((len(ids) for ids in sequences), default=0)
            state["go_on"] = services.do_record_tokens(pk, worker_id, samples, steps)

        def should_cancel() -> bool:
            return bool(self.is_cancelled(generation) or self._stopping or not state["go_on"])

        result = self.engine.generate(
            lens,
            AnalysisInput.from_dict(generation.input),
            GenerationOptions(**generation.options),
            should_cancel=should_cancel,
            limits=services.limits(),
            on_tokens=on_tokens,
        )
        timings = {
            "load_s": round(loaded - started, 3),
            "generate_s": round(time.monotonic() - loaded, 3),
            "attempt_s": round(time.monotonic() - started, 3),
        }
        if self.is_cancelled(generation) or services.is_cancel_requested(pk, Generation.kind):
            services.do_finish_job(
                pk, worker_id, JobStatus.CANCELLED, timings, kind=Generation.kind, result=result
            )
        elif self._stopping and result.get("cancelled"):
            services.do_requeue_job(pk, worker_id, kind=Generation.kind)  # graceful: it starts again
        elif state["go_on"]:
            result = {**result, "cancelled": False}
            services.do_finish_job(
                pk, worker_id, JobStatus.DONE, timings, kind=Generation.kind, result=result
            )
        # else: taken from this worker (re-queued as stale); its new worker starts again.


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
    the lens worker has stopped. The channel layer failing (Redis down) does not stop it: doorbells only
    cut latency, so the lens worker goes on claiming from the database while this listens again, with
    backoff, until the layer answers."""

    def __init__(self, *args, install_signal_handlers=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.install_signal_handlers = install_signal_handlers

    async def handle(self):
        if WORKER_CHANNEL not in self.channels:
            await super().handle()
            return
        lens_worker = get_worker()
        if self.install_signal_handlers:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, lens_worker.request_stop)
        finished = asyncio.ensure_future(lens_worker.finished.wait())
        try:
            await self._listen_until(finished)
        finally:
            for scope_id in list(self.application_instances):
                self.delete_application_instance(scope_id)

    async def _listen_until(self, finished: asyncio.Future) -> None:
        loop = asyncio.get_running_loop()
        delay, fresh = LISTEN_RETRY_FIRST, False
        while True:
            self._start_consumer(fresh)
            since, fresh = loop.time(), True
            listening = asyncio.ensure_future(super().handle())
            await asyncio.wait([listening, finished], return_when=asyncio.FIRST_COMPLETED)
            if finished.done():
                listening.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listening
                return
            error = listening.exception() if not listening.cancelled() else None
            if loop.time() - since > LISTEN_RETRY_MAX:
                delay = LISTEN_RETRY_FIRST  # it had been listening a while: a new outage
            log.warning(
                "the channel layer failed (%s: %s); the worker goes on polling the database, and listens "
                "again once the layer answers",
                type(error).__name__,
                error,
            )
            while True:
                await asyncio.wait([finished], timeout=delay)
                if finished.done():
                    return
                delay = min(delay * 2, LISTEN_RETRY_MAX)
                if await self._layer_answers():
                    break
            log.warning("the channel layer answers again; listening")

    async def _layer_answers(self) -> bool:
        """One round trip that changes nothing: take a channel no one uses out of a group no one uses."""
        try:
            await asyncio.wait_for(
                self.channel_layer.group_discard("lensweb.probe", "lensweb.probe!none"), LISTEN_PROBE_TIMEOUT
            )
        except Exception:
            return False
        return True

    def _start_consumer(self, fresh: bool) -> None:
        """The lens worker's consumer: it starts the worker, and listens on its own channel (cancels and
        doorbells for this worker). After the layer failed, a fresh one (on a new channel) replaces it,
        dead or not."""
        details = self.application_instances.get(WORKER_CHANNEL)
        if details is not None and (fresh or details["future"].done()):
            if details["future"].done() and not details["future"].cancelled():
                log.debug("the worker's consumer ended: %r", details["future"].exception())
            self.delete_application_instance(WORKER_CHANNEL)
        scope = {"type": "channel", "channel": WORKER_CHANNEL}
        self.get_or_create_application_instance(WORKER_CHANNEL, scope).put_nowait({"type": "worker.start"})
