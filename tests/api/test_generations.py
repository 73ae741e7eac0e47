"""Generations: submitted over the API, run by `process_one_generation` with the real engine over the tiny
test lens, read back; failures, cancels and stale workers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from lensweb.analyses.models import WorkerRecord
from lensweb.analyses.services import register_worker
from lensweb.api import services
from lensweb.api.generation_worker import process_one_generation
from lensweb.api.models import Generation
from tests.conftest import write_registry_with_a_breakable_lens

from .conftest import error_of

pytestmark = pytest.mark.django_db

URL = "/api/v1/generations"


@pytest.fixture
def tiny_lens_loader(tiny_engine):
    """The worker's `get_lens`: the engine loads a lens once per process and keeps it."""
    return lambda lens_id: tiny_engine.load(tiny_engine.get_spec(lens_id))


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
    assert response["Location"] == body["url"] == f"http://testserver/api/v1/generations/{generation.pk}"
    second = api.post(URL, {"messages": [{"role": "user", "content": "Hi"}]}, key=alice_key).json_body
    assert second["queue_position"] == 2


def test_no_live_worker_is_503(api, alice_key):
    response = api.post(URL, {"text": "hello"}, key=alice_key)
    assert response.status_code == 503 and error_of(response)["code"] == "no_worker"


def test_process_one_generation_with_the_tiny_lens(
    api, alice, alice_key, live_worker, tiny_engine, tiny_lens_loader
):
    body = {"text": "The capital of France is", "options": {"n": 2, "max_new_tokens": 5, "temperature": 0.7}}
    generation_id = api.post(URL, body, key=alice_key).json_body["id"]
    assert process_one_generation(live_worker, tiny_lens_loader) is True
    assert process_one_generation(live_worker, tiny_lens_loader) is False  # nothing left

    generation = Generation.objects.get(pk=generation_id)
    assert generation.status == "done" and generation.worker == live_worker and generation.error == ""
    assert generation.started_at and generation.finished_at and generation.timings["generate_s"] >= 0
    samples = generation.result["samples"]
    assert len(samples) == 2 and all(1 <= len(s["token_ids"]) <= 5 for s in samples)
    assert generation.result["prompt"] == "The capital of France is"
    live_worker.refresh_from_db()
    assert live_worker.state == WorkerRecord.State.IDLE

    read = api.get(f"{URL}/{generation_id}", key=alice_key).json_body  # checked against GenerationResult
    assert read["status"] == "done" and read["result"]["samples"][0]["text"] == samples[0]["text"]


def test_greedy_generation(alice, live_worker, tiny_engine, tiny_lens_loader):
    first = services.do_submit_generation(
        alice, "tiny", {"text": "Hello"}, {"temperature": 0, "max_new_tokens": 4}
    )
    second = services.do_submit_generation(alice, "tiny", {"text": "Hello"}, {"temperature": 0, "seed": 9})
    while process_one_generation(live_worker, tiny_lens_loader):
        pass
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == second.status == "done"
    assert first.result["samples"][0]["token_ids"] == second.result["samples"][0]["token_ids"][:4]


def test_seeded_sampling_is_repeatable(alice, live_worker, tiny_engine, tiny_lens_loader):
    options = {"n": 1, "max_new_tokens": 6, "temperature": 1.0, "seed": 3}
    first = services.do_submit_generation(alice, "tiny", {"text": "Hello"}, options)
    second = services.do_submit_generation(alice, "tiny", {"text": "Hello"}, options)
    while process_one_generation(live_worker, tiny_lens_loader):
        pass
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.result["samples"] == second.result["samples"]


