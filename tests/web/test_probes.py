"""Probes through the queue (analyses/probes.py, the worker's _run_probe): the owner's own explanation scored
at a position of an analysis, and its activations read, by a worker like any job; refused with the reason,
and queued for nobody but the analysis' owner."""

from __future__ import annotations

import pytest

from lensweb.analyses import services
from lensweb.analyses.errors import SubmissionError
from lensweb.analyses.models import Analysis, AnalysisRow, Probe

TEXT = "The capital of France is Paris"
OPTIONS = {"seed": 5, "best_of_k": 2, "salience": True}

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def analysed(alice, run_jobs):
    job = services.do_submit(alice, None, {"text": TEXT}, dict(OPTIONS))
    run_jobs()
    return Analysis.objects.get(pk=job.pk)


def row(job, position):
    return AnalysisRow.objects.get(analysis=job, position=position).data


def test_scoring_a_rows_own_explanation_through_the_queue_gives_the_row(alice, analysed, run_jobs):
    own = row(analysed, 3)
    probe = services.do_submit_probe(
        alice, analysed.pk, "score", {"position": 3, "explanation_token_ids": own["explanation_token_ids"]}
    )
    assert probe.status == "queued" and probe.request["position"] == 3
    assert run_jobs() == [("probe", probe.pk)]
    probe.refresh_from_db()
    assert probe.status == "done" and probe.attempts == 1
    scored = probe.result["row"]
    assert scored["mse"] == pytest.approx(own["mse"], rel=1e-4)
    assert scored["relative_rmse"] == pytest.approx(own["relative_rmse"], rel=1e-4)
    assert probe.result["delta_mse"] == pytest.approx(0, abs=1e-4 * own["mse"])
    words = services.do_submit_probe(alice, analysed.pk, "score", {"position": -1, "explanation": "a city"})
    run_jobs()
    words.refresh_from_db()
    assert (
        words.request["position"] == analysed.progress_total - 1
        and words.result["row"]["explanation"] == "a city"
    )
    assert words.result["delta_mse"] == pytest.approx(
        words.result["row"]["mse"] - row(analysed, words.request["position"])["mse"]
    )
    assert [s["id"] for s in services.user_scores(analysed)] == [probe.pk, words.pk]


def test_activations_come_back_one_vector_per_position(alice, analysed, run_jobs):
    probe = services.do_submit_probe(alice, analysed.pk, "activations", {"positions": [0, -1]})
    run_jobs()
    probe.refresh_from_db()
    assert probe.status == "done" and probe.result["positions"] == [0, analysed.progress_total - 1]
    vectors = probe.result["activations"]
    assert len(vectors) == 2 and len({len(v) for v in vectors}) == 1 and vectors[0] != vectors[1]


@pytest.mark.parametrize(
    ("what", "data", "field"),
    [
        ("score", {"position": 99, "explanation": "x"}, "position"),
        ("score", {"position": "1", "explanation": "x"}, "position"),
        ("score", {"position": 1}, "explanation"),
        ("score", {"position": 1, "explanation": "x", "explanation_token_ids": [1]}, "explanation"),
        ("score", {"position": 1, "explanation": " "}, "explanation"),
        ("score", {"position": 1, "explanation_token_ids": []}, "explanation_token_ids"),
        ("score", {"position": 1, "explanation_token_ids": [1.5]}, "explanation_token_ids"),
        ("activations", {"positions": []}, "positions"),
        ("activations", {"positions": [0, 50]}, "positions"),
    ],
)
def test_bad_requests_are_refused_and_nothing_is_queued(alice, analysed, what, data, field):
    with pytest.raises(SubmissionError) as refused:
        services.do_submit_probe(alice, analysed.pk, what, data)
    assert refused.value.field == field and not Probe.objects.exists()


def test_only_the_owner_scores_and_a_failed_engine_check_fails_the_probe(alice, bob, analysed, run_jobs):
    with pytest.raises(Analysis.DoesNotExist):
        services.do_submit_probe(bob, analysed.pk, "score", {"position": 1, "explanation": "x"})
    with pytest.raises(Probe.DoesNotExist):
        services.get_probe_for(
            bob, services.do_submit_probe(alice, analysed.pk, "activations", {"positions": [1]}).pk
        )
    # an id past the vocabulary passes the web's bound check; the engine names it and the probe fails
    probe = services.do_submit_probe(
        alice, analysed.pk, "score", {"position": 1, "explanation_token_ids": [10**6]}
    )
    run_jobs()
    probe.refresh_from_db()
    assert probe.status == "failed" and "is not a token id" in probe.error
