"""GET /api/v1/status: workers online, the queue, and each lens' state around a first job."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from lensweb.analyses import services, status
from lensweb.analyses.models import WorkerRecord

from .conftest import error_of

URL = "/api/v1/status"
pytestmark = pytest.mark.django_db


def _tiny(api, key):
    answer = api.get(URL, key=key)
    assert answer.status_code == 200, answer.content
    body = answer.json_body
    return body, next(lens for lens in body["lenses"] if lens["id"] == "tiny")


def test_status_needs_a_valid_key(api):
    assert api.get(URL).status_code == 401
    assert error_of(api.get(URL, key="lw_nope_nope"))["code"] == "unauthenticated"


@pytest.mark.django_db(transaction=True)  # the worker closes its connections after a job
def test_a_lens_goes_unserved_cold_loading_loaded_around_a_first_job(
    api, alice_key, run_jobs, monkeypatch, no_lens_held
):
    body, tiny = _tiny(api, alice_key)
    assert body["workers_online"] == 0 and tiny["state"] == "unserved" and tiny["workers"] == 0

    record = services.register_worker(device="cpu")  # serves every lens of the registry
    assert record.lenses == ["tiny"]
    body, tiny = _tiny(api, alice_key)
    assert body["workers_online"] == 1 and tiny["state"] == "cold" and tiny["workers"] == 1

    submitted = api.post("/api/v1/analyses", {"text": "Alice gave Bob a red apple."}, key=alice_key)
    assert submitted.status_code == 202
    body, tiny = _tiny(api, alice_key)
    assert body["queued"] == 1 and tiny["queued"] == 1

    seen_while_loading = []
    engine = run_jobs.worker.engine
    acquire = engine.acquire

    def load_and_look(spec):
        seen_while_loading.append(_tiny(api, alice_key)[1])
        return acquire(spec)

    monkeypatch.setattr(engine, "acquire", load_and_look)
    assert run_jobs(record) == [("analysis", submitted.json_body["id"])]
    assert [lens["state"] for lens in seen_while_loading] == ["loading"]

    body, tiny = _tiny(api, alice_key)
    assert tiny["state"] == "loaded" and body["queued"] == 0
    assert tiny["load_seconds"] is not None and tiny["load_seconds"] >= 0
    # a lens measured once says "about N s" when cold again, and while loading counts down from it
    WorkerRecord.objects.filter(pk=record.pk).update(lens_id="")
    assert _tiny(api, alice_key)[1]["state"] == "cold"
    status.worker_loading(record.pk, "tiny")
    loading = _tiny(api, alice_key)[1]
    assert loading["state"] == "loading"
    assert 0 <= loading["loading_left_seconds"] <= tiny["load_seconds"] + 0.05  # rounded to 0.1 s


def test_a_worker_that_stops_reporting_stops_counting(api, alice_key, settings):
    settings.LENSWEB_STALE_AFTER = 30
    record = services.register_worker(device="cpu")
    status.worker_loaded(record.pk, "tiny", 1.5)
    assert _tiny(api, alice_key)[1]["state"] == "loaded"
    WorkerRecord.objects.filter(pk=record.pk).update(last_heartbeat=timezone.now() - timedelta(seconds=31))
    body, tiny = _tiny(api, alice_key)
    assert body["workers_online"] == 0 and tiny["state"] == "unserved"
    assert tiny["load_seconds"] == 1.5  # measured, kept for the next worker's "about N s"


def test_a_stopped_worker_and_one_serving_other_lenses_leave_a_lens_unserved(api, alice_key):
    services.worker_stopped(services.register_worker(device="cpu").pk)
    services.register_worker(device="cpu", lenses=["another"])
    body, tiny = _tiny(api, alice_key)
    assert body["workers_online"] == 1 and tiny["state"] == "unserved"


def test_a_failed_load_leaves_the_lens_cold_not_loading(api, alice_key):
    record = services.register_worker(device="cpu")
    status.worker_loading(record.pk, "tiny")
    status.worker_loaded(record.pk, None, 0.2)
    assert _tiny(api, alice_key)[1]["state"] == "cold"


def test_an_analysis_says_its_phase_share_and_eta_while_it_runs(api, alice_key):
    from lensweb.analyses.models import PositionRate
    from lensweb.analyses.rates import options_key

    worker = services.register_worker(device="cpu")
    submitted = api.post("/api/v1/analyses", {"text": "Alice gave Bob a red apple."}, key=alice_key).json_body
    queued = api.get(f"/api/v1/analyses/{submitted['id']}", key=alice_key).json_body["progress"]
    assert queued["phase"] is None and queued["eta_seconds"] is None
    job = services.claim_next_job(worker)
    services.do_record_metadata(job.pk, worker.pk, {}, total=8)
    PositionRate.objects.create(
        lens_id="tiny", options_key=options_key(job.options), seconds_per_position=0.5
    )
    services.do_record_progress(job.pk, worker.pk, "decoding", 1.5)
    progress = api.get(f"/api/v1/analyses/{job.pk}", key=alice_key).json_body["progress"]
    assert progress["phase"] == "decoding" and progress["partial"] == 1.5 and progress["done"] == 0
    assert progress["eta_seconds"] is not None and progress["eta_seconds"] > 0
