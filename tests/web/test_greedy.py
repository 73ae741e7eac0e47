"""Temperature 0 (greedy decoding) is accepted wherever an analysis is submitted, and means what it says."""

from __future__ import annotations

import pytest

from lensweb.analyses import services
from lensweb.analyses.forms import AnalysisOptionsForm
from lensweb.analyses.models import AnalysisRow

TEXT = "The capital of France is Paris"


def explanations(job_id: int) -> list:
    rows = AnalysisRow.objects.filter(analysis_id=job_id).order_by("position")
    return [row.data["explanation_token_ids"] for row in rows]


@pytest.mark.django_db(transaction=True)
def test_temperature_0_is_greedy_whatever_the_seed(alice, run_jobs):
    jobs = [
        services.do_submit(alice, None, {"text": TEXT}, {"temperature": 0, "seed": seed, "salience": False})
        for seed in (1, 2)
    ]
    sampled = services.do_submit(
        alice, None, {"text": TEXT}, {"temperature": 1.0, "seed": 1, "salience": False}
    )
    run_jobs()
    greedy = [explanations(job.pk) for job in jobs]
    assert greedy[0] and greedy[0] == greedy[1]  # the seed draws nothing at temperature 0
    assert explanations(sampled.pk) != greedy[0]  # sampling does draw (the tiny lens' vocabulary is wide)


def test_the_form_and_the_api_schema_take_0_and_refuse_below_it():
    from lensweb.api.schemas import AnalysisOptions

    assert AnalysisOptionsForm({"temperature": "0", "best_of_k": "1", "seed": "1"}).is_valid()
    assert not AnalysisOptionsForm({"temperature": "-0.1", "best_of_k": "1", "seed": "1"}).is_valid()
    assert AnalysisOptions.model_json_schema()["properties"]["temperature"]["minimum"] == 0
