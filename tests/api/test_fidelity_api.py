"""The fidelity columns in the API (issue 14): every row's cosine_similarity, activation_norm and
activation_norm_outlier, in the row schema the OpenAPI document is derived from (the test client checks every
answer against it), and absent from the rows of an analysis stored before them."""

from __future__ import annotations

import jsonschema
import pytest

from lensweb.analyses.models import Analysis, AnalysisRow

from .conftest import DOC, VALIDATOR
from .test_analyses import URL, run_worker

pytestmark = pytest.mark.django_db
FIELDS = ("cosine_similarity", "activation_norm", "activation_norm_outlier")


def row_schema() -> dict:
    return {**DOC["components"]["schemas"]["AnalysisRow"], "components": DOC["components"]}


def test_the_row_schema_documents_the_fields():
    properties = DOC["components"]["schemas"]["AnalysisRow"]["properties"]
    types = {name: {t.get("type") for t in properties[name]["anyOf"]} for name in FIELDS}
    assert types == {
        "cosine_similarity": {"number", "null"},
        "activation_norm": {"number", "null"},
        "activation_norm_outlier": {"boolean", "null"},
    }
    assert all(properties[name].get("description") for name in FIELDS)
    assert "activation_norm_range" in properties["activation_norm_outlier"]["description"]
    # the document holds a row to them: a flag that is not a boolean is not a row
    row = {"position": 0, "token": "a", "explanation": "b", "mse": 1.0, "activation_norm_outlier": "yes"}
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR(row_schema()).validate(row)


def test_a_finished_analysis_has_them_on_every_row(api, alice_key, live_worker):
    job_id = api.post(
        URL, {"text": "The capital of France is Paris, famous for the Eiffel Tower."}, key=alice_key
    ).json_body["id"]
    job = run_worker(live_worker, job_id)
    body = api.get(f"{URL}/{job_id}", key=alice_key).json_body  # checked against the document
    stored = {r.position: r.data for r in AnalysisRow.objects.filter(analysis=job)}
    assert body["rows"] and len(body["rows"]) == len(stored)
    for row in body["rows"]:
        assert [row[k] for k in FIELDS] == [stored[row["position"]][k] for k in FIELDS]
        assert -1 <= row["cosine_similarity"] <= 1 and row["activation_norm"] > 0
        assert isinstance(row["activation_norm_outlier"], bool)
    usual = body["metadata"]["activation_norm_range"]
    assert usual["low"] < usual["median"] < usual["high"]
    assert "left out: not trained on" in body["metadata"]["summary"]["note"]


def test_rows_stored_before_the_fields_answer_without_them(api, alice, alice_key):
    analysis = Analysis.objects.create(
        owner=alice,
        lens_id="tiny",
        input={"text": "a b"},
        options={},
        status=Analysis.Status.DONE,
        metadata={"summary": {"rows": 2, "mean_mse": 2.0, "max_mse": 3.0}},
        progress_done=2,
        progress_total=2,
    )
    for position, mse in ((0, 1.0), (1, 3.0)):
        data = {"position": position, "token": "a", "explanation": "x", "mse": mse, "relative_rmse": 0.5}
        AnalysisRow.objects.create(analysis=analysis, position=position, data=data)
    body = api.get(f"{URL}/{analysis.pk}", key=alice_key).json_body
    assert not any(k in row for row in body["rows"] for k in FIELDS)
    assert [row["mse"] for row in body["rows"]] == [1.0, 3.0]
