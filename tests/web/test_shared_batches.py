"""Queued analyses of one lens and option set share a worker's batches (lensweb.analyses.runs): each job's
rows equal its rows run alone, owners take turns, a cancel ends one job only, and sharing never takes a job
ahead of one that cannot join."""

import pytest

from inference.types import AnalysisInput, AnalysisOptions
from lensweb.analyses import runs, services
from lensweb.analyses.models import Analysis, AnalysisRow, WorkerRecord

pytestmark = [pytest.mark.django_db(transaction=True)]

LONG = " ".join(["Alice gave Bob a red apple because he was hungry, and then they walked home."] * 3)
MIDDLE = "The old lighthouse keeper climbed the spiral stairs every evening."
SHORT = "Rain fell."
OPTIONS = {"best_of_k": 2, "temperature": 1.0, "salience": True}


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    monkeypatch.setenv("LENSWEB_ROWS_BUDGET", "8")  # four positions a batch at k = 2: many batches


def rows(job_id):
    return [
        (data["position"], data["explanation_token_ids"], data["mse"])
        for data in AnalysisRow.objects.filter(analysis_id=job_id)
        .order_by("position")
        .values_list("data", flat=True)
    ]


def fresh(job):
    return Analysis.objects.get(pk=job.pk)


def same_rows(a, b):
    assert [(p, ids) for p, ids, _ in a] == [(p, ids) for p, ids, _ in b]
    assert [m for *_, m in a] == pytest.approx([m for *_, m in b], rel=1e-4)


def alone(engine, job):
    """The job's rows computed by the engine for its text alone (no other text in any batch)."""
    lens = engine.load(engine.get_spec(job.lens_id))
    result = engine.analyze(lens, AnalysisInput.from_dict(job.input), AnalysisOptions.from_dict(job.options))
    return [(row["position"], row["explanation_token_ids"], row["mse"]) for row in result.rows]


def test_three_jobs_of_different_lengths_share_batches_and_get_their_rows_run_alone(
    alice, bob, carol, run_jobs, tiny_engine
):
    texts = {alice: LONG, bob: MIDDLE, carol: SHORT}
    shared = {
        user: services.do_submit(user, None, {"text": text}, dict(OPTIONS)) for user, text in texts.items()
    }
    assert run_jobs() == [("analysis", job.pk) for job in shared.values()]
    for user in texts:
        job = fresh(shared[user])
        assert job.status == "done"
        assert job.progress_done == job.progress_total == len(rows(job.pk)) > 0
        same_rows(rows(job.pk), alone(tiny_engine, job))
        assert job.timings["shared_with"] == 2  # the others joined its batches
        assert 0 < job.timings["work_s"] <= job.timings["attempt_s"]
    # the short text finished first though submitted last: it did not wait behind the long one
    assert fresh(shared[carol]).finished_at < fresh(shared[alice]).finished_at


def test_with_one_shared_job_jobs_run_one_at_a_time(alice, bob, run_jobs, settings):
    settings.LENSWEB_SHARED_JOBS = 1
    jobs = [services.do_submit(user, None, {"text": SHORT}, dict(OPTIONS)) for user in (alice, bob)]
    assert run_jobs() == [("analysis", job.pk) for job in jobs]
    assert [fresh(job).timings["shared_with"] for job in jobs] == [0, 0]


def test_owners_take_turns_so_one_users_many_jobs_do_not_hold_back_another(alice, bob, run_jobs):
    many = [services.do_submit(alice, None, {"text": LONG}, dict(OPTIONS)) for _ in range(3)]
    one = services.do_submit(bob, None, {"text": LONG}, dict(OPTIONS))
    run_jobs()
    finished = {job.pk: fresh(job).finished_at for job in [*many, one]}
    # bob's one job has half of every batch while alice's three split the other half: it finishes first
    assert finished[one.pk] < min(finished[job.pk] for job in many)
    assert all(fresh(job).status == "done" for job in [*many, one])


def test_cancelling_one_job_leaves_the_others_sharing_its_batches_untouched(
    alice, bob, carol, run_jobs, monkeypatch
):
    jobs = {
        user: services.do_submit(user, None, {"text": LONG}, dict(OPTIONS)) for user in (alice, bob, carol)
    }
    real = services.do_record_batch
    seen = []

    def record_batch(job_id, worker_id, batch):
        seen.append(job_id)
        if job_id == jobs[bob].pk and seen.count(job_id) == 1:
            services.do_cancel(bob, job_id)  # bob cancels after his first batch is stored
        return real(job_id, worker_id, batch)

    monkeypatch.setattr(runs.services, "do_record_batch", record_batch)
    run_jobs()
    cancelled = fresh(jobs[bob])
    assert cancelled.status == "cancelled" and 0 < cancelled.progress_done < cancelled.progress_total
    for user in (alice, carol):
        done = fresh(jobs[user])
        assert done.status == "done" and done.progress_done == done.progress_total
        same_rows(rows(done.pk), rows(jobs[alice].pk))  # one text, one seed: the same rows
    assert seen.index(jobs[bob].pk) < len(seen) - 1  # the others went on after bob left


def test_jobs_that_cannot_share_run_one_after_another(alice, bob, run_jobs):
    k2 = services.do_submit(alice, None, {"text": SHORT}, dict(OPTIONS))
    k3 = services.do_submit(bob, None, {"text": SHORT}, {**OPTIONS, "best_of_k": 3})
    also_k2 = services.do_submit(bob, None, {"text": MIDDLE}, dict(OPTIONS))
    # k3 stands between: also_k2 does not overtake it by joining k2's batches
    assert run_jobs() == [("analysis", k2.pk), ("analysis", k3.pk), ("analysis", also_k2.pk)]
    assert all(fresh(job).timings["shared_with"] == 0 for job in (k2, k3, also_k2))


def test_a_shared_seed_is_per_job(alice, bob, run_jobs, tiny_engine):
    seven = services.do_submit(alice, None, {"text": MIDDLE}, {**OPTIONS, "seed": 7})
    eight = services.do_submit(bob, None, {"text": MIDDLE}, {**OPTIONS, "seed": 8})
    assert len(run_jobs()) == 2 and fresh(eight).timings["shared_with"] == 1
    same_rows(rows(eight.pk), alone(tiny_engine, fresh(eight)))
    same_rows(rows(seven.pk), alone(tiny_engine, fresh(seven)))
    assert [ids for _, ids, _ in rows(seven.pk)] != [ids for _, ids, _ in rows(eight.pk)]


def test_the_heartbeat_keeps_every_shared_job_alive_and_hears_each_cancel(alice, bob):
    worker = services.register_worker(device="cpu")
    a = services.do_submit(alice, None, {"text": SHORT}, dict(OPTIONS))
    b = services.do_submit(bob, None, {"text": SHORT}, dict(OPTIONS))
    services.claim_next_job(worker)
    services.claim_next_job(worker)
    Analysis.objects.update(heartbeat_at=None)
    services.do_cancel(bob, b.pk)
    assert services.worker_heartbeat(worker.pk, [("analysis", a.pk), ("analysis", b.pk)]) == {
        ("analysis", b.pk)
    }
    assert all(job.heartbeat_at is not None for job in Analysis.objects.all())
    # one of its jobs finishing leaves the worker busy with the other
    services.do_finish_job(a.pk, worker.pk, "done")
    assert WorkerRecord.objects.get(pk=worker.pk).state == WorkerRecord.State.BUSY
    services.do_finish_job(b.pk, worker.pk, "cancelled")
    assert WorkerRecord.objects.get(pk=worker.pk).state == WorkerRecord.State.IDLE
