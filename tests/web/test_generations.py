"""Generations on the core's one job lifecycle: submitted through the one submit path, claimed in the same
fair queue as analyses, run by the same worker with the real engine over the tiny lens (tokens persisted
as they come), cancelled, re-queued when their worker dies, and followed by an analysis when asked."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from lensweb.analyses import services
from lensweb.analyses.errors import SubmissionError
from lensweb.analyses.models import Analysis, Generation, WorkerRecord

pytestmark = pytest.mark.django_db(transaction=True)  # the worker closes its connections after a job


def fresh(job):
    return type(job).objects.get(pk=job.pk)


def test_a_generation_runs_to_done_with_its_samples(alice, run_jobs):
    options = {"n": 2, "max_new_tokens": 5, "temperature": 0.7}
    generation = services.do_submit_generation(alice, "tiny", {"text": "The capital of France is"}, options)
    assert generation.progress_total == 5 and generation.status == "queued"
    assert run_jobs() == [("generation", generation.pk)]
    assert run_jobs() == []  # nothing left
    generation = fresh(generation)
    assert generation.status == "done" and generation.error == "" and generation.worker_id
    assert generation.started_at and generation.finished_at and generation.timings["generate_s"] >= 0
    samples = generation.samples
    assert len(samples) == 2 and all(1 <= len(s["token_ids"]) <= 5 for s in samples)
    assert generation.result["prompt"] == "The capital of France is" and not generation.result["cancelled"]
    assert generation.progress_done == max(len(s["token_ids"]) for s in samples)
    assert WorkerRecord.objects.get(pk=generation.worker_id).state == WorkerRecord.State.IDLE


def test_seeded_sampling_is_repeatable_and_seeds_differ(alice, run_jobs):
    options = {"n": 1, "max_new_tokens": 6, "temperature": 1.0, "seed": 3}
    first = services.do_submit_generation(alice, "tiny", {"text": "Hello"}, options)
    second = services.do_submit_generation(alice, "tiny", {"text": "Hello"}, options)
    run_jobs()
    assert fresh(first).samples == fresh(second).samples


def test_greedy_is_a_prefix_of_a_longer_greedy(alice, run_jobs):
    first = services.do_submit_generation(
        alice, "tiny", {"text": "Hello"}, {"temperature": 0, "max_new_tokens": 4}
    )
    second = services.do_submit_generation(alice, "tiny", {"text": "Hello"}, {"temperature": 0, "seed": 9})
    run_jobs()
    first, second = fresh(first), fresh(second)
    assert first.status == second.status == "done"
    assert first.samples[0]["token_ids"] == second.samples[0]["token_ids"][:4]


def test_tokens_are_persisted_while_it_runs(alice, run_jobs, monkeypatch):
    """Each on_tokens callback writes the samples so far (a reload shows them), then streams them."""
    monkeypatch.setattr(services, "TOKENS_EVERY_SECONDS", 0)
    seen = []
    record_tokens = services.do_record_tokens

    def spy(generation_id, worker_id, samples, steps):
        go_on = record_tokens(generation_id, worker_id, samples, steps)
        seen.append((Generation.objects.get(pk=generation_id).result, steps))
        return go_on

    monkeypatch.setattr(services, "do_record_tokens", spy)
    generation = services.do_submit_generation(
        alice, "tiny", {"text": "Hello"}, {"max_new_tokens": 6, "temperature": 0}
    )
    run_jobs()
    assert len(seen) >= 2
    assert all(result["partial"] is True for result, _ in seen)
    assert [steps for _, steps in seen] == sorted(steps for _, steps in seen)
    final = fresh(generation).samples[0]["token_ids"]
    for result, _ in seen:
        assert final[: len(result["samples"][0]["token_ids"])] == result["samples"][0]["token_ids"]


def test_cancel_while_running_keeps_what_was_generated(alice, run_jobs, monkeypatch):
    monkeypatch.setattr(services, "TOKENS_EVERY_SECONDS", 0)
    generation = services.do_submit_generation(alice, "tiny", {"text": "Hello"}, {"max_new_tokens": 60})
    record_tokens = services.do_record_tokens

    def cancel_after_first(generation_id, worker_id, samples, steps):
        go_on = record_tokens(generation_id, worker_id, samples, steps)
        services.do_cancel_generation(alice, generation_id)  # the owner cancels mid-generation
        return go_on and not fresh(generation).cancel_requested

    monkeypatch.setattr(services, "do_record_tokens", cancel_after_first)
    run_jobs()
    generation = fresh(generation)
    assert generation.status == "cancelled" and generation.result["cancelled"] is True
    assert 1 <= len(generation.samples[0]["token_ids"]) < 60


def test_a_cancelled_queued_generation_is_never_claimed(alice, run_jobs):
    generation = services.do_submit_generation(alice, None, {"text": "x"}, {})
    assert services.do_cancel_generation(alice, generation.pk).status == "cancelled"
    assert run_jobs() == []


def test_only_the_owner_cancels_and_staff_only_reads(alice, bob, admin_user):
    generation = services.do_submit_generation(alice, None, {"text": "x"}, {})
    with pytest.raises(Generation.DoesNotExist):
        services.do_cancel_generation(bob, generation.pk)
    with pytest.raises(Generation.DoesNotExist):
        services.get_generation_for(bob, generation.pk)
    assert services.get_generation_for(admin_user, generation.pk) == generation
    with pytest.raises(Generation.DoesNotExist):
        services.get_generation_for(admin_user, generation.pk, write=True)
    assert fresh(generation).status == "queued"


def test_one_fair_queue_for_both_kinds(alice, bob):
    """Round robin between users across kinds: alice's generation and analysis, then bob's, alternate."""
    a1 = services.do_submit_generation(alice, None, {"text": "1"}, {})
    a2 = services.do_submit(alice, None, {"text": "two"}, {})
    b1 = services.do_submit(bob, None, {"text": "three"}, {})
    b2 = services.do_submit_generation(bob, None, {"text": "4"}, {})
    expected = [("generation", a1.pk), ("analysis", b1.pk), ("analysis", a2.pk), ("generation", b2.pk)]
    assert services.fair_queue() == expected
    assert services.queue_position(b2) == 4 and services.queue_position(a2) == 3
    worker, other = services.register_worker(), services.register_worker()
    claimed = [services.claim_next_job(worker), services.claim_next_job(other)]
    assert [(job.kind, job.pk) for job in claimed] == expected[:2]
    assert isinstance(claimed[0], Generation) and claimed[0].worker_id == worker.pk


def test_a_dead_workers_generation_is_requeued_then_failed(alice, settings):
    worker = services.register_worker()
    generation = services.do_submit_generation(alice, None, {"text": "x"}, {})
    assert services.claim_next_job(worker).pk == generation.pk
    Generation.objects.filter(pk=generation.pk).update(result={"samples": [{"text": "a"}], "partial": True})
    assert services.requeue_stale_jobs() == []  # its worker is heart-beating
    long_ago = timezone.now() - timedelta(seconds=settings.LENSWEB_STALE_AFTER + 5)
    for attempt in range(1, settings.LENSWEB_MAX_ATTEMPTS + 1):
        Generation.objects.filter(pk=generation.pk).update(heartbeat_at=long_ago)
        assert services.requeue_stale_jobs() == [generation.pk]
        generation = fresh(generation)
        if attempt < settings.LENSWEB_MAX_ATTEMPTS:
            # it starts again (deterministic for its seed): the partial tokens go
            assert generation.status == "queued" and generation.worker is None and generation.result is None
            assert services.claim_next_job(worker).pk == generation.pk
    assert generation.status == "failed" and "stopped 3 times" in generation.error


def test_a_finish_from_a_worker_that_lost_the_job_is_ignored(alice):
    worker = services.register_worker()
    generation = services.do_submit_generation(alice, None, {"text": "x"}, {})
    services.claim_next_job(worker)
    Generation.objects.filter(pk=generation.pk).update(status="queued", worker=None)
    assert not services.do_finish_job(
        generation.pk, worker.pk, "done", kind="generation", result={"samples": []}
    )
    assert fresh(generation).status == "queued"


def test_a_stopping_worker_hands_the_generation_back_with_its_attempt(alice, run_jobs, monkeypatch):
    monkeypatch.setattr(services, "TOKENS_EVERY_SECONDS", 0)
    generation = services.do_submit_generation(alice, "tiny", {"text": "Hello"}, {"max_new_tokens": 40})
    record_tokens = services.do_record_tokens

    def stop_after_first(*args):
        run_jobs.worker.request_stop()
        return record_tokens(*args)

    monkeypatch.setattr(services, "do_record_tokens", stop_after_first)
    run_jobs()
    generation = fresh(generation)
    assert generation.status == "queued" and generation.attempts == 0 and generation.result is None


def test_generate_then_analyse_queues_the_conversation(alice, run_jobs):
    chat = [{"role": "user", "content": "Name a colour."}]
    generation = services.do_submit_generation(
        alice, "tiny", {"messages": chat}, {"max_new_tokens": 4, "temperature": 0},
        then_analyse={"salience": False},
    )  # fmt: skip
    assert generation.analysis_options["salience"] is False
    ran = run_jobs()
    generation = fresh(generation)
    assert generation.status == "done" and generation.follow_up_id
    assert ran == [("generation", generation.pk), ("analysis", generation.follow_up_id)]
    analysis = Analysis.objects.get(pk=generation.follow_up_id)
    assert analysis.owner == alice and analysis.status == "done" and analysis.options["salience"] is False
    reply = generation.samples[0]["text"]
    assert analysis.input["messages"] == [*chat, {"role": "assistant", "content": reply}]
    assert analysis.source_generation == generation


def test_a_refused_follow_up_is_said_not_lost(alice, run_jobs, settings):
    generation = services.do_submit_generation(
        alice, "tiny", {"text": "Hello"}, {"max_new_tokens": 3}, then_analyse={}
    )
    settings.LENSWEB_MAX_POSITIONS_PER_DAY = 1  # the analysis of the continued text no longer fits today
    run_jobs()
    generation = fresh(generation)
    assert generation.status == "done" and generation.follow_up is None
    assert "positions" in generation.follow_up_error


def test_then_analyse_options_are_checked_at_submit(alice):
    with pytest.raises(SubmissionError) as refused:
        services.do_submit_generation(alice, None, {"text": "x"}, {}, then_analyse={"best_of_k": 10_000})
    assert refused.value.field == "analysis_options.best_of_k"
    with pytest.raises(SubmissionError) as refused:
        services.do_submit_generation(alice, None, {"text": "x"}, {}, then_analyse={"last_n_messages": 1})
    assert refused.value.field == "analysis_options.last_n_messages"
    with pytest.raises(SubmissionError) as refused:
        services.do_submit_generation(alice, None, {"text": "x"}, {"n": 2}, then_analyse={})
    assert refused.value.field == "n"
    assert not Generation.objects.exists()


def test_analyse_a_sample(alice, bob, run_jobs):
    generation = services.do_submit_generation(
        alice, "tiny", {"text": "Once"}, {"n": 2, "max_new_tokens": 3, "temperature": 1.0}
    )
    with pytest.raises(SubmissionError):
        services.do_analyse_sample(alice, generation.pk, 0, {})  # not done yet: no samples
    run_jobs()
    generation = fresh(generation)
    analysis = services.do_analyse_sample(alice, generation.pk, 1, {})
    assert analysis.input == {"text": "Once" + generation.samples[1]["text"]}
    with pytest.raises(Generation.DoesNotExist):
        services.do_analyse_sample(bob, generation.pk, 0, {})
    with pytest.raises(SubmissionError):
        services.do_analyse_sample(alice, generation.pk, 2, {})


def test_a_prefilled_assistant_turn_is_continued_not_repeated(alice):
    generation = Generation(
        owner=alice,
        input={"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}]},
        options={"n": 1},
        result={"samples": [{"text": "lo there", "token_ids": [1], "finished": True}]},
    )
    assert generation.reply_messages(0) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there"},
    ]


def test_caps_and_daily_tokens_apply(alice, settings):
    settings.LENSWEB_MAX_QUEUED_GENERATIONS_PER_USER = 1
    services.do_submit_generation(alice, None, {"text": "x"}, {})
    with pytest.raises(SubmissionError, match="limit is 1"):
        services.do_submit_generation(alice, None, {"text": "y"}, {})
    settings.LENSWEB_MAX_QUEUED_GENERATIONS_PER_USER = 5
    settings.LENSWEB_MAX_GENERATED_TOKENS_PER_DAY = 100
    with pytest.raises(SubmissionError, match="generated tokens today"):
        services.do_submit_generation(alice, None, {"text": "y"}, {"n": 2, "max_new_tokens": 40})


def test_a_cancel_reaches_the_worker_with_its_kind(tiny_engine):
    """Analysis 5 and generation 5 are different jobs: cancelling one must not stop the other."""
    import asyncio

    from lensweb.analyses.consumers import LensWorkerConsumer
    from lensweb.analyses.worker import LensWorker

    worker = LensWorker(tiny_engine)
    consumer = LensWorkerConsumer()
    consumer._worker = lambda: worker  # the process' worker, without starting its loop

    asyncio.run(consumer.analysis_cancel({"type": "analysis.cancel", "job": 5, "kind": "generation"}))
    assert worker.is_cancelled(Generation(pk=5)) and not worker.is_cancelled(Analysis(pk=5))
    asyncio.run(consumer.analysis_cancel({"type": "analysis.cancel", "job": 6}))  # an older sender: analysis
    assert worker.is_cancelled(Analysis(pk=6)) and not worker.is_cancelled(Generation(pk=6))