def test_a_lens_that_cannot_load_fails_the_generation(alice, live_worker, tiny_engine, tmp_path, monkeypatch):
    registry, checkpoint = write_registry_with_a_breakable_lens(tmp_path)
    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(registry))
    generation = services.do_submit_generation(alice, "broken", {"text": "x"}, {})
    checkpoint.write_bytes(b"half a checkpoint")

    def get_lens(lens_id):
        return tiny_engine.load(tiny_engine.get_spec(lens_id))

    assert process_one_generation(live_worker, get_lens) is True
    generation.refresh_from_db()
    assert generation.status == "failed" and generation.error.startswith(
        f"cannot read checkpoint {checkpoint}: "
    )
    # the worker goes on serving: the next generation, on the tiny lens, is done
    services.do_submit_generation(alice, "tiny", {"text": "Hello"}, {"max_new_tokens": 2})
    assert process_one_generation(live_worker, get_lens) is True
    assert Generation.objects.order_by("-pk").first().status == "done"


def test_an_unexpected_error_fails_the_generation_and_is_logged(alice, live_worker, caplog):
    generation = services.do_submit_generation(alice, None, {"text": "x"}, {})
    assert process_one_generation(live_worker, lambda lens_id: object()) is True
    generation.refresh_from_db()
    assert generation.status == "failed" and generation.error.startswith("internal error (")
    assert f"generation {generation.pk} failed" in caplog.text


def test_cancel_while_running_keeps_what_was_generated(alice, live_worker, tiny_engine, tiny_lens_loader):
    generation = services.do_submit_generation(alice, "tiny", {"text": "Hello"}, {"max_new_tokens": 50})

    def get_lens(lens_id):  # the owner cancels while the worker loads the lens
        services.do_cancel_generation(Generation.objects.get(pk=generation.pk))
        return tiny_lens_loader(lens_id)

    assert process_one_generation(live_worker, get_lens) is True
    generation.refresh_from_db()
    assert generation.status == "cancelled" and generation.result["cancelled"] is True
    assert len(generation.result["samples"][0]["token_ids"]) < 50


def test_a_cancelled_queued_generation_is_never_claimed(alice, live_worker):
    generation = services.do_submit_generation(alice, None, {"text": "x"}, {})
    services.do_cancel_generation(generation)
    assert generation.status == "cancelled"
    assert process_one_generation(live_worker, lambda lens_id: None) is False


def test_claims_are_exclusive_and_fifo(alice, bob, live_worker):
    first = services.do_submit_generation(alice, None, {"text": "1"}, {})
    second = services.do_submit_generation(bob, None, {"text": "2"}, {})
    other = register_worker()
    assert services.claim_next_generation(live_worker).pk == first.pk
    assert services.claim_next_generation(other).pk == second.pk
    assert services.claim_next_generation(live_worker) is None
    assert Generation.objects.get(pk=first.pk).worker_id == live_worker.pk


def test_a_dead_workers_generation_is_requeued_then_failed(alice, live_worker, settings):
    generation = services.do_submit_generation(alice, None, {"text": "x"}, {})
    assert services.claim_next_generation(live_worker).pk == generation.pk
    long_ago = timezone.now() - timedelta(seconds=settings.LENSWEB_STALE_AFTER + 5)
    assert services.requeue_stale_generations() == []  # its worker is alive
    for attempt in range(1, settings.LENSWEB_MAX_ATTEMPTS + 1):
        WorkerRecord.objects.filter(pk=live_worker.pk).update(last_heartbeat=long_ago)
        assert services.requeue_stale_generations() == [generation.pk]
        generation.refresh_from_db()
        if attempt < settings.LENSWEB_MAX_ATTEMPTS:
            assert generation.status == "queued" and generation.worker is None
            WorkerRecord.objects.filter(pk=live_worker.pk).update(last_heartbeat=timezone.now())
            assert services.claim_next_generation(live_worker).pk == generation.pk
    assert generation.status == "failed" and "stopped 3 times" in generation.error


def test_a_finish_from_a_worker_that_lost_the_job_is_ignored(alice, live_worker):
    generation = services.do_submit_generation(alice, None, {"text": "x"}, {})
    services.claim_next_generation(live_worker)
    Generation.objects.filter(pk=generation.pk).update(status="queued", worker=None)
    assert not services.do_finish_generation(generation.pk, live_worker.pk, "done", result={"samples": []})
    assert Generation.objects.get(pk=generation.pk).status == "queued"
