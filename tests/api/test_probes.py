"""The probe routes: score your own explanation, read activations (JSON or .npy), poll, list the scores;
owner-only scoring, 400s that name the field with nothing queued. Answered by the real worker code."""

from __future__ import annotations

import io

import numpy
import pytest

from lensweb.analyses.models import AnalysisRow, Probe

from .conftest import error_of

pytestmark = pytest.mark.django_db(transaction=True)
TEXT = "a b c d e"


@pytest.fixture
def analysis_id(api, alice_key, live_worker, run_jobs):
    submitted = api.post("/api/v1/analyses", {"text": TEXT, "options": {"seed": 3}}, key=alice_key)
    run_jobs(live_worker)
    return submitted.json_body["id"]


def test_score_a_rows_own_ids_then_poll_and_list(api, alice_key, bob_key, analysis_id, run_jobs, live_worker):
    own = AnalysisRow.objects.get(analysis_id=analysis_id, position=2).data
    body = {"position": 2, "explanation_token_ids": own["explanation_token_ids"]}
    queued = api.post(f"/api/v1/analyses/{analysis_id}/scores", body, key=alice_key)
    assert queued.status_code == 202 and queued["Location"] == queued.json_body["url"]
    assert queued.json_body["status"] == "queued" and queued.json_body["what"] == "score"
    run_jobs(live_worker)
    done = api.get(queued.json_body["url"], key=alice_key).json_body
    assert done["status"] == "done" and done["request"] == {"position": 2, **body}
    assert done["result"]["row"]["mse"] == pytest.approx(own["mse"], rel=1e-4)
    assert abs(done["result"]["delta_mse"]) <= 1e-4 * own["mse"]
    listed = api.get(f"/api/v1/analyses/{analysis_id}/scores", key=alice_key).json_body
    assert [p["id"] for p in listed] == [done["id"]]
    # bob may neither score alice's analysis nor read her probe
    refused = api.post(
        f"/api/v1/analyses/{analysis_id}/scores", {"position": 1, "explanation": "x"}, key=bob_key
    )
    assert refused.status_code == 404 and api.get(queued.json_body["url"], key=bob_key).status_code == 404


def test_activations_as_json_and_as_npy(api, client, alice_key, analysis_id, run_jobs, live_worker):
    queued = api.post(f"/api/v1/analyses/{analysis_id}/activations", {"positions": [0, -1]}, key=alice_key)
    assert queued.status_code == 202
    run_jobs(live_worker)
    done = api.get(queued.json_body["url"], key=alice_key).json_body
    assert done["result"]["positions"] == [0, 4]
    vectors = done["result"]["activations"]
    npy = client.get(
        queued.json_body["url"],
        headers={"Authorization": f"Bearer {alice_key}", "Accept": "application/octet-stream"},
    )
    assert npy["Content-Type"] == "application/octet-stream"
    array = numpy.load(io.BytesIO(npy.content), allow_pickle=False)
    assert array.dtype == numpy.float32 and array.shape == (2, len(vectors[0]))
    assert array.tolist() == vectors  # float32 both ways: the same numbers


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("scores", {"position": 99, "explanation": "x"}, "position"),
        ("scores", {"position": 1}, "explanation"),
        ("scores", {"position": 1, "explanation": "x", "extra": 1}, "extra"),
        ("scores", {"position": 1, "explanation_token_ids": [-1]}, "explanation_token_ids"),
        ("activations", {"positions": []}, "positions"),
        ("activations", {"positions": [0, 40]}, "positions"),
    ],
)
def test_bad_bodies_are_400s_that_name_the_field(api, alice_key, analysis_id, route, body, field):
    response = api.post(f"/api/v1/analyses/{analysis_id}/{route}", body, key=alice_key)
    assert response.status_code == 400 and error_of(response)["field"] == field, error_of(response)
    assert not Probe.objects.exists()


def test_scores_are_exported_with_the_analysis(api, alice_key, analysis_id, run_jobs, live_worker):
    import json

    plain = api.get(f"/api/v1/analyses/{analysis_id}/export.json", key=alice_key)
    assert "user_scores" not in json.loads(plain.content)  # none yet: the research shape, unchanged
    api.post(
        f"/api/v1/analyses/{analysis_id}/scores", {"position": 1, "explanation": "a letter"}, key=alice_key
    )
    run_jobs(live_worker)
    exported = json.loads(api.get(f"/api/v1/analyses/{analysis_id}/export.json", key=alice_key).content)
    [score] = exported["user_scores"]
    assert (
        score["request"] == {"position": 1, "explanation": "a letter"}
        and score["row"]["explanation"] == "a letter"
    )
    assert score["delta_mse"] == pytest.approx(score["row"]["mse"] - exported["data"][1]["mse"])


