"""POST /api/v1/analyses and GET/DELETE /api/v1/analyses/<id>: shapes, rows, cancel, the browser's rules."""

from __future__ import annotations

import pytest

from inference.types import AnalysisInput, AnalysisOptions
from lensweb.analyses import services
from lensweb.analyses.engine import get_engine
from lensweb.analyses.models import Analysis
from tests.conftest import token_ids

from .conftest import error_of

pytestmark = pytest.mark.django_db

URL = "/api/v1/analyses"


def run_worker(worker, job_id: int, upto: int | None = None, finish: bool = True) -> Analysis:
    """What the worker does, through the core's services, with the real engine's rows (the first `upto`)."""
    job = services.claim_next_job(worker)
    assert job is not None and job.pk == job_id
    engine = get_engine()
    spec = engine.get_spec(job.lens_id)
    inp, options = AnalysisInput.from_dict(job.input), AnalysisOptions.from_dict(job.options)
    prepared = engine.prepare(spec, inp, options, services.limits())
    lens = engine.load(spec)
    metadata = engine.metadata(lens, prepared)  # as the worker records it
    services.do_record_metadata(job.pk, worker.pk, metadata, prepared.total)
    positions = prepared.positions[:upto] if upto is not None else prepared.positions
    result = engine.analyze(lens, inp, options, remaining=positions, limits=services.limits())
    services.do_record_batch(job.pk, worker.pk, result.rows)
    if finish:
        services.do_finish_job(job.pk, worker.pk, Analysis.Status.DONE)
    job.refresh_from_db()
    return job


def test_submit_text_is_queued_with_its_position(api, alice, alice_key, live_worker):
    response = api.post(URL, {"text": "The Eiffel Tower is in Paris"}, key=alice_key)
    assert response.status_code == 202
    body = response.json_body
    job = Analysis.objects.get(pk=body["id"])
    assert len(token_ids("The Eiffel Tower is in Paris")) == 7
    assert job.owner == alice and job.lens_id == "tiny" and job.progress_total == 7
    assert body == {
        "id": job.pk,
        "status": "queued",
        "queue_position": 1,
        "status_detail": "position 1 in the queue",
        "cached": False,
        "url": f"http://testserver/api/v1/analyses/{job.pk}",
        "html_url": f"http://testserver/analyses/{job.pk}/",
    }
    assert response["Location"] == body["url"]


def test_submit_chat_with_lens_and_options(api, alice_key, live_worker):
    body = {
        "messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}],
        "lens": "tiny",
        "options": {
            "best_of_k": 4,
            "temperature": 0.5,
            "seed": 7,
            "salience": False,
            "kl": True,
            "logit_lens": True,
            "last_n_messages": 1,
            "keep_candidates": True,
        },
    }
    response = api.post(URL, body, key=alice_key)
    assert response.status_code == 202
    job = Analysis.objects.get(pk=response.json_body["id"])
    assert job.input == {"messages": body["messages"]}
    assert job.options == {**body["options"], "positions": None}


def test_queue_is_the_browsers_fair_queue(api, alice, bob, alice_key, bob_key, live_worker):
    """Alice's two jobs, then Bob's one: Bob goes second (round-robin), as on the page."""
    first = api.post(URL, {"text": "one"}, key=alice_key).json_body
    second = api.post(URL, {"text": "two"}, key=alice_key).json_body
    bobs = api.post(URL, {"text": "three"}, key=bob_key).json_body
    assert [first["queue_position"], second["queue_position"], bobs["queue_position"]] == [1, 2, 2]
    assert api.get(f"{URL}/{second['id']}", key=alice_key).json_body["queue_position"] == 3


def test_get_returns_progress_rows_and_metadata(api, alice_key, live_worker):
    job_id = api.post(URL, {"text": "a b c d e", "options": {"kl": True}}, key=alice_key).json_body["id"]
    queued = api.get(f"{URL}/{job_id}", key=alice_key).json_body
    assert (
        queued["status"] == "queued"
        and queued["rows"] == []
        and queued["progress"] == {"done": 0, "total": 5, "phase": None, "partial": 0.0, "eta_seconds": None}
    )
    assert queued["error"] is None and queued["metadata"] == {}

    run_worker(live_worker, job_id, upto=3, finish=False)
    running = api.get(f"{URL}/{job_id}", key=alice_key).json_body
    assert running["status"] == "running" and running["queue_position"] is None
    progress = running["progress"]
    assert (progress["done"], progress["total"], progress["partial"]) == (3, 5, 3.0)
    assert [row["position"] for row in running["rows"]] == [0, 1, 2]
    assert [row["token_id"] for row in running["rows"]] == token_ids("a b c d e")[:3]
    assert running["rows"][1]["token"] == " b" and running["rows"][1]["kl"] is not None
    assert running["metadata"]["lens_id"] == "tiny"

    after = api.get(f"{URL}/{job_id}?after=1", key=alice_key).json_body
    assert [row["position"] for row in after["rows"]] == [2]
    bad = api.get(f"{URL}/{job_id}?after=x", key=alice_key)
    assert bad.status_code == 400 and error_of(bad)["field"] == "after"


