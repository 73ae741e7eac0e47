"""The service layer without a worker: submit checks, fair order, positions, caps, cancel, stale jobs, rows."""

from datetime import timedelta

import pytest
from django.utils import timezone

from lensweb.analyses import services
from lensweb.analyses.models import Analysis, AnalysisRow, WorkerRecord

from .conftest import token_ids

pytestmark = pytest.mark.django_db


def submit(user, text="a b c", **options):
    return services.do_submit(user, None, {"text": text}, options)


@pytest.fixture
def worker():
    return services.register_worker("worker-channel")


def test_submit_creates_a_queued_job_with_its_total(alice):
    job = submit(alice, "one two three")
    assert job.status == Analysis.Status.QUEUED
    assert job.progress_total == len(token_ids("one two three")) == 3  # every token is a position
    assert job.options["best_of_k"] == 1 and job.options["salience"] is True
    assert job.lens_id == "tiny"


@pytest.mark.parametrize(
    "input_data, options, field",
    [
        ({"text": "   "}, {}, "text"),
        ({"text": "x"}, {"best_of_k": 0}, "best_of_k"),
        ({"text": "x"}, {"best_of_k": 65}, "best_of_k"),
        ({"text": "x"}, {"temperature": 2.5}, "temperature"),
        ({"text": "x"}, {"seed": -1}, "seed"),
        ({"text": "x"}, {"last_n_messages": 2}, "last_n_messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, {}, "text"),
        ({"text": "x"}, {"bogus": 1}, None),
    ],
)
def test_submit_refuses_invalid_values(alice, input_data, options, field):
    with pytest.raises(services.SubmissionError) as err:
        services.do_submit(alice, None, input_data, options)
    assert err.value.field == field
    assert err.value.message
    assert not Analysis.objects.exists()


def test_submit_bounds_text_and_tokens(alice, settings):
    settings.LENSWEB_MAX_TEXT_CHARS = 10
    with pytest.raises(services.SubmissionError, match="characters; the limit is 10"):
        submit(alice, "x" * 11)
    settings.LENSWEB_MAX_TEXT_CHARS = 1000
    settings.LENSWEB_MAX_TOKENS = 3
    assert len(token_ids("a b c d")) == 4
    with pytest.raises(services.SubmissionError, match="has 4 tokens; the limit is 3") as err:
        submit(alice, "a b c d")
    assert err.value.field == "text"


def test_unknown_lens_is_refused(alice):
    with pytest.raises(services.SubmissionError) as err:
        services.do_submit(alice, "nope", {"text": "x"}, {})
    assert err.value.field == "lens"


def test_per_user_and_global_caps(alice, bob, carol, settings):
    settings.LENSWEB_MAX_QUEUED_PER_USER = 2
    settings.LENSWEB_MAX_QUEUE = 3
    submit(alice)
    submit(alice)
    with pytest.raises(services.SubmissionError, match="the limit is 2"):
        submit(alice)
    submit(bob)
    with pytest.raises(services.SubmissionError, match="queue is full"):
        submit(carol)
    assert Analysis.objects.count() == 3


def test_fair_order_is_round_robin_between_users_fifo_within(alice, bob, carol, worker):
    a = [submit(alice).pk for _ in range(5)]
    b = [submit(bob).pk for _ in range(2)]
    c = [submit(carol).pk]
    expected = [a[0], b[0], c[0], a[1], b[1], a[2], a[3], a[4]]
    assert services.fair_queue() == [("analysis", job) for job in expected]
    assert services.queue_positions() == {("analysis", job): i + 1 for i, job in enumerate(expected)}
    assert services.queue_position(Analysis.objects.get(pk=c[0])) == 3
    claimed = [services.claim_next_job(worker).pk for _ in expected]
    assert claimed == expected
    assert services.claim_next_job(worker) is None


def test_users_take_turns_when_jobs_finish_quickly(alice, bob, carol, worker):
    a = [submit(alice).pk for _ in range(3)]
    b = [submit(bob).pk for _ in range(3)]
    c = [submit(carol).pk]
    order = []
    while (job := services.claim_next_job(worker)) is not None:
        order.append(job.pk)
        services.do_finish_job(job.pk, worker.pk, Analysis.Status.DONE)
    assert order == [a[0], b[0], c[0], a[1], b[1], a[2], b[2]]


def test_running_jobs_count_against_their_owner(alice, bob, worker):
    first = submit(alice)
    assert services.claim_next_job(worker).pk == first.pk
    second_of_alice = submit(alice)
    first_of_bob = submit(bob)  # later, but bob has nothing running
    assert services.fair_queue() == [("analysis", first_of_bob.pk), ("analysis", second_of_alice.pk)]
    assert services.queue_position(first_of_bob) == 1


def test_a_claimed_job_cannot_be_claimed_again(alice, worker):
    job = submit(alice)
    other = services.register_worker("other")
    assert services.claim_next_job(worker).pk == job.pk
    assert services.claim_next_job(other) is None
    job.refresh_from_db()
    assert job.worker_id == worker.pk and job.attempts == 1 and job.status == "running"


def test_cancel_queued_job_never_starts(alice, worker):
    job = submit(alice)
    services.do_cancel(alice, job.pk)
    job.refresh_from_db()
    assert job.status == Analysis.Status.CANCELLED
    assert services.claim_next_job(worker) is None


def test_cancel_running_job_flags_it_and_stops_the_next_batch(alice, worker):
    job = submit(alice, "a b c d")
    services.claim_next_job(worker)
    assert services.do_record_batch(job.pk, worker.pk, [{"position": 0, "mse": 1.0}]) is True
    job = services.do_cancel(alice, job.pk)
    assert job.status == Analysis.Status.RUNNING and job.cancel_requested
    assert services.do_record_batch(job.pk, worker.pk, [{"position": 1, "mse": 2.0}]) is False
    assert services.do_finish_job(job.pk, worker.pk, Analysis.Status.CANCELLED)
    job.refresh_from_db()
    assert job.status == "cancelled" and job.rows.count() == 2
    summary = job.metadata["summary"]
    assert [summary[k] for k in ("rows", "mean_mse", "max_mse")] == [2, 1.5, 2.0]
    assert summary["note"] == "positions 0–1, none trained on (training starts at position 6)"


def test_cancel_checks_ownership(alice, bob):
    job = submit(alice)
    with pytest.raises(Analysis.DoesNotExist):
        services.do_cancel(bob, job.pk)
    job.refresh_from_db()
    assert job.status == "queued" and not job.cancel_requested


def test_rows_are_idempotent_and_only_the_owning_worker_writes(alice, worker):
    job = submit(alice, "a b c")
    services.claim_next_job(worker)
    rows = [{"position": 0, "mse": 1.0}, {"position": 1, "mse": 1.0}]
    assert services.do_record_batch(job.pk, worker.pk, rows)
    assert services.do_record_batch(job.pk, worker.pk, rows)
    assert AnalysisRow.objects.filter(analysis=job).count() == 2
    job.refresh_from_db()
    assert job.progress_done == 2
    stranger = services.register_worker("stranger")
    assert services.do_record_batch(job.pk, stranger.pk, [{"position": 2, "mse": 1.0}]) is False
    assert AnalysisRow.objects.filter(analysis=job).count() == 2


def test_stale_jobs_go_back_to_the_queue_with_their_rows(alice, worker, settings):
    settings.LENSWEB_STALE_AFTER = 30
    job = submit(alice, "a b c")
    services.claim_next_job(worker)
    services.do_record_batch(job.pk, worker.pk, [{"position": 0, "mse": 1.0}])
    assert services.requeue_stale_jobs() == []  # fresh heartbeat: left alone
    long_ago = timezone.now() - timedelta(seconds=31)
    Analysis.objects.filter(pk=job.pk).update(heartbeat_at=long_ago)
    WorkerRecord.objects.filter(pk=worker.pk).update(last_heartbeat=long_ago)
    assert services.requeue_stale_jobs() == [job.pk]
    job.refresh_from_db()
    assert job.status == "queued" and job.worker_id is None and job.rows.count() == 1
    assert WorkerRecord.objects.get(pk=worker.pk).state == WorkerRecord.State.LOST
    # the old worker, if it was only slow, may not write any more
    assert services.do_record_batch(job.pk, worker.pk, [{"position": 1, "mse": 1.0}]) is False
    # the next claim resumes it: attempt 2, starting from the persisted row
    fresh = services.register_worker("fresh")
    claimed = services.claim_next_job(fresh)
    assert claimed.pk == job.pk and claimed.attempts == 2 and claimed.attempt_base == 1


def test_stale_jobs_that_keep_killing_workers_fail_and_cancelled_ones_stay_cancelled(alice, worker, settings):
    settings.LENSWEB_MAX_ATTEMPTS = 1
    doomed, cancelled = submit(alice), submit(alice)
    services.claim_next_job(worker)
    services.claim_next_job(worker)
    services.do_cancel(alice, cancelled.pk)
    Analysis.objects.update(heartbeat_at=timezone.now() - timedelta(seconds=settings.LENSWEB_STALE_AFTER + 1))
    assert sorted(services.requeue_stale_jobs()) == sorted([doomed.pk, cancelled.pk])
    doomed.refresh_from_db()
    cancelled.refresh_from_db()
    assert doomed.status == "failed" and "stopped 1 times" in doomed.error
    assert cancelled.status == "cancelled"


def test_requeue_on_stop_keeps_rows_and_honours_a_cancel(alice, worker):
    job = submit(alice, "a b c")
    services.claim_next_job(worker)
    services.do_record_batch(job.pk, worker.pk, [{"position": 0, "mse": 1.0}])
    assert services.do_requeue_job(job.pk, worker.pk)
    job.refresh_from_db()
    assert job.status == "queued" and job.rows.count() == 1
    services.claim_next_job(worker)
    Analysis.objects.filter(pk=job.pk).update(cancel_requested=True)
    services.do_requeue_job(job.pk, worker.pk)
    job.refresh_from_db()
    assert job.status == "cancelled"


def test_heartbeat_reports_cancel_and_live_workers(alice, worker):
    job = submit(alice)
    services.claim_next_job(worker)
    assert services.worker_heartbeat(worker.pk, [("analysis", job.pk)], "tiny", "cpu", 123) == set()
    services.do_cancel(alice, job.pk)
    assert services.worker_heartbeat(worker.pk, [("analysis", job.pk)]) == {("analysis", job.pk)}
    assert list(services.live_workers()) == [worker]
    services.worker_stopped(worker.pk)
    assert not services.live_workers().exists()


def test_progress_eta_counts_only_this_attempt(alice, worker):
    job = submit(alice, " ".join(["w"] * 10))
    assert job.progress_total == 10
    services.claim_next_job(worker)
    services.do_record_batch(job.pk, worker.pk, [{"position": p, "mse": 1.0} for p in range(2)])
    job.refresh_from_db()
    assert job.eta_seconds(now=job.attempt_started_at) == 0  # no time spent yet
    later = job.attempt_started_at + timedelta(seconds=4)
    assert job.eta_seconds(now=later) == pytest.approx(16)  # 2 rows in 4 s, 8 to go
    services.do_requeue_job(job.pk, worker.pk)
    services.claim_next_job(worker)
    services.do_record_batch(job.pk, worker.pk, [{"position": 2, "mse": 1.0}])
    job.refresh_from_db()
    assert job.attempt_base == 2
    assert job.eta_seconds(now=job.attempt_started_at + timedelta(seconds=1)) == pytest.approx(7)
