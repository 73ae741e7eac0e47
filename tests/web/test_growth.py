"""An analysis that grows (analyses.growth): positions added to an analysis of chosen positions are computed
by the same job, which resumes after the rows it holds; the rows equal a whole-text run's."""

from __future__ import annotations

import pytest

from lensweb.analyses import growth, services
from lensweb.analyses.errors import SubmissionError
from lensweb.analyses.models import Analysis, AnalysisRow

from .conftest import token_ids

pytestmark = [pytest.mark.django_db(transaction=True)]

TEXT = "The capital of France is Paris"
OPTIONS = {"seed": 5, "best_of_k": 2}


def rows(job_id: int) -> dict[int, dict]:
    return dict(AnalysisRow.objects.filter(analysis_id=job_id).values_list("position", "data"))


def fresh(job) -> Analysis:
    return Analysis.objects.get(pk=job.pk)


@pytest.fixture
def whole(alice, run_jobs):
    job = services.do_submit(alice, None, {"text": TEXT}, dict(OPTIONS))
    run_jobs()
    return rows(job.pk)


def test_added_positions_are_computed_by_the_same_job_and_equal_a_whole_run(alice, run_jobs, whole):
    n = len(token_ids(TEXT))
    job = services.do_submit(alice, None, {"text": TEXT}, {**OPTIONS, "positions": [1]})
    run_jobs()
    first_row = AnalysisRow.objects.get(analysis=job, position=1)
    grown, new = growth.do_add_positions(alice, job.pk, [3, -1, 1])
    assert new == [3, n - 1]
    assert grown.status == "queued" and grown.progress_total == 3 and grown.progress_done == 1
    assert grown.options["positions"] == [1, 3, n - 1] and grown.options["last_n_messages"] is None
    run_jobs()
    job = fresh(job)
    assert job.status == "done" and job.metadata["positions"] == [1, 3, n - 1]
    assert AnalysisRow.objects.get(analysis=job, position=1).pk == first_row.pk  # kept, not recomputed
    got = rows(job.pk)
    assert sorted(got) == [1, 3, n - 1]
    for position, row in got.items():
        assert row["explanation_token_ids"] == whole[position]["explanation_token_ids"]
        assert row["mse"] == pytest.approx(whole[position]["mse"], rel=1e-5)


def test_positions_it_has_add_nothing(alice, run_jobs):
    job = services.do_submit(alice, None, {"text": TEXT}, {**OPTIONS, "positions": [2]})
    run_jobs()
    same, new = growth.do_add_positions(alice, job.pk, [2, 2 - len(token_ids(TEXT))])
    assert new == [] and same.status == "done"
    everything = services.do_submit(alice, None, {"text": TEXT}, dict(OPTIONS))
    assert growth.do_add_positions(alice, everything.pk, [0])[1] == []  # a whole text has every position


def test_a_queued_job_takes_them_on_and_two_clicks_add_up(alice, run_jobs):
    job = services.do_submit(alice, None, {"text": TEXT}, {**OPTIONS, "positions": [0]})
    growth.do_add_positions(alice, job.pk, [2])
    growth.do_add_positions(alice, job.pk, [4])
    assert fresh(job).options["positions"] == [0, 2, 4] and fresh(job).progress_total == 3
    run_jobs()
    assert sorted(rows(job.pk)) == [0, 2, 4] and fresh(job).status == "done"


def test_a_job_that_grows_while_running_is_queued_again_for_them(alice, run_jobs):
    job = services.do_submit(alice, None, {"text": TEXT}, {**OPTIONS, "positions": [0, 1]})
    worker = run_jobs.worker
    worker.record = services.register_worker(device="cpu")
    claimed = services.claim_next_job(worker.record)
    growth.do_add_positions(alice, job.pk, [5])  # while it runs
    worker._execute(claimed)
    job = fresh(job)
    assert job.status == "queued" and sorted(rows(job.pk)) == [0, 1] and job.attempts == 0
    assert growth.GREW_WHILE_RUNNING not in job.metadata
    run_jobs()
    assert fresh(job).status == "done" and sorted(rows(job.pk)) == [0, 1, 5]


@pytest.mark.parametrize(
    ("asked", "message"),
    [([40], "positions 40 is outside the input"), ([], "choose at least one token"), ("3", "choose")],
)
def test_bad_positions_are_refused_and_change_nothing(alice, run_jobs, asked, message):
    job = services.do_submit(alice, None, {"text": TEXT}, {**OPTIONS, "positions": [1]})
    run_jobs()
    with pytest.raises(SubmissionError, match=message):
        growth.do_add_positions(alice, job.pk, asked)
    assert fresh(job).status == "done" and fresh(job).options["positions"] == [1]


def test_only_the_owner_may_add_positions(alice, bob, run_jobs):
    job = services.do_submit(alice, None, {"text": TEXT}, {**OPTIONS, "positions": [1]})
    with pytest.raises(Analysis.DoesNotExist):
        growth.do_add_positions(bob, job.pk, [2])


def test_the_full_text_view_offers_unanalysed_tokens_and_takes_clicks(alice, bob, client, run_jobs):
    from django.urls import reverse

    job = services.do_submit(alice, None, {"text": TEXT}, {**OPTIONS, "positions": [1]})
    run_jobs()
    client.force_login(alice)
    page = client.get(reverse("results:detail", args=[job.pk]), {"view": "fulltext"}).content.decode()
    assert 'id="f-0" data-position="0" tabindex="0" role="button"' in page and 'id="grow-form"' in page
    url = reverse("results:add_positions", args=[job.pk]) + "?view=fulltext"
    htmx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "results-body"}
    body = client.post(url, {"positions": "0, 2"}, **htmx).content.decode()
    assert 'class="tb queued" id="f-0"' in body and 'class="tb queued" id="f-2"' in body
    assert 'id="fulltext-progress"' in body and 'hx-trigger="load delay:1s"' in body
    assert fresh(job).status == "queued" and fresh(job).options["positions"] == [0, 1, 2]
    refused = client.post(url, {"positions": "99999999999"}, **htmx).content.decode()
    assert 'class="flash error"' in refused and "99999999999 is outside" in refused  # as the form says it
    client.force_login(bob)
    assert client.post(url, {"positions": "3"}, **htmx).status_code == 404
    assert fresh(job).options["positions"] == [0, 1, 2]
    run_jobs()
    client.force_login(alice)
    done = client.get(reverse("results:detail", args=[job.pk]), {"view": "fulltext"}).content.decode()
    assert 'id="fulltext-progress"' not in done and 'class="tb queued"' not in done
