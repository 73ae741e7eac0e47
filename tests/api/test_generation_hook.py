"""The core's worker runs generations between analyses: one worker, the real engine over the tiny test
lens, analyses and generations interleaved on one loaded lens."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from lensweb.analyses import services
from lensweb.analyses import services as generation_services
from lensweb.analyses.models import Generation
from lensweb.analyses.worker import LensWorker
from tests.web.conftest import fast_worker, job_state, scaled, wait_for  # noqa: F401  (fixture)

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_the_worker_runs_generations_between_analyses(alice, fast_worker, tiny_engine):  # noqa: F811
    submit = database_sync_to_async(services.do_submit)
    submit_generation = database_sync_to_async(generation_services.do_submit_generation)
    first = await submit(alice, None, {"text": "The capital of France"}, {})
    generation = await submit_generation(alice, None, {"text": "Once upon"}, {"max_new_tokens": 4, "seed": 1})
    second = await submit(alice, None, {"text": "is Paris"}, {})
    worker = LensWorker(tiny_engine)
    worker.start()
    try:
        await wait_for(
            lambda: job_state(second.pk).is_final and Generation.objects.get(pk=generation.pk).is_final,
            scaled(120),
        )
    finally:
        worker.request_stop()
        await asyncio.wait_for(worker.finished.wait(), scaled(30))
    done = await database_sync_to_async(Generation.objects.get)(pk=generation.pk)
    assert done.status == "done" and len(done.result["samples"][0]["token_ids"]) == 4
    assert done.timings["load_s"] >= 0 and done.worker_id == worker.record.pk
    assert (await database_sync_to_async(job_state)(first.pk)).status == "done"
