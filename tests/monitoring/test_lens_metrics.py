"""A worker's lenses in /metrics and admin (issue 29): lensweb_lens_loaded for every lens it serves, 1 on the
device after a job, 0 once the device copy went for idling; a lens pinned from admin stays past the idle time;
admin's unload lets go of it; each load is in the load-time histogram. The real worker code, heartbeats by hand."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from lensweb.analyses import services
from lensweb.analyses.models import LensLoad, WorkerRecord
from lensweb.monitoring import metrics
from tests.web.conftest import no_lens_held, run_jobs, tiny_engine, tiny_registry  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)  # the worker closes its connections after each job
IDLE = 0.3
WORKERS = "admin:analyses_workerrecord_changelist"


def samples() -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def loaded(worker: WorkerRecord, where: str, lens: str = "tiny") -> float:
    labels = (("lens", lens), ("where", where), ("worker", worker.name))
    return samples()[("lensweb_lens_loaded", labels)]


def heartbeat(worker) -> None:
    """One heartbeat of the worker, as its loop sends it: staff's word applied, idle lenses let go, reported."""
    held = async_to_sync(worker.tidy)()
    services.worker_heartbeat(worker.record.pk, [], held["lens_id"], held["device"], None, held["cached"])


@pytest.fixture
def worker(alice, run_jobs, settings, no_lens_held):  # noqa: F811  (pytest fixtures by name)
    settings.LENSWEB_IDLE_UNLOAD_S = IDLE
    settings.LENSWEB_CPU_CACHE_BYTES = 0  # a CPU worker: an idle lens is let go entirely
    record = services.register_worker(device="cpu")
    services.do_submit(alice, None, {"text": "a b c"}, {})
    assert run_jobs(record)
    heartbeat(run_jobs.worker)
    return run_jobs.worker


def test_idle_unload_sends_the_metric_to_0_and_each_load_is_in_the_histogram(worker):
    record = worker.record
    assert loaded(record, "device") == 1 and loaded(record, "cpu_cache") == 0
    load_count = samples()[("lensweb_lens_load_seconds_count", (("lens", "tiny"), ("source", "disk")))]
    assert load_count == LensLoad.objects.filter(lens_id="tiny", source="disk").count() == 1
    time.sleep(IDLE * 1.5)
    heartbeat(worker)
    assert loaded(record, "device") == 0 and loaded(record, "cpu_cache") == 0
    assert WorkerRecord.objects.get(pk=record.pk).lens_id == ""


def test_a_lens_pinned_in_admin_stays_past_the_idle_time_and_unload_lets_it_go(worker, admin_client):
    record = worker.record
    act = {"_selected_action": [record.pk]}
    admin_client.post(reverse(WORKERS), {**act, "action": "pin"}, follow=True)
    assert WorkerRecord.objects.get(pk=record.pk).pinned_lenses == ["tiny"]
    time.sleep(IDLE * 1.5)
    heartbeat(worker)
    assert loaded(record, "device") == 1  # pinned: kept
    response = admin_client.post(reverse(WORKERS), {**act, "action": "unload"}, follow=True)
    assert "1 worker(s) asked to let go" in response.content.decode()
    heartbeat(worker)
    assert loaded(record, "device") == 0
    stored = WorkerRecord.objects.get(pk=record.pk)
    assert stored.unload_lenses == [] and stored.pinned_lenses == []  # done, and the pin went with it
