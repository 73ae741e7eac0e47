"""A small fleet on PostgreSQL + Redis (issue 29): two lenses, worker processes each serving one
(LENSWEB_WORKER_LENSES); every job is done by a worker that serves its lens, and a job for a lens no live worker
serves waits (its status_detail says so) until a worker for it starts."""

from __future__ import annotations

import pytest

from .test_distributed import (  # noqa: F401  (the stack fixture)
    jobs_by_id,
    positions_of,
    query,
    shell,
    stack,
    start_worker,
    stop_workers,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SUBMIT = """
import json
from django.contrib.auth import get_user_model
from lensweb.analyses import services
user = get_user_model().objects.get_or_create(username="fleet")[0]
print(json.dumps([services.do_submit(user, lens, {"text": text}, {}).pk for lens, text in %(jobs)r]))
"""

DETAIL = """
import json
from lensweb.analyses import rates, services
from lensweb.analyses.models import Analysis
from lensweb.analyses.status import status_detail
job = Analysis.objects.get(pk=%(job)d)
rates.attach([job])
print(json.dumps(status_detail(job, services.queue_position(job))))
"""


@pytest.fixture(scope="module")
def fleet(stack, tmp_path_factory):  # noqa: F811  (pytest fixtures by name)
    from tests.api.test_routing import write_two_lenses

    registry = write_two_lenses(tmp_path_factory.mktemp("fleet"))
    return {**stack, "env": {**stack["env"], "LENSWEB_LENS_REGISTRY": str(registry)}}


def served_by(url, worker_ids):
    rows = query(url, "SELECT id, lenses FROM analyses_workerrecord WHERE id = ANY(%s)", list(worker_ids))
    return dict(rows)


def test_two_lenses_two_workers_each_job_by_a_worker_that_serves_its_lens(fleet):
    url, env = fleet["url"], fleet["env"]
    plan = [("tiny" if i % 2 else "tiny-b", f"job {i} of the fleet") for i in range(8)]
    ids = shell(env, SUBMIT % {"jobs": plan})
    lens_of = dict(zip(ids, [lens for lens, _ in plan], strict=True))
    workers = [
        start_worker(fleet, "serves-tiny", LENSWEB_WORKER_LENSES="tiny"),
        start_worker(fleet, "serves-b", LENSWEB_WORKER_LENSES="tiny-b"),
    ]
    try:
        wait_until(lambda: all(j["status"] == "done" for j in jobs_by_id(url, ids).values()), what="8 jobs")
    finally:
        assert stop_workers(workers) == [0, 0]
    jobs = jobs_by_id(url, ids)
    lenses = served_by(url, {j["worker"] for j in jobs.values()})
    assert sorted(map(tuple, lenses.values())) == [("tiny",), ("tiny-b",)]  # both served, one lens each
    for job_id, job in jobs.items():
        assert lenses[job["worker"]] == [lens_of[job_id]], (
            f"job {job_id} ran on a worker not serving its lens"
        )
        assert job["attempts"] == 1 and positions_of(url, job_id) == list(range(job["total"]))


def test_a_job_for_an_unserved_lens_waits_and_runs_once_a_worker_for_it_starts(fleet):
    url, env = fleet["url"], fleet["env"]
    served, waiting = shell(
        env, SUBMIT % {"jobs": [("tiny", "served at once"), ("tiny-b", "waits its turn")]}
    )
    workers = [start_worker(fleet, "only-tiny", LENSWEB_WORKER_LENSES="tiny")]
    try:
        wait_until(lambda: jobs_by_id(url, [served])[served]["status"] == "done", what="the served job")
        assert jobs_by_id(url, [waiting])[waiting]["status"] == "queued"
        detail = shell(env, DETAIL % {"job": waiting})
        assert "waiting for a worker that serves lens tiny-b: none is running now" in detail, detail
        workers.append(start_worker(fleet, "now-b", LENSWEB_WORKER_LENSES="tiny-b"))
        wait_until(lambda: jobs_by_id(url, [waiting])[waiting]["status"] == "done", what="the waiting job")
    finally:
        assert stop_workers(workers) == [0, 0]
    worker = jobs_by_id(url, [waiting])[waiting]["worker"]
    assert served_by(url, [worker]) == {worker: ["tiny-b"]}
