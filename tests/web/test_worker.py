"""The worker in this process and event loop: jobs to done, failures, cancel, stop and resume, stale jobs."""

import asyncio
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from lensweb.analyses import services
from lensweb.analyses.models import Analysis, AnalysisRow, WorkerRecord
from lensweb.analyses.notify import WORKER_CHANNEL
from lensweb.analyses.worker import LensChannelWorker, LensWorker, get_worker
from lensweb.asgi import application
from tests.conftest import scaled, write_registry_with_a_breakable_lens

from .conftest import SLOW_TEXT, job_state, token_ids, wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]

submit = database_sync_to_async(services.do_submit)


def rows_of(job_id):
    return list(
        AnalysisRow.objects.filter(analysis_id=job_id).order_by("position").values_list("position", "data")
    )


async def stop(worker: LensWorker):
    worker.request_stop()
    await wait_for(worker.finished.is_set, timeout=scaled(30))


async def test_jobs_run_to_done_and_failures_do_not_stop_the_worker(
    alice, fast_worker, tmp_path, monkeypatch
):
    registry, checkpoint = write_registry_with_a_breakable_lens(tmp_path)
    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(registry))
    bad = await submit(alice, "broken", {"text": "this will fail"}, {})
    checkpoint.write_bytes(b"half a checkpoint")
    text = "one two three four five"
    good = await submit(alice, None, {"text": text}, {})
    worker = LensWorker()
    worker.start()
    try:
        await wait_for(lambda: job_state(good.pk).is_final, timeout=scaled(120))
    finally:
        await stop(worker)
    bad, good = (
        await database_sync_to_async(job_state)(bad.pk),
        await database_sync_to_async(job_state)(good.pk),
    )
    # the owner reads that the lens could not be loaded; the path and the reason go to the server log only
    assert bad.status == "failed" and "lens broken could not be loaded" in bad.error
    assert str(checkpoint) not in bad.error and str(tmp_path) not in bad.error
    assert len(token_ids(text)) == 5
    assert good.status == "done" and good.progress_done == good.progress_total == 5
    rows = await database_sync_to_async(rows_of)(good.pk)
    assert [p for p, _ in rows] == list(range(5))
    assert [row["token_id"] for _, row in rows] == token_ids(text)
    for _, row in rows:
        assert len(row["explanation_token_ids"]) == good.metadata["t_text"] and row["mse"] > 0
    assert good.metadata["summary"]["rows"] == 5 and good.metadata["lens_id"] == "tiny"
    record = await database_sync_to_async(WorkerRecord.objects.get)(pk=worker.record.pk)
    assert record.state == WorkerRecord.State.STOPPED


async def test_a_running_job_cancelled_stops_within_a_batch(alice, fast_worker, warm_lens, monkeypatch):
    monkeypatch.setenv("LENSWEB_ROWS_BUDGET", "1")
    job = await submit(alice, None, {"text": SLOW_TEXT}, {})
    worker = LensWorker()
    worker.start()
    try:
        await wait_for(lambda: job_state(job.pk).progress_done >= 3)
        await database_sync_to_async(services.do_cancel)(alice, job.pk)
        done_at_cancel = (await database_sync_to_async(job_state)(job.pk)).progress_done
        await wait_for(lambda: job_state(job.pk).is_final)
    finally:
        await stop(worker)
    job = await database_sync_to_async(job_state)(job.pk)
    assert job.status == "cancelled"
    assert done_at_cancel <= job.progress_done <= done_at_cancel + 2 < job.progress_total
    assert len(await database_sync_to_async(rows_of)(job.pk)) == job.progress_done


async def test_stopping_requeues_the_rest_and_a_new_worker_resumes(
    alice, fast_worker, warm_lens, monkeypatch
):
    monkeypatch.setenv("LENSWEB_ROWS_BUDGET", "1")
    job = await submit(alice, None, {"text": SLOW_TEXT}, {})
    first = LensWorker()
    first.start()
    await wait_for(lambda: job_state(job.pk).progress_done >= 3)
    await stop(first)
    paused = await database_sync_to_async(job_state)(job.pk)
    assert paused.status == "queued" and 3 <= paused.progress_done < paused.progress_total
    assert paused.attempts == 0, "a graceful hand-back (SIGTERM) used up an attempt"
    second = LensWorker()
    second.start()
    try:
        await wait_for(lambda: job_state(job.pk).is_final, timeout=scaled(120))
    finally:
        await stop(second)
    job = await database_sync_to_async(job_state)(job.pk)
    assert job.status == "done" and job.attempts == 1  # the graceful hand-back does not count
    rows = await database_sync_to_async(rows_of)(job.pk)
    assert [p for p, _ in rows] == list(range(len(token_ids(SLOW_TEXT))))
    assert [row["token_id"] for _, row in rows] == token_ids(SLOW_TEXT)


