"""The dashboard's numbers against a known set of rows (conftest.known_jobs), at a fixed `now`."""

import pytest

from lensweb.analyses.models import Analysis, WorkerRecord
from lensweb.monitoring import stats

from .conftest import NOW, make_job, make_worker, minutes

pytestmark = pytest.mark.django_db


def test_percentile_interpolates_between_ranks():
    assert stats.percentile([], 0.5) is None
    assert stats.percentile([7], 0.95) == 7
    assert stats.percentile(range(1, 11), 0.5) == 5.5
    assert stats.percentile([10, 1, 9, 2, 8, 3, 7, 4, 6, 5], 0.95) == pytest.approx(9.55)


def test_queue_and_status_counts(known_jobs):
    queue = stats.queue_stats(Analysis.objects.all(), NOW)
    assert (queue.depth, queue.oldest_wait_s, queue.running) == (2, 120.0, 1)
    assert stats.jobs_by_status(Analysis.objects.all()) == {
        "queued": 2,
        "running": 1,
        "done": 4,
        "failed": 1,
        "cancelled": 1,
    }
    empty = stats.queue_stats(Analysis.objects.none(), NOW)
    assert (empty.depth, empty.oldest_wait_s, empty.running) == (0, None, 0)


def test_latency_percentiles_per_window(known_jobs):
    hour = stats.latency(Analysis.objects.all(), NOW, stats.HOUR)
    # waits [10, 20, 30, 60, 60]; runs [60, 600, 600]
    assert (hour.waits, hour.wait_p50, hour.wait_p95) == (5, 30.0, 60.0)
    assert (hour.runs, hour.run_p50, hour.run_p95) == (3, 600.0, 600.0)
    day = stats.latency(Analysis.objects.all(), NOW, stats.DAY)
    # waits [10, 20, 30, 60, 60, 120]; runs [60, 300, 600, 600]
    assert (day.waits, day.wait_p50, day.wait_p95) == (6, 45.0, pytest.approx(105.0))
    assert (day.runs, day.run_p50, day.run_p95) == (4, 450.0, 600.0)


def test_error_and_cancel_rates(known_jobs):
    hour = stats.outcomes(Analysis.objects.all(), NOW, stats.HOUR)
    assert (hour.finished, hour.done, hour.failed, hour.cancelled) == (5, 3, 1, 1)
    assert (hour.error_rate, hour.cancel_rate) == (0.2, 0.2)
    day = stats.outcomes(Analysis.objects.all(), NOW, stats.DAY)
    assert day.finished == 6 and day.error_rate == pytest.approx(1 / 6)
    none = stats.outcomes(Analysis.objects.none(), NOW, stats.HOUR)
    assert (none.finished, none.error_rate, none.cancel_rate) == (0, None, None)


def test_throughput_spreads_positions_over_the_time_they_took(known_jobs):
    # J5: 300 positions over exactly the last 5 min; J9: 1200 over 10 min, half of them in the last 5.
    assert stats.throughput(Analysis.objects.all(), NOW) == pytest.approx((300 + 600) / 300)
    # All the work of the last hour: J1 600 + J2 60 + J3 10 + J5 300 + J9 1200 (J8 is 20 h old).
    assert stats.positions_between(Analysis.objects.all(), NOW - stats.HOUR, NOW, NOW) == pytest.approx(2170)


def test_a_resumed_job_counts_earlier_attempts_before_this_one(alice):
    make_job(alice, Analysis.Status.RUNNING, NOW - minutes(30), NOW - minutes(20), None, 500, 1000,
             attempt_started_at=NOW - minutes(5), attempt_base=200)  # fmt: skip
    # 300 rows in this attempt (the last 5 min), 200 before it (spread over 15 min before that).
    assert stats.throughput(Analysis.objects.all(), NOW) == pytest.approx(300 / 300)
    assert stats.positions_between(Analysis.objects.all(), NOW - minutes(20), NOW, NOW) == pytest.approx(500)


