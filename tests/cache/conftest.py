"""The result cache over the real engine and the tiny test lens: users, a cache switched on, and a
worker that runs every claimable job in this thread (the same claim and finish path as the real one)."""

from __future__ import annotations

import pytest

from lensweb.analyses import services
from lensweb.analyses.models import Analysis, AnalysisRow
from lensweb.analyses.worker import LensWorker
from tests.web.conftest import (  # noqa: F401  (fixtures)
    _fresh_channel_layer,
    alice,
    bob,
    carol,
    fast_worker,
    tiny_engine,
    tiny_registry,
)

TEXT = "The capital of France is Paris"


@pytest.fixture
def cache_on(settings, tiny_engine):  # noqa: F811  (the fixture, imported above)
    settings.LENSWEB_RESULT_CACHE = True
    # One trusted group, so that users share results: what most of these tests are about (test_privacy.py
    # has the default, where each user's cache is their own).
    settings.LENSWEB_RESULT_CACHE_SHARED = True
    settings.LENSWEB_CACHE_MAX_AGE_DAYS = 30
    settings.LENSWEB_CACHE_MAX_BYTES = 0
    settings.LENSWEB_CACHE_FRONT = ""
    return tiny_engine


@pytest.fixture
def run_queue(cache_on):
    """Run every claimable job to its end with one worker in this thread; returns the ids it ran."""
    workers = []

    def run(new_worker: bool = False) -> list[int]:
        """`new_worker`: a fresh worker, which loads its lens anew (a worker keeps the lens it loaded)."""
        if new_worker or not workers:
            workers.append(LensWorker(cache_on))
            workers[-1].record = services.register_worker(device="cpu")
        worker = workers[-1]
        ran = []
        took = LensWorker.running.__get__(worker)

        def running(job):  # the claimed job, and analyses that joined its batches
            if job.pk not in ran:
                ran.append(job.pk)
            took(job)

        worker.running = running
        while (job := services.claim_next_job(worker.record)) is not None:
            worker.running(job)
            worker._execute(job)
        return ran

    return run


def rows_of(job_id: int) -> list[dict]:
    return list(
        AnalysisRow.objects.filter(analysis_id=job_id).order_by("position").values_list("data", flat=True)
    )


def fresh(job: Analysis) -> Analysis:
    return Analysis.objects.get(pk=job.pk)
