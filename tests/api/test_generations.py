"""Generations over the JSON API: the same one submit path, queue and worker as the browser; then_analyse
names the analysis that follows; every response is checked against the OpenAPI document (conftest.Api)."""

from __future__ import annotations

import pytest

from inference.types import CHAT_TEMPERATURE
from lensweb.analyses.models import Analysis, Generation

from .conftest import error_of

pytestmark = pytest.mark.django_db(transaction=True)  # the worker closes its connections after a job

URL = "/api/v1/generations"


def test_submit_and_read_a_queued_generation(api, alice, alice_key, live_worker):
    response = api.post(
        URL, {"text": "Once upon a time", "options": {"n": 2, "max_new_tokens": 8}}, key=alice_key
    )
    assert response.status_code == 202
    body = response.json_body
    generation = Generation.objects.get(pk=body["id"])
    assert generation.owner == alice and generation.lens_id == "tiny"
    assert generation.options == {
        "n": 2,
        "max_new_tokens": 8,
        "temperature": 1.0,
        "top_p": 1.0,
        "seed": 42,
        "chat_reply": False,
    }
    assert body["status"] == "queued" and body["queue_position"] == 1 and body["result"] is None
    assert body["progress"] == {"done": 0, "total": 8} and body["then_analyse"] is False
    assert body["analysis_id"] is None and body["analysis_url"] is None
    assert response["Location"] == body["url"] == f"http://testserver/api/v1/generations/{generation.pk}"
    second = api.post(URL, {"messages": [{"role": "user", "content": "Hi"}]}, key=alice_key).json_body
    assert second["queue_position"] == 2


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"text": "Hi", "options": {"chat_reply": True}}, CHAT_TEMPERATURE),
        ({"messages": [{"role": "user", "content": "Hi"}]}, CHAT_TEMPERATURE),  # a chat's reply
        ({"text": "Hi", "options": {"chat_reply": True, "temperature": 0.9}}, 0.9),  # given: it wins
        ({"text": "Hi", "options": {"chat_reply": True, "temperature": 1.0}}, 1.0),
        ({"text": "Hi"}, 1.0),  # a continuation: the declared default
    ],
    ids=["chat-reply", "messages", "given", "given-default", "continuation"],
)
def test_an_omitted_temperature_takes_the_default_of_what_is_asked(
    api, alice_key, live_worker, body, expected
):
    response = api.post(URL, body, key=alice_key)
    assert response.status_code == 202
    assert Generation.objects.get(pk=response.json_body["id"]).options["temperature"] == expected


def test_no_live_worker_is_503(api, alice_key):
    response = api.post(URL, {"text": "hello"}, key=alice_key)
    assert response.status_code == 503 and error_of(response)["code"] == "no_worker"
    assert not Generation.objects.exists()


def test_run_and_read_back(api, alice_key, live_worker, run_jobs):
    body = {"text": "The capital of France is", "options": {"n": 2, "max_new_tokens": 5, "temperature": 0.7}}
    generation_id = api.post(URL, body, key=alice_key).json_body["id"]
    assert run_jobs(live_worker) == [("generation", generation_id)]
    read = api.get(f"{URL}/{generation_id}", key=alice_key).json_body
    samples = Generation.objects.get(pk=generation_id).samples
    assert read["status"] == "done" and read["result"]["samples"][0]["text"] == samples[0]["text"]
    assert read["result"]["prompt"] == "The capital of France is"


def test_then_analyse_names_the_analysis_that_follows(api, alice, alice_key, live_worker, run_jobs):
    chat = [{"role": "user", "content": "Say hi."}]
    response = api.post(
        URL,
        {
            "messages": chat,
            "options": {"max_new_tokens": 3, "temperature": 0},
            "then_analyse": True,
            "analysis_options": {"salience": False, "last_n_messages": 1},
        },
        key=alice_key,
    )
    assert response.status_code == 202
    body = response.json_body
    assert body["then_analyse"] is True and body["analysis_options"]["last_n_messages"] == 1
    assert body["analysis_id"] is None  # not yet: it exists once the reply does
    run_jobs(live_worker)
    read = api.get(f"{URL}/{body['id']}", key=alice_key).json_body
    analysis = Analysis.objects.get(pk=read["analysis_id"])
    assert read["analysis_url"] == f"http://testserver/api/v1/analyses/{analysis.pk}"
    assert analysis.owner == alice and analysis.status == "done"
    assert analysis.input["messages"][:1] == chat and analysis.input["messages"][1]["role"] == "assistant"
    assert api.get(f"/api/v1/analyses/{analysis.pk}", key=alice_key).json_body["rows"]


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"then_analyse": "yes"}, "then_analyse"),
        ({"analysis_options": {"salience": False}}, "analysis_options"),
        ({"then_analyse": True, "analysis_options": []}, "analysis_options"),
        ({"then_analyse": True, "analysis_options": {"best_of_k": 10_000}}, "analysis_options.best_of_k"),
        ({"then_analyse": True, "analysis_options": {"nonsense": 1}}, "analysis_options.nonsense"),
        (
            {"default_system_prompt": "no", "messages": [{"role": "user", "content": "x"}]},
            "default_system_prompt",
        ),
    ],
)
def test_bad_then_analyse_is_refused_with_its_field(api, alice_key, live_worker, extra, field):
    body = {"text": "hello", **extra}
    if "messages" in extra:
        del body["text"]
    response = api.post(URL, body, key=alice_key)
    assert response.status_code == 400, response.json_body
    assert error_of(response)["field"] == field
    assert not Generation.objects.exists()


def test_default_system_prompt_off_is_kept_with_the_input(api, alice_key, live_worker):
    body = {"messages": [{"role": "user", "content": "Hi"}], "default_system_prompt": False}
    response = api.post(URL, body, key=alice_key)
    assert response.status_code == 202
    assert Generation.objects.get().input["default_system_prompt"] is False


def test_another_users_generation_is_not_found_and_staff_read_only(api, alice_key, bob_key, live_worker):
    generation_id = api.post(URL, {"text": "hello"}, key=alice_key).json_body["id"]
    assert api.get(f"{URL}/{generation_id}", key=bob_key).status_code == 404
    assert api.delete(f"{URL}/{generation_id}", key=bob_key).status_code == 404
    assert api.delete(f"{URL}/{generation_id}", key=alice_key).json_body["status"] == "cancelled"
