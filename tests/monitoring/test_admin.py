"""The admin: analyses listed and filtered, rows read-only, cancel and re-queue through the services."""

import pytest
from django.urls import reverse
from django.utils import timezone

from lensweb.analyses import lifecycle
from lensweb.analyses import services as core
from lensweb.analyses import services as staff_services
from lensweb.analyses.models import Analysis, AnalysisRow, WorkerRecord
from lensweb.monitoring import requestlog

from .conftest import make_job, make_worker, minutes

pytestmark = pytest.mark.django_db
S = Analysis.Status
CHANGELIST = "admin:analyses_analysis_changelist"


def act(client, action: str, *jobs):
    return client.post(
        reverse(CHANGELIST), {"action": action, "_selected_action": [job.pk for job in jobs]}, follow=True
    )


@pytest.fixture
def jobs(alice, bob):
    now = timezone.now()
    worker = make_worker("gpu-1:1:aaaa", 1, WorkerRecord.State.BUSY, channel_name="specific.worker!abc")
    return {
        "queued": make_job(alice, S.QUEUED, now - minutes(3), total=10),
        "running": make_job(bob, S.RUNNING, now - minutes(5), now - minutes(4), None, 3, 10, worker=worker),
        "failed": make_job(
            alice,
            S.FAILED,
            now - minutes(9),
            now - minutes(8),
            now - minutes(7),
            4,
            10,
            error="internal error",
            attempts=3,
            lens_id="other",
        ),  # fmt: skip
        "cancelled": make_job(
            bob,
            S.CANCELLED,
            now - minutes(9),
            now - minutes(8),
            now - minutes(6),
            2,
            10,
            cancel_requested=True,
        ),  # fmt: skip
        "done": make_job(alice, S.DONE, now - minutes(20), now - minutes(19), now - minutes(18), 10),
    }


def test_the_changelist_filters_and_searches(admin_client, jobs):
    url = reverse(CHANGELIST)
    assert admin_client.get(url).status_code == 200
    failed = admin_client.get(url, {"status__exact": "failed"}).context["cl"].result_list
    assert [j.pk for j in failed] == [jobs["failed"].pk]
    by_lens = admin_client.get(url, {"lens_id": "other"}).context["cl"].result_list
    assert [j.pk for j in by_lens] == [jobs["failed"].pk]
    owner = jobs["queued"].owner
    mine = admin_client.get(url, {"owner__id__exact": owner.pk}).context["cl"].result_list
    assert {j.owner_id for j in mine} == {owner.pk} and len(mine) == 3
    assert len(admin_client.get(url, {"q": "bob"}).context["cl"].result_list) == 2
    today = timezone.now()
    dated = admin_client.get(url, {"created_at__year": today.year, "created_at__month": today.month})
    assert dated.status_code == 200


def test_an_analysis_page_is_read_only_and_links_its_rows(admin_client, jobs):
    job = jobs["done"]
    AnalysisRow.objects.bulk_create(
        [AnalysisRow(analysis=job, position=p, data={"token": f"t{p}", "explanation": f"e{p}", "mse": 0.5})
         for p in range(3)]
    )  # fmt: skip
    html = admin_client.get(reverse("admin:analyses_analysis_change", args=[job.pk])).content.decode()
    rows_url = reverse("admin:analyses_analysisrow_changelist") + f"?analysis__id__exact={job.pk}"
    assert rows_url in html and "3 row(s)" in html
    assert 'name="status"' not in html  # no editable field
    rows = admin_client.get(rows_url)
    assert rows.status_code == 200 and [r.position for r in rows.context["cl"].result_list] == [0, 1, 2]
    assert "e1" in rows.content.decode()


def test_cancel_goes_through_the_core_service(
    admin_client, jobs, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(
        "lensweb.analyses.notify.cancel_to_worker", lambda channel, job: sent.append((channel, job.pk))
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, "cancel", jobs["queued"], jobs["running"], jobs["done"])
    assert response.status_code == 200
    text = response.content.decode()
    assert "2 analysis(es) cancelled or asked to stop" in text and "1 had already finished" in text
    queued, running, done = (Analysis.objects.get(pk=jobs[k].pk) for k in ("queued", "running", "done"))
    assert queued.status == S.CANCELLED and queued.finished_at is not None
    assert running.status == S.RUNNING and running.cancel_requested  # the worker stops within a batch
    assert sent == [("specific.worker!abc", running.pk)]
    assert done.status == S.DONE and not done.cancel_requested


def test_requeue_sends_failed_and_cancelled_jobs_back_with_their_rows(
    admin_client, jobs, django_capture_on_commit_callbacks, monkeypatch
):
    rang = []
    monkeypatch.setattr(lifecycle, "ring_doorbell", lambda: rang.append(True))  # where do_requeue rings it
    failed = jobs["failed"]
    AnalysisRow.objects.bulk_create(
        [AnalysisRow(analysis=failed, position=p, data={"position": p}) for p in range(4)]
    )
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = act(
            admin_client, "requeue", jobs["failed"], jobs["cancelled"], jobs["done"], jobs["queued"]
        )
    text = response.content.decode()
    assert "2 analysis(es) re-queued" in text and "2 not re-queued" in text
    assert len(callbacks) == 2 and rang == [True, True]  # the doorbell, on commit, once per job
    for key in ("failed", "cancelled"):
        job = Analysis.objects.get(pk=jobs[key].pk)
        assert job.status == S.QUEUED and not job.cancel_requested and job.worker is None
        assert (job.attempts, job.error, job.started_at, job.finished_at) == (0, "", None, None)
    assert AnalysisRow.objects.filter(analysis=failed).count() == 4  # the next worker resumes after them
    assert Analysis.objects.get(pk=failed.pk).progress_done == 4
    assert Analysis.objects.get(pk=jobs["done"].pk).status == S.DONE
    # ...and a worker can claim it again (claims skip jobs with cancel_requested).
    worker = core.register_worker(lenses=["tiny", "other"])  # the fixture's jobs' lenses
    claimed = [core.claim_next_job(worker) for _ in range(3)]
    assert {j.pk for j in claimed if j} >= {jobs["failed"].pk, jobs["cancelled"].pk}


def test_requeue_refuses_jobs_that_are_not_final(jobs):
    assert not staff_services.do_requeue(jobs["running"].pk)
    assert not staff_services.do_requeue(jobs["done"].pk)
    assert Analysis.objects.get(pk=jobs["running"].pk).status == S.RUNNING


def test_worker_records_and_the_request_log_are_read_only(admin_client, jobs, alice):
    workers = admin_client.get(reverse("admin:analyses_workerrecord_changelist"))
    assert workers.status_code == 200 and "gpu-1:1:aaaa" in workers.content.decode()
    entry = requestlog.record(client="api", method="POST", endpoint="/api/v1/analyses", kind="analysis",
                              outcome="accepted", user=alice, text_chars=5)  # fmt: skip
    log_list = admin_client.get(reverse("admin:monitoring_requestlogentry_changelist"))
    assert log_list.status_code == 200 and "/api/v1/analyses" in log_list.content.decode()
    page = admin_client.get(reverse("admin:monitoring_requestlogentry_change", args=[entry.pk]))
    assert page.status_code == 200 and 'name="endpoint"' not in page.content.decode()
    assert admin_client.get(reverse("admin:monitoring_requestlogentry_add")).status_code == 403
    assert admin_client.get(reverse("admin:analyses_analysis_add")).status_code == 403
