"""Lenses over workers (issue 29): a worker claims only the jobs of the lenses it serves
(LENSWEB_WORKER_LENSES, else all); a job whose lens no live worker serves waits, says so on its card and in the
API's status_detail, and runs once a worker for its lens starts. The real claim and worker code, on SQLite; the
same with worker processes on PostgreSQL + Redis is tests/web/test_fleet.py."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from lensweb.analyses import cards, fragments, services
from lensweb.analyses.models import Analysis
from lensweb.analyses.workers import worker_lenses_problem
from tests.conftest import tiny_lens, write_tiny_registry

pytestmark = pytest.mark.django_db(transaction=True)  # the worker closes its connections after each job
URL = "/api/v1/analyses"
WAITING = "waiting for a worker that serves lens tiny-b: none is running now; it starts when one does"


def write_two_lenses(directory):
    """The tiny lens ("tiny", default) and a second lens on the same files ("tiny-b")."""
    lens = tiny_lens()
    second = (
        f'[[lens]]\nid = "tiny-b"\nname = "Tiny B"\ncheckpoint = "{lens.checkpoint}"\n'
        f'base_model = "{lens.base}"\n'
    )
    return write_tiny_registry(directory, second)


@pytest.fixture(autouse=True)
def two_lenses(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(write_two_lenses(tmp_path)))


def submit(user, lens_id, text="a b c"):
    return services.do_submit(user, lens_id, {"text": text}, {})


def card(job) -> str:
    job, position = cards.load_card(job.owner, job.pk)
    return fragments.render_state(job, position)


def test_a_worker_claims_only_the_jobs_of_its_lenses(alice, bob):
    first_b, first_tiny = submit(alice, "tiny-b"), submit(bob, "tiny")
    serves_tiny = services.register_worker(lenses=["tiny"])
    assert services.claim_next_job(serves_tiny).pk == first_tiny.pk
    assert services.claim_next_job(serves_tiny) is None  # tiny-b's job is not its to take
    serves_b = services.register_worker(lenses=["tiny-b"])
    assert services.claim_next_job(serves_b).pk == first_b.pk


def test_worker_lenses_come_from_the_setting_and_an_unknown_id_stops_the_worker(settings):
    assert services.register_worker().lenses == ["tiny", "tiny-b"]  # unset: every lens
    settings.LENSWEB_WORKER_LENSES = ["tiny-b"]
    assert worker_lenses_problem() is None
    assert services.register_worker().lenses == ["tiny-b"]
    settings.LENSWEB_WORKER_LENSES = ["tiny-b", "nope"]
    problem = worker_lenses_problem()
    assert "nope" in problem and "tiny, tiny-b" in problem and "tiny-b," not in problem
    with pytest.raises(CommandError, match="LENSWEB_WORKER_LENSES names nope"):
        call_command("runworker", "lens-inference")


def test_a_job_for_an_unserved_lens_waits_says_so_and_runs_once_a_worker_serves_it(
    api, alice, alice_key, run_jobs
):
    serves_tiny = services.register_worker(lenses=["tiny"])
    waiting = api.post(URL, {"text": "a b c", "lens": "tiny-b"}, key=alice_key).json_body
    served = api.post(URL, {"text": "a b c d", "lens": "tiny"}, key=alice_key).json_body
    assert waiting["status_detail"] == f"position 1 in the queue; {WAITING}"
    assert served["status_detail"] == "position 2 in the queue"
    job = Analysis.objects.get(pk=waiting["id"])
    assert "Position <strong>1</strong> in the queue. Waiting for a worker that serves lens tiny-b" in card(
        job
    )

    assert run_jobs(serves_tiny) == [("analysis", served["id"])]  # the tiny-b job is left waiting
    again = api.get(f"{URL}/{waiting['id']}", key=alice_key).json_body
    assert again["status"] == "queued" and again["status_detail"] == f"position 1 in the queue; {WAITING}"

    serves_b = services.register_worker(lenses=["tiny-b"])
    assert "Waiting for a worker" not in card(job)  # a live worker serves it now
    assert api.get(f"{URL}/{waiting['id']}", key=alice_key).json_body["status_detail"] == (
        "position 1 in the queue"
    )
    assert run_jobs(serves_b) == [("analysis", waiting["id"])]
    done = api.get(f"{URL}/{waiting['id']}", key=alice_key).json_body
    assert done["status"] == "done" and done["status_detail"] is None and len(done["rows"]) == 3
    assert Analysis.objects.get(pk=waiting["id"]).worker_id == serves_b.pk


def test_a_queued_card_learns_when_a_worker_for_its_lens_starts_and_stops(
    alice, monkeypatch, django_capture_on_commit_callbacks
):
    from lensweb.analyses import notify

    sent = []
    monkeypatch.setattr(notify, "_group_send", lambda group, message: sent.append(message))
    job = submit(alice, "tiny-b")

    def queue_lines():
        return [
            html
            for m in sent
            if m.get("type") == "analysis.queue"
            for kind, job_id, html in m["lines"]
            if (kind, job_id) == ("analysis", job.pk)
        ]

    with django_capture_on_commit_callbacks(execute=True):
        serves_b = services.register_worker(lenses=["tiny-b"])
    assert queue_lines() and "Waiting for a worker" not in queue_lines()[-1]
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.worker_stopped(serves_b.pk)
    assert "Waiting for a worker that serves lens tiny-b" in queue_lines()[-1]


def test_a_lens_in_a_workers_cpu_memory_is_cached_in_the_status(api, alice_key, settings):
    worker = services.register_worker(lenses=["tiny", "tiny-b"])
    services.worker_heartbeat(worker.pk, [], "tiny", "cpu", None, ["tiny-b"])
    lenses = {
        lens["id"]: lens["state"] for lens in api.get("/api/v1/status", key=alice_key).json_body["lenses"]
    }
    assert lenses == {"tiny": "loaded", "tiny-b": "cached"}
