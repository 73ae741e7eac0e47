"""Never a silent card: its place in the queue, then its phase (loading the lens, decoding, encoding) and
progress within a batch before its first row, and an ETA from rates measured on earlier jobs."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from lensweb.analyses import cards, fragments, rates, services
from lensweb.analyses.models import Analysis, Phase, PositionRate
from lensweb.analyses.worker import LensWorker

from .conftest import SLOW_TEXT, scaled
from .test_consumers import is_final, receive_until, socket

submit = database_sync_to_async(services.do_submit)


def card(job_id: int) -> str:
    job, position = cards.load_card(Analysis.objects.get(pk=job_id).owner, job_id)
    return fragments.render_state(job, position)


@pytest.mark.django_db(transaction=True)  # the worker closes its connections after each job
def test_a_card_shows_its_place_then_its_phase_before_its_first_row(
    alice, bob, run_jobs, monkeypatch, no_lens_held
):
    run_jobs.worker.record = services.register_worker(device="cpu")  # a worker serves the lens: places count
    first = services.do_submit(bob, None, {"text": "Bees make honey."}, {})
    job = services.do_submit(alice, None, {"text": SLOW_TEXT}, {"best_of_k": 2})
    assert "Position <strong>2</strong> in the queue" in card(job.pk)
    services.do_cancel(bob, first.pk)
    assert "Position <strong>1</strong> in the queue" in card(job.pk)

    engine = run_jobs.worker.engine
    real_acquire, real_begin = engine.acquire, engine.begin
    seen = {}

    def acquire(spec):
        seen["loading"] = card(job.pk)
        return real_acquire(spec)

    def begin(lens, inp, options, **kwargs):
        on_batch = kwargs["on_batch"]

        def first_batch_seen(update):
            seen.setdefault("before_rows", card(job.pk))  # progress is written, the batch not yet
            return on_batch(update)

        return real_begin(lens, inp, options, **{**kwargs, "on_batch": first_batch_seen})

    monkeypatch.setattr(engine, "acquire", acquire)
    monkeypatch.setattr(engine, "begin", begin)
    assert run_jobs() == [("analysis", job.pk)]
    assert 'data-phase="loading"' in seen["loading"] and "loading lens tiny" in seen["loading"]
    before = seen["before_rows"]
    assert re.search(r"\b0/\d+ positions", before), before
    assert re.search(r'data-phase="(decoding|encoding|salience)"', before), before
    done = Analysis.objects.get(pk=job.pk)
    assert done.phase == "" and done.status == "done"


@pytest.mark.django_db
def test_a_loading_job_says_so_with_the_measured_load_time(alice):
    worker = services.register_worker(device="cpu")
    from lensweb.analyses import status

    status.worker_loaded(worker.pk, "tiny", 12.0)  # measured on an earlier load
    status.worker_loading(worker.pk, "tiny")
    job = services.do_submit(alice, None, {"text": "Bees make honey."}, {})
    services.claim_next_job(worker)
    services.do_record_progress(job.pk, worker.pk, Phase.LOADING)
    html = card(job.pk)
    assert 'data-phase="loading"' in html and "loading lens tiny (about 12 s)" in html


@pytest.mark.django_db
def test_the_eta_comes_from_earlier_jobs_rates_then_blends_with_this_attempts_speed(alice):
    worker = services.register_worker(device="cpu")
    job = services.do_submit(alice, None, {"text": "Bees make honey."}, {"best_of_k": 4})
    services.claim_next_job(worker)
    now = timezone.now()
    Analysis.objects.filter(pk=job.pk).update(
        progress_total=10, attempt_started_at=now - timedelta(seconds=4)
    )
    job = Analysis.objects.get(pk=job.pk)
    rates.attach([job])
    assert job.eta_seconds(now) is None  # nothing measured yet, and no position done

    PositionRate.objects.create(
        lens_id="tiny", options_key=rates.options_key(job.options), seconds_per_position=2
    )
    rates.attach([job])
    assert job.eta_seconds(now) == pytest.approx(20.0)  # 10 positions at 2 s
    # another option set has its own rate
    assert rates.options_key({"best_of_k": 4}) != rates.options_key({"best_of_k": 4, "salience": True})

    Analysis.objects.filter(pk=job.pk).update(progress_partial=2.0)  # 2 positions in 4 s: 2 s each too
    job = Analysis.objects.get(pk=job.pk)
    rates.attach([job])
    assert job.eta_seconds(now) == pytest.approx(16.0)
    Analysis.objects.filter(pk=job.pk).update(progress_partial=8.0)  # 8 in 4 s: faster than measured
    job = Analysis.objects.get(pk=job.pk)
    rates.attach([job])
    assert job.eta_seconds(now) == pytest.approx(2 * (2 * 2 + 8 * 0.5) / 10)


@pytest.mark.django_db(transaction=True)
def test_a_finished_job_updates_its_lens_and_option_sets_rate(alice, run_jobs):
    services.do_submit(alice, None, {"text": "Bees make honey in the summer."}, {"best_of_k": 2})
    run_jobs()
    [rate] = PositionRate.objects.all()
    assert (rate.lens_id, rate.options_key, rate.jobs) == (
        "tiny",
        "k=2,salience",
        1,
    )  # salience is on by default
    assert rate.seconds_per_position > 0
    first = rate.seconds_per_position
    services.do_submit(alice, None, {"text": "Ants carry leaves home."}, {"best_of_k": 2})
    run_jobs()
    rate.refresh_from_db()
    assert rate.jobs == 2 and rate.seconds_per_position != first


@pytest.mark.django_db(transaction=True)
async def test_a_progress_message_reaches_the_card_over_the_socket(
    alice, fast_worker, warm_lens, monkeypatch
):
    fast_worker.LENSWEB_PROGRESS_EVERY = 0
    monkeypatch.setenv("LENSWEB_ROWS_BUDGET", "4")
    async with socket(alice) as communicator:
        assert (await communicator.connect())[0]
        await communicator.receive_from(timeout=scaled(10))  # the (empty) replay
        job = await submit(alice, None, {"text": "one two three four five six seven eight"}, {})
        worker = LensWorker()
        worker.start()
        try:
            messages = await receive_until(communicator, is_final(job.pk))
        finally:
            worker.request_stop()
    progress = [m for m in messages if f'id="progress-{job.pk}"' in m and "data-phase=" in m]
    phases = {p for m in progress for p in re.findall(r'data-phase="(\w+)"', m)}
    assert {"decoding", "encoding"} <= phases, phases
    first_row = next(i for i, m in enumerate(messages) if f'id="row-{job.pk}-' in m)
    assert any('data-phase="decoding"' in m for m in messages[:first_row]), "no phase before the first row"
