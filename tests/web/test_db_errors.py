"""A database that fails for a moment (SQLite "database is locked", a PostgreSQL restart) hands the job
back to the queue instead of failing it; `attempts` counts crashes and errors, not graceful hand-backs.

The failures are raised at the database driver's edge (the driver's own OperationalError, through
Django's error wrapper, as a locked SQLite or a dropped PostgreSQL connection raises it) while a real
worker runs the tiny lens. With DATABASE_URL on PostgreSQL they run there too; test_distributed.py kills a
real worker process' PostgreSQL connections.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.db.backends import utils as db_utils
from django.utils import timezone

from lensweb.analyses import services
from lensweb.analyses import services as generations
from lensweb.analyses.models import Analysis, AnalysisRow, Generation
from lensweb.analyses.worker import LensWorker
from tests.conftest import scaled

from .conftest import SLOW_TEXT, job_state, token_ids, wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]

submit = database_sync_to_async(services.do_submit)
WRITES = ("INSERT", "UPDATE", "DELETE")


class DatabaseAway:
    """Installed on Django's cursor: statements that `matches` fail with the driver's OperationalError.

    `trigger` (a predicate of the upper-cased SQL) picks the statement that fails first; from then on
    every write to the tables named in `tables` fails for `seconds` more. `every`: every triggering
    statement fails, not only the `nth`."""

    def __init__(self, trigger, nth=1, seconds=0.0, tables=("ANALYSES_ANALYSIS",), every=False):
        self.trigger, self.nth, self.seconds, self.tables, self.every = trigger, nth, seconds, tables, every
        self.seen = 0
        self.failed = 0
        self.until = 0.0
        self._lock = threading.Lock()

    def fails(self, sql: str) -> bool:
        text = sql.lstrip().upper()
        with self._lock:
            if self.trigger(text):
                self.seen += 1
                if self.seen == self.nth or (self.every and self.seen >= self.nth):
                    self.until = time.monotonic() + self.seconds
                    self.failed += 1
                    return True
            away = time.monotonic() < self.until and text.split(None, 1)[0] in WRITES
            if away and any(f'"{table}' in text for table in self.tables):
                self.failed += 1
                return True
        return False

    def install(self, monkeypatch):
        original = db_utils.CursorWrapper._execute
        away = self

        def _execute(cursor, sql, params, *args):
            if away.fails(sql):
                with cursor.db.wrap_database_errors:  # the driver's error becomes Django's, as in production
                    raise cursor.db.Database.OperationalError("database is locked")
            return original(cursor, sql, params, *args)

        monkeypatch.setattr(db_utils.CursorWrapper, "_execute", _execute)
        return self


def row_insert(sql: str) -> bool:
    return sql.startswith("INSERT") and '"ANALYSES_ANALYSISROW"' in sql  # SQLite: INSERT OR IGNORE INTO


def rows_of(job_id):
    return list(
        AnalysisRow.objects.filter(analysis_id=job_id).order_by("position").values_list("position", flat=True)
    )


async def run_until_final(job_id, timeout=120, worker=None):
    worker = worker or LensWorker()
    worker.start()
    try:
        await wait_for(lambda: job_state(job_id).is_final, timeout=scaled(timeout))
    finally:
        worker.request_stop()
        await wait_for(worker.finished.is_set, timeout=scaled(30))
    return worker


@pytest.mark.parametrize("away_for", [0.0, 1.5], ids=["one-failed-insert", "away-for-1.5s"])
async def test_a_database_error_mid_job_hands_it_back_and_it_resumes_with_every_row(
    alice, fast_worker, warm_lens, monkeypatch, caplog, away_for
):
    """The 5th row's insert fails. Then (away-for-1.5s) every write to the analyses fails for 1.5 s more,
    the hand-back included: it is retried until the database answers."""
    monkeypatch.setenv("LENSWEB_ROWS_BUDGET", "1")
    job = await submit(alice, None, {"text": SLOW_TEXT}, {})
    away = DatabaseAway(row_insert, nth=5, seconds=away_for).install(monkeypatch)
    caplog.set_level(logging.WARNING, logger="lensweb.worker")
    worker = await run_until_final(job.pk)
    job = await database_sync_to_async(job_state)(job.pk)
    assert away.failed >= 1, "the injected database error never fired"
    assert job.status == "done", f"a database error failed the job: {job.error!r}"
    assert job.error == ""
    # Claimed, handed back after the error (which counts), claimed again by the same worker.
    assert job.attempts == 2 and job.worker_id == worker.record.pk
    positions = await database_sync_to_async(rows_of)(job.pk)
    assert positions == list(range(len(token_ids(SLOW_TEXT)))) == list(range(job.progress_total))
    assert job.progress_done == job.progress_total
    messages = [r.getMessage() for r in caplog.records]
    assert any("handing it back to the queue" in m for m in messages), messages
    if away_for:
        assert any("trying again" in m for m in messages), "the hand-back was never retried"


async def test_a_job_whose_rows_never_persist_fails_once_it_has_used_up_its_attempts(
    alice, fast_worker, warm_lens, monkeypatch
):
    """An error that does not go away must not send a job round for ever: errors count as attempts."""
    fast_worker.LENSWEB_MAX_ATTEMPTS = 2
    job = await submit(alice, None, {"text": "never stored"}, {})
    away = DatabaseAway(row_insert, every=True).install(monkeypatch)
    await run_until_final(job.pk)
    job = await database_sync_to_async(job_state)(job.pk)
    assert away.failed == 2
    assert job.status == "failed" and job.attempts == 2
    assert "the database failed 2 times" in job.error and "database is locked" in job.error


async def test_a_database_error_storing_a_generation_hands_it_back_and_it_completes(
    alice, fast_worker, warm_lens, monkeypatch
):
    """Storing the result (the UPDATE that sets finished_at) fails once: the generation goes back to the
    queue, starts again and completes."""
    generation = await database_sync_to_async(generations.do_submit_generation)(
        alice, None, {"text": "Once upon a time"}, {"max_new_tokens": 4, "seed": 3}
    )
    away = DatabaseAway(
        lambda sql: sql.startswith('UPDATE "ANALYSES_GENERATION"') and '"FINISHED_AT"' in sql,
        tables=("ANALYSES_GENERATION",),
    ).install(monkeypatch)
    worker = LensWorker()
    worker.start()
    try:
        await wait_for(
            lambda: Generation.objects.get(pk=generation.pk).status in Generation.FINAL, timeout=scaled(120)
        )
    finally:
        worker.request_stop()
        await wait_for(worker.finished.is_set, timeout=scaled(30))
    generation = await database_sync_to_async(Generation.objects.get)(pk=generation.pk)
    assert away.failed == 1
    assert generation.status == "done", f"a database error failed the generation: {generation.error!r}"
    assert generation.attempts == 2 and generation.result


def test_graceful_hand_backs_do_not_use_up_attempts_but_crashes_and_errors_do(alice, settings):
    """The stale rule ("failed once it has used up its attempts") with hand-backs in between."""
    settings.LENSWEB_MAX_ATTEMPTS = 2
    settings.LENSWEB_STALE_AFTER = 30
    job = services.do_submit(alice, None, {"text": "a b c"}, {})

    def claim():
        worker = services.register_worker("w")
        claimed = services.claim_next_job(worker)
        assert claimed is not None and claimed.pk == job.pk
        return worker

    def crash(worker):
        Analysis.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=31))
        assert services.requeue_stale_jobs() == [job.pk]

    for _ in range(5):  # stopping workers (SIGTERM) hand it back again and again: never counted
        assert services.do_requeue_job(job.pk, claim().pk)
        job.refresh_from_db()
        assert (job.status, job.attempts) == ("queued", 0)
    crash(claim())  # a crash counts
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("queued", 1)
    assert services.do_requeue_job(job.pk, claim().pk)  # graceful: still 1
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("queued", 1)
    crash(claim())  # the second crash uses them up
    job.refresh_from_db()
    assert job.status == "failed" and job.attempts == 2 and "stopped 2 times" in job.error


def test_an_error_hand_back_keeps_the_attempt_and_fails_the_job_whose_attempts_are_used_up(alice, settings):
    settings.LENSWEB_MAX_ATTEMPTS = 2
    job = services.do_submit(alice, None, {"text": "a b c"}, {})
    worker = services.register_worker("w")
    services.claim_next_job(worker)
    assert services.do_requeue_job(job.pk, worker.pk, error="OperationalError: database is locked")
    job.refresh_from_db()
    assert (job.status, job.attempts, job.worker_id) == ("queued", 1, None)
    services.claim_next_job(worker)
    assert services.do_requeue_job(job.pk, worker.pk, error="OperationalError: server closed the connection")
    job.refresh_from_db()
    assert job.status == "failed" and job.attempts == 2
    assert "server closed the connection" in job.error