async def test_a_job_of_a_dead_worker_is_resumed_by_another(alice, fast_worker):
    fast_worker.LENSWEB_STALE_AFTER = 1
    job = await submit(alice, None, {"text": "a b c d e"}, {})

    def die_mid_job():
        dead = services.register_worker("gone")
        services.claim_next_job(dead)
        services.do_record_batch(job.pk, dead.pk, [{"position": 0, "mse": 9.0, "token": "kept"}])
        Analysis.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=5))

    await database_sync_to_async(die_mid_job)()
    worker = LensWorker()
    worker.start()
    try:
        await wait_for(lambda: job_state(job.pk).is_final, timeout=scaled(60))
    finally:
        await stop(worker)
    rows = await database_sync_to_async(rows_of)(job.pk)
    assert [p for p, _ in rows] == list(range(len(token_ids("a b c d e")))) == list(range(5))
    assert rows[0][1]["token"] == "kept"  # the persisted row was not recomputed
    assert [row["token"] for _, row in rows[1:]] == [" b", " c", " d", " e"]


async def test_a_job_queued_before_any_worker_ran_is_picked_up_at_start(alice, fast_worker):
    job = await submit(alice, None, {"text": "early bird"}, {})
    worker = LensWorker()
    worker.start()
    try:
        await wait_for(lambda: job_state(job.pk).status == "done", timeout=scaled(60))
    finally:
        await stop(worker)


async def test_tiny_lens_resumed_rows_equal_uninterrupted_rows(
    alice, bob, fast_worker, tiny_engine, monkeypatch
):
    """The real engine: stop mid-job, resume on a fresh worker, compare with a run that never stopped."""
    monkeypatch.setenv("LENSWEB_ROWS_BUDGET", "1")
    text = "The capital of France is Paris"
    options = {"best_of_k": 2, "temperature": 1.0, "seed": 7, "kl": True, "logit_lens": True}
    whole = await submit(alice, None, {"text": text}, options)
    worker = LensWorker(tiny_engine)
    worker.start()
    await wait_for(lambda: job_state(whole.pk).status == "done", timeout=scaled(120))
    resumed = await submit(bob, None, {"text": text}, options)  # bob: not answered from alice's prefix
    await wait_for(lambda: job_state(resumed.pk).progress_done >= 2, timeout=scaled(120))
    await stop(worker)
    paused = await database_sync_to_async(job_state)(resumed.pk)
    assert paused.status == "queued" and paused.progress_done < paused.progress_total
    again = LensWorker(tiny_engine)
    again.start()
    try:
        await wait_for(lambda: job_state(resumed.pk).status == "done", timeout=scaled(120))
    finally:
        await stop(again)
    expected = await database_sync_to_async(rows_of)(whole.pk)
    got = await database_sync_to_async(rows_of)(resumed.pk)
    assert [p for p, _ in got] == [p for p, _ in expected] and len(got) == paused.progress_total
    for (_, a), (_, b) in zip(expected, got, strict=True):
        assert a["explanation_token_ids"] == b["explanation_token_ids"]
        assert a["mse"] == pytest.approx(b["mse"], rel=1e-5)
        assert b["kl"] is not None and b["logit_lens_top"]
    done = await database_sync_to_async(job_state)(resumed.pk)
    assert done.metadata["untrained"] is False and done.metadata["lens_id"] == "tiny"


async def test_the_doorbell_wakes_an_idle_worker_long_before_its_poll(alice, settings, warm_lens):
    """Through the channel layer, as `runworker lens-inference` runs it: the worker's own channel gets
    the doorbell of a submit; its next poll would be 30 s away."""
    settings.LENSWEB_POLL_INTERVAL = 30
    runner = LensChannelWorker(
        application=application,
        channels=[WORKER_CHANNEL],
        channel_layer=get_channel_layer(),
        install_signal_handlers=False,
    )
    task = asyncio.ensure_future(runner.arun())
    worker = get_worker()
    try:
        await wait_for(lambda: WorkerRecord.objects.filter(state="idle").exclude(channel_name="").exists())
        await asyncio.sleep(0.2)  # the worker is now waiting for its next poll (or a doorbell)
        job = await submit(alice, None, {"text": "ring ring"}, {})
        await wait_for(lambda: job_state(job.pk).status == "done", timeout=scaled(5))
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, scaled(10))


def test_the_worker_computes_only_chosen_positions_and_records_them(alice, run_jobs):
    text = "The capital of France is Paris"
    chosen = services.do_submit(alice, None, {"text": text}, {"positions": [-1, 0], "seed": 3})
    whole = services.do_submit(alice, None, {"text": text}, {"seed": 3})
    run_jobs()
    chosen, whole = Analysis.objects.get(pk=chosen.pk), Analysis.objects.get(pk=whole.pk)
    n = len(token_ids(text))
    assert chosen.status == "done" and chosen.metadata["positions"] == [0, n - 1]
    assert chosen.progress_done == chosen.progress_total == 2
    assert whole.metadata["positions"] == list(range(n))
    rows = dict(rows_of(whole.pk))
    for position, row in rows_of(chosen.pk):
        assert row["explanation_token_ids"] == rows[position]["explanation_token_ids"]