def test_describe_an_activation_and_refuse_bad_vectors(api, alice_key, analysis_id, run_jobs, live_worker):
    read = api.post(f"/api/v1/analyses/{analysis_id}/activations", {"positions": [2, 3]}, key=alice_key)
    run_jobs(live_worker)
    vectors = api.get(read.json_body["url"], key=alice_key).json_body["result"]["activations"]
    width = len(vectors[0])
    difference = [a - b for a, b in zip(vectors[0], vectors[1], strict=True)]
    queued = api.post(
        "/api/v1/describe",
        {"vectors": [vectors[0], difference], "options": {"temperature": 0}},
        key=alice_key,
    )
    assert queued.status_code == 202 and queued.json_body["what"] == "describe"
    assert queued.json_body["analysis_id"] is None and queued.json_body["lens"] == "tiny"
    run_jobs(live_worker)
    done = api.get(queued.json_body["url"], key=alice_key).json_body
    rows = done["result"]["rows"]
    assert done["status"] == "done" and [r["position"] for r in rows] == [0, 1] and rows[0]["explanation"]
    assert done["result"]["metadata"]["token_ids_given"] is False
    before = Probe.objects.count()
    for body, field, message in [
        ({"vectors": [vectors[0][:-1]]}, "vectors", f"this lens' activations have {width}"),
        ({"vectors": [vectors[0]], "options": {"kl": True}}, "options.kl", "a vector has none"),
        ({"vectors": [vectors[0]], "token_ids": [1, 2]}, "token_ids", "one token id per vector"),
        ({"vectors": [[0.5]] * 257}, "vectors", "List should have at most 256"),  # (a body past 256 KiB: 413)
        ({"vectors": [vectors[0]], "lens": "nope"}, "lens", "nope"),
    ]:
        refused = api.post("/api/v1/describe", body, key=alice_key)
        error = error_of(refused)
        assert refused.status_code == 400 and error["field"] == field and message in error["message"], error
    nan = api.post("/api/v1/describe", raw='{"vectors": [[NaN' + ", 0.5" * (width - 1) + "]]}", key=alice_key)
    assert nan.status_code == 400 and "finite" in error_of(nan)["message"] + str(error_of(nan))
    assert Probe.objects.count() == before  # nothing queued


def test_explain_the_difference_of_two_positions(api, alice_key, bob_key, analysis_id, run_jobs, live_worker):
    read = api.post(f"/api/v1/analyses/{analysis_id}/activations", {"positions": [1, 3]}, key=alice_key)
    run_jobs(live_worker)
    a, b = api.get(read.json_body["url"], key=alice_key).json_body["result"]["activations"]
    sides = {
        "a": {"analysis_id": analysis_id, "position": 1},
        "b": {"analysis_id": analysis_id, "position": -2},
    }
    queued = api.post("/api/v1/compare", {**sides, "options": {"temperature": 0}}, key=alice_key)
    assert queued.status_code == 202 and queued.json_body["what"] == "compare"
    # the same difference, one side given as a vector
    mixed = api.post(
        "/api/v1/compare", {"a": {"vector": a}, "b": sides["b"], "options": {"temperature": 0}}, key=alice_key
    )
    run_jobs(live_worker)
    done = api.get(queued.json_body["url"], key=alice_key).json_body["result"]
    expected = sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) ** 0.5
    assert done["diff_norm"] == pytest.approx(expected, rel=1e-6) and done["row"]["explanation"]
    again = api.get(mixed.json_body["url"], key=alice_key).json_body["result"]
    assert again["row"]["explanation_token_ids"] == done["row"]["explanation_token_ids"]
    for body, key, field in [
        ({"a": {"vector": a, "analysis_id": analysis_id}, "b": sides["b"]}, alice_key, "a"),
        ({"a": sides["a"], "b": {"analysis_id": analysis_id, "position": 40}}, alice_key, "b.position"),
        ({"a": sides["a"], "b": {"vector": a[:-1]}}, alice_key, "b.vector"),
        ({"a": sides["a"], "b": sides["b"], "lens": "other"}, alice_key, "lens"),
        (sides, bob_key, "a.analysis_id"),  # someone else's analysis is no analysis of yours
    ]:
        refused = api.post("/api/v1/compare", body, key=key)
        assert refused.status_code == 400 and error_of(refused)["field"] == field, error_of(refused)


def test_get_activations_queues_once_then_answers_200(
    api, client, alice_key, analysis_id, run_jobs, live_worker
):
    url = f"/api/v1/analyses/{analysis_id}/activations?positions=0,-1"
    first = api.get(url, key=alice_key)
    assert first.status_code == 202 and first["Location"] == first.json_body["url"]
    again = api.get(url, key=alice_key)
    assert again.status_code == 202 and again.json_body["id"] == first.json_body["id"]  # the same read
    run_jobs(live_worker)
    done = api.get(url, key=alice_key)
    assert done.status_code == 200 and done.json_body["positions"] == [0, 4]
    assert len(done.json_body["activations"]) == 2 and Probe.objects.count() == 1
    npy = client.get(
        url, headers={"Authorization": f"Bearer {alice_key}", "Accept": "application/octet-stream"}
    )
    array = numpy.load(io.BytesIO(npy.content), allow_pickle=False)
    assert array.tolist() == done.json_body["activations"]
    for bad, field in [("positions=a", "positions"), ("positions=99", "positions")]:
        refused = api.get(f"/api/v1/analyses/{analysis_id}/activations?{bad}", key=alice_key)
        assert refused.status_code == 400 and error_of(refused)["field"] == field