def test_get_a_finished_job(api, alice_key, live_worker):
    job_id = api.post(URL, {"text": "a b c"}, key=alice_key).json_body["id"]
    run_worker(live_worker, job_id)
    body = api.get(f"{URL}/{job_id}", key=alice_key).json_body
    assert body["status"] == "done" and len(body["rows"]) == 3 and body["finished_at"]
    assert body["metadata"]["summary"]["rows"] == 3
    for row in body["rows"]:
        assert len(row["explanation_token_ids"]) == body["metadata"]["t_text"] and row["mse"] > 0


def test_chosen_positions_echo_as_asked_and_resolve_in_metadata(api, alice_key, live_worker):
    text = "The Eiffel Tower is in Paris"  # 7 tokens
    response = api.post(URL, {"text": text, "options": {"positions": [-1, 2, 2]}}, key=alice_key)
    assert response.status_code == 202
    job_id = response.json_body["id"]
    assert Analysis.objects.get(pk=job_id).progress_total == 2
    run_worker(live_worker, job_id)
    body = api.get(f"{URL}/{job_id}", key=alice_key).json_body
    assert body["options"]["positions"] == [-1, 2, 2]
    assert body["metadata"]["positions"] == [2, 6]
    assert [row["position"] for row in body["rows"]] == [2, 6]
    whole = api.post(URL, {"text": text}, key=alice_key).json_body["id"]
    run_worker(live_worker, whole)
    rows = {r["position"]: r for r in api.get(f"{URL}/{whole}", key=alice_key).json_body["rows"]}
    for row in body["rows"]:
        assert row["explanation_token_ids"] == rows[row["position"]]["explanation_token_ids"]
        assert row["mse"] == pytest.approx(rows[row["position"]]["mse"], rel=1e-5)


def test_a_position_outside_the_text_is_a_400_that_names_it(api, alice_key, live_worker):
    response = api.post(URL, {"text": "a b c", "options": {"positions": [1, 9]}}, key=alice_key)
    assert response.status_code == 400
    error = error_of(response)
    assert error["field"] == "options.positions" and "positions 9 is outside the input" in error["message"]


def test_delete_cancels_a_queued_job_at_once(api, alice_key, live_worker):
    job_id = api.post(URL, {"text": "cancel me"}, key=alice_key).json_body["id"]
    response = api.delete(f"{URL}/{job_id}", key=alice_key)
    assert response.status_code == 200
    assert response.json_body["status"] == "cancelled" and "rows" not in response.json_body
    assert services.claim_next_job(live_worker) is None


def test_delete_flags_a_running_job(api, alice_key, live_worker):
    job_id = api.post(URL, {"text": "a b c"}, key=alice_key).json_body["id"]
    run_worker(live_worker, job_id, upto=1, finish=False)
    body = api.delete(f"{URL}/{job_id}", key=alice_key).json_body
    assert body["status"] == "running" and body["cancel_requested"] is True
    assert services.is_cancel_requested(job_id)


def test_no_live_worker_is_503(api, alice_key, live_worker, settings):
    from datetime import timedelta

    from django.utils import timezone

    from lensweb.analyses.models import WorkerRecord

    WorkerRecord.objects.update(
        last_heartbeat=timezone.now() - timedelta(seconds=settings.LENSWEB_STALE_AFTER + 1)
    )
    response = api.post(URL, {"text": "hello"}, key=alice_key)
    assert response.status_code == 503 and error_of(response)["code"] == "no_worker"
    assert int(response["Retry-After"]) > 0
    assert not Analysis.objects.exists()


def test_per_user_queue_cap_is_the_browsers(api, alice_key, live_worker, settings):
    settings.LENSWEB_MAX_QUEUED_PER_USER = 1
    assert api.post(URL, {"text": "first"}, key=alice_key).status_code == 202
    response = api.post(URL, {"text": "second"}, key=alice_key)
    assert response.status_code == 429 and error_of(response)["code"] == "queue_full"
    assert "the limit is 1" in error_of(response)["message"] and response["Retry-After"]


def test_unknown_route_and_wrong_method_are_json(api, alice_key):
    missing = api.get("/api/v1/nothing-here", key=alice_key)
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    wrong = api.call("PUT", URL, key=alice_key)
    assert wrong.status_code == 405 and wrong["Allow"] == "GET, POST"
    assert error_of(wrong)["code"] == "method_not_allowed"


def test_unexpected_errors_are_json_500_and_logged(api, alice_key, live_worker, monkeypatch, caplog):
    from lensweb.api import serializers

    job_id = api.post(URL, {"text": "x"}, key=alice_key).json_body["id"]
    monkeypatch.setattr(serializers, "analysis_json", lambda *a, **k: 1 / 0)
    response = api.get(f"{URL}/{job_id}", key=alice_key)
    assert response.status_code == 500 and error_of(response)["code"] == "internal_error"
    assert "ZeroDivisionError" in caplog.text
