"""Retention: `manage.py purge` (and its old name) prunes the request log, expired sessions, records of
workers long gone and, when LENSWEB_ANALYSIS_RETENTION_DAYS is set, finished analyses with their rows;
queued and running analyses are never deleted. The app runs the cheap part by itself, hourly."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.utils import timezone

from lensweb.analyses.models import Analysis, AnalysisRow, WorkerRecord
from lensweb.cache.models import CacheLink
from lensweb.monitoring import requestlog
from lensweb.monitoring.models import RequestLogEntry
from lensweb.results.models import ShareLink

from .conftest import make_job, make_worker

pytestmark = pytest.mark.django_db

S, W = Analysis.Status, WorkerRecord.State


def days_ago(n: float):
    return timezone.now() - timedelta(days=n)


def job(owner, status, ended_days_ago: float | None, created_days_ago: float = 100, rows: int = 2):
    created = days_ago(created_days_ago)
    finished = days_ago(ended_days_ago) if ended_days_ago is not None else None
    made = make_job(owner, status, created, started=created, finished=finished, done=rows, total=rows)
    AnalysisRow.objects.bulk_create(
        [AnalysisRow(analysis=made, position=p, data={"position": p, "mse": 0.1}) for p in range(rows)]
    )
    return made


def purge(command: str = "purge") -> str:
    out = io.StringIO()
    call_command(command, stdout=out)
    return out.getvalue()


@pytest.fixture
def retention(settings):
    settings.LENSWEB_REQUEST_LOG_RETENTION_DAYS = 30
    settings.LENSWEB_WORKER_RECORD_RETENTION_DAYS = 7
    settings.LENSWEB_ANALYSIS_RETENTION_DAYS = 60
    return settings


def test_finished_analyses_past_retention_go_with_their_rows_unfinished_ones_never(alice, bob, retention):
    gone = [
        job(alice, S.DONE, ended_days_ago=61),
        job(alice, S.FAILED, ended_days_ago=90),
        job(bob, S.CANCELLED, ended_days_ago=None, created_days_ago=70),  # cancelled before it started
    ]
    ShareLink.objects.create(analysis=gone[0], created_by=alice)
    kept = [
        job(alice, S.DONE, ended_days_ago=59, created_days_ago=200),  # ran long ago, ended recently
        job(alice, S.QUEUED, ended_days_ago=None, created_days_ago=400),
        job(bob, S.RUNNING, ended_days_ago=None, created_days_ago=400),
    ]
    follower = job(bob, S.QUEUED, ended_days_ago=None, created_days_ago=61, rows=0)
    CacheLink.objects.create(analysis=follower, key="k", lens_identity="i", engine_version="1", n_tokens=2,
                             leader=gone[0])  # fmt: skip
    output = purge()
    assert set(Analysis.objects.values_list("pk", flat=True)) == {j.pk for j in [*kept, follower]}
    assert not AnalysisRow.objects.filter(analysis_id__in=[j.pk for j in gone]).exists()
    assert AnalysisRow.objects.count() == 2 * len(kept)
    assert not ShareLink.objects.exists()
    assert CacheLink.objects.get(pk=follower.pk).leader is None  # freed: a worker may claim it now
    assert "analyses: 3 finished analyses deleted (retention 60 days)" in output


def test_analyses_are_kept_forever_by_default(alice, settings):
    settings.LENSWEB_ANALYSIS_RETENTION_DAYS = 0
    job(alice, S.DONE, ended_days_ago=5000)
    assert "kept forever (LENSWEB_ANALYSIS_RETENTION_DAYS is 0)" in purge()
    assert Analysis.objects.count() == 1 and AnalysisRow.objects.count() == 2


def test_a_job_requeued_meanwhile_is_not_deleted(alice, retention, monkeypatch):
    """Each batch is locked and checked again: a staff re-queue between the look-up and the delete wins."""
    from lensweb.monitoring import retention as module

    old = job(alice, S.FAILED, ended_days_ago=100)
    real = module.Analysis.objects.select_for_update

    def requeue_first(*args, **kwargs):
        Analysis.objects.filter(pk=old.pk).update(status=S.QUEUED)
        return real(*args, **kwargs)

    monkeypatch.setattr(module.Analysis.objects, "select_for_update", requeue_first)
    assert module.purge_analyses() == 0
    assert Analysis.objects.get().status == S.QUEUED and AnalysisRow.objects.count() == 2


def test_many_analyses_go_in_batches(alice, retention, monkeypatch):
    from lensweb.monitoring import retention as module

    monkeypatch.setattr(module, "ANALYSIS_BATCH", 3)
    for _ in range(7):
        job(alice, S.DONE, ended_days_ago=100, rows=1)
    job(alice, S.DONE, ended_days_ago=1, rows=1)
    assert module.purge_analyses() == 7 and Analysis.objects.count() == 1


def test_records_of_workers_long_stopped_or_lost_go(alice, retention):
    now = timezone.now()
    old_stopped = make_worker("a:1", heartbeat_age=8 * 86400, state=W.STOPPED, now=now)
    old_lost = make_worker("b:2", heartbeat_age=8 * 86400, state=W.LOST, now=now)
    recent = make_worker("c:3", heartbeat_age=6 * 86400, state=W.STOPPED, now=now)
    silent = make_worker("d:4", heartbeat_age=30 * 86400, state=W.IDLE, now=now)  # not yet marked lost
    ran = job(alice, S.DONE, ended_days_ago=1)
    Analysis.objects.filter(pk=ran.pk).update(worker=old_stopped)
    output = purge()
    assert set(WorkerRecord.objects.values_list("pk", flat=True)) == {recent.pk, silent.pk}
    assert Analysis.objects.get(pk=ran.pk).worker is None and AnalysisRow.objects.count() == 2
    assert "worker records: 2 of stopped or lost workers deleted" in output
    assert old_lost.pk not in WorkerRecord.objects.values_list("pk", flat=True)


def test_expired_sessions_go(client, alice, retention):
    client.force_login(alice)
    live = client.session.session_key
    Session.objects.create(session_key="x" * 32, session_data="", expire_date=days_ago(1))
    assert "sessions: 1 expired deleted" in purge()
    assert list(Session.objects.values_list("session_key", flat=True)) == [live]


def test_the_old_command_name_purges_everything_too(alice, retention):
    entry = requestlog.record(client="api", method="POST", endpoint="/api/v1/analyses", kind="analysis",
                              outcome="accepted", user=alice)  # fmt: skip
    RequestLogEntry.objects.filter(pk=entry.pk).update(created_at=days_ago(31))
    make_worker("a:1", heartbeat_age=8 * 86400, state=W.STOPPED)
    job(alice, S.DONE, ended_days_ago=61)
    output = purge("purge_request_log")
    assert "request log: 1 entries deleted (retention 30 days)" in output
    assert not RequestLogEntry.objects.exists() and not WorkerRecord.objects.exists()
    assert not Analysis.objects.exists()


def test_the_hourly_purge_from_the_app_prunes_sessions_and_workers_but_no_analysis(
    alice, retention, monkeypatch
):
    Session.objects.create(session_key="x" * 32, session_data="", expire_date=days_ago(1))
    make_worker("a:1", heartbeat_age=8 * 86400, state=W.LOST)
    job(alice, S.DONE, ended_days_ago=61)
    monkeypatch.setattr(requestlog, "_last_purge", None)
    requestlog.record(client="api", method="POST", endpoint="/x", kind="analysis", outcome="accepted")
    assert not Session.objects.exists() and not WorkerRecord.objects.exists()
    assert Analysis.objects.count() == 1  # only `manage.py purge` deletes analyses (it may be many rows)