def test_series_over_the_last_hour(known_jobs):
    series = stats.series(Analysis.objects.all(), NOW)
    assert len(series.times) == len(series.throughput) == len(series.queue_depth) == 60
    assert series.times[-1] == NOW
    assert sum(v * 60 for v in series.throughput) == pytest.approx(2170)
    assert series.queue_depth[-1] == 2  # J6 and J7
    # One step per minute, each the depth at its end: J7 came at -1 min, J6 at -2 min; J4 waited from -10
    # to -9 min (cancelled); J9 waited from -10 min 20 s to -10 min, between two step ends.
    assert series.queue_depth[-2:] == [2, 2] and series.queue_depth[-3] == 1
    assert series.queue_depth[-11] == 1 and series.queue_depth[-10] == 0 and series.queue_depth[-12] == 0


def test_cache_rate_lights_up_once_analyses_carry_the_flag(known_jobs, alice):
    jobs = Analysis.objects.all()
    cache = stats.cache_stats(jobs, NOW, stats.HOUR)
    assert not cache.enabled and cache.hits == 0
    make_job(alice, Analysis.Status.DONE, NOW - minutes(1), NOW - minutes(1), NOW - minutes(1), 5,
             metadata={"cached": True})  # fmt: skip
    make_job(
        alice, Analysis.Status.DONE, NOW - minutes(1), NOW - minutes(1), NOW, 5, metadata={"cached": False}
    )
    cache = stats.cache_stats(jobs, NOW, stats.HOUR)
    # Submitted in the last hour: J1-J7, J9 and the two new ones; one hit.
    assert (cache.enabled, cache.hits, cache.submitted) == (True, 1, 10)
    assert cache.rate == pytest.approx(0.1)
    assert stats.cache_totals(jobs) == (1, 10)
    # A cache hit did no work: it adds nothing to throughput.
    assert stats.positions_between(jobs, NOW - stats.HOUR, NOW, NOW) == pytest.approx(2170 + 5)


def test_usage_today_per_user(known_jobs):
    usage = stats.usage_today(Analysis.objects.all(), NOW)
    # alice: J1-J5 (600 + 60 + 100 + 50 + 1000 positions); bob: J6, J7, J9 (J8 was yesterday).
    assert [(u.username, u.jobs, u.positions, u.done_positions) for u in usage] == [
        ("alice", 5, 1810, 970),
        ("bob", 3, 1260, 1200),
    ]


def test_workers_live_or_silent(known_jobs, settings):
    settings.LENSWEB_STALE_AFTER = 30
    busy = make_worker("w-busy", 2, WorkerRecord.State.BUSY, now=NOW)
    make_worker("w-silent", 90, WorkerRecord.State.IDLE, now=NOW)
    make_worker("w-stopped", 60, WorkerRecord.State.STOPPED, now=NOW)
    make_worker("w-ancient", 3 * 86400, WorkerRecord.State.LOST, now=NOW)
    Analysis.objects.filter(pk=known_jobs["J5"].pk).update(worker=busy)
    workers = stats.recent_workers(WorkerRecord.objects.all(), NOW)
    rows = {
        w.name: w
        for w in stats.worker_rows(workers, NOW, 30, stats.running_by_worker(Analysis.objects.all()))
    }
    assert set(rows) == {"w-busy", "w-silent", "w-stopped"}  # heard from within a day
    assert rows["w-busy"].live and rows["w-busy"].job_id == known_jobs["J5"].pk
    assert rows["w-busy"].heartbeat_age_s == 2.0
    assert not rows["w-silent"].live and not rows["w-stopped"].live
    assert stats.workers_by_state(workers) == {"starting": 0, "idle": 1, "busy": 1, "stopped": 1, "lost": 0}


def test_latency_histograms_are_counted_by_the_database(known_jobs):
    jobs = Analysis.objects.all()
    wait = stats.queue_wait_histogram(jobs)
    # Started: J1 60, J2 10, J3 30, J5 60, J8 120, J9 20.
    assert (wait.count, wait.total_s) == (6, 300.0)
    buckets = dict(wait.buckets)
    assert (buckets[10], buckets[30], buckets[60], buckets[120], buckets[float("inf")]) == (1, 3, 5, 6, 6)
    run = stats.run_time_histogram(jobs)
    # Done: J1 600, J2 60, J8 300, J9 600.
    assert (run.count, run.total_s) == (4, 1560.0)
    assert dict(run.buckets)[60] == 1 and dict(run.buckets)[300] == 2 and dict(run.buckets)[600] == 4
