"""The request log: what a submit leaves behind (sizes, outcome, timings), never a secret or the text."""

import json
import logging
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone

from lensweb.accounts.models import ApiKey
from lensweb.analyses import services as core
from lensweb.analyses import submit
from lensweb.analyses.models import Analysis
from lensweb.monitoring import requestlog
from lensweb.monitoring.models import RequestLogEntry

from .conftest import HTMX

pytestmark = pytest.mark.django_db

TEXT = "The capital of France is Paris"
FORM = {"text": TEXT, "input_format": "text", "best_of_k": 1, "temperature": 1.0, "seed": 42,
        "salience": "on", "lens": "tiny"}  # fmt: skip


@pytest.fixture
def live_worker(db):
    return core.register_worker(channel_name="", device="cpu")


def api_post(client, path, body, key=None, **extra):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post(path, json.dumps(body), content_type="application/json", headers=headers, **extra)


def raw_rows() -> list[str]:
    """Every column of every entry, as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {RequestLogEntry._meta.db_table}")
        return [repr(row) for row in cursor.fetchall()]


def test_an_api_submit_is_logged_without_the_key_or_the_text(client, alice, alice_key, live_worker, caplog):
    caplog.set_level(logging.DEBUG)
    response = api_post(client, "/api/v1/analyses", {"text": TEXT, "options": {"best_of_k": 2}}, alice_key)
    assert response.status_code == 202
    job = Analysis.objects.get()
    entry = RequestLogEntry.objects.get()
    assert (entry.client, entry.method, entry.endpoint, entry.kind) == (
        "api",
        "POST",
        "/api/v1/analyses",
        "analysis",
    )
    assert (entry.outcome, entry.status_code, entry.reason) == ("accepted", 202, "")
    assert (entry.user, entry.username, entry.api_key) == (alice, "alice", ApiKey.objects.get(user=alice))
    assert (entry.text_chars, entry.text_tokens) == (len(TEXT), job.progress_total)
    assert entry.job_id == job.pk and entry.lens_id == "tiny"
    assert entry.options["best_of_k"] == 2 and entry.duration_ms > 0

    secret = alice_key.split("_", 2)[2]
    rows = raw_rows()
    assert len(rows) == 1
    for needle in (alice_key, secret, TEXT, "Bearer"):
        assert needle not in rows[0], f"{needle!r} is in the request log row"
        assert needle not in caplog.text, f"{needle!r} is in the log output"
    assert '"outcome": "accepted"' in caplog.text  # the structured line is there, with the same fields


def test_a_refused_api_call_keeps_its_reason_code(client, alice, alice_key, live_worker):
    response = api_post(client, "/api/v1/analyses", {"text": TEXT, "options": {"best_of_k": 0}}, alice_key)
    assert response.status_code == 400
    entry = RequestLogEntry.objects.get()
    assert (entry.outcome, entry.status_code, entry.reason) == ("refused", 400, "invalid_option")
    assert entry.text_chars == len(TEXT) and entry.text_tokens is None and entry.job_id is None


def test_a_bad_key_is_counted_not_logged_and_never_stored(client, alice, caplog):
    """Who sends bad keys cannot grow the table: the refusal is counted for /metrics (test_unauthenticated)."""
    caplog.set_level(logging.DEBUG)
    bad = "lw_abcdefgh_" + "x" * 40
    response = api_post(client, "/api/v1/analyses", {"text": TEXT}, bad)
    assert response.status_code == 401
    assert not RequestLogEntry.objects.exists()
    assert bad not in caplog.text


def test_api_reads_and_the_openapi_document_are_not_logged(client, alice, alice_key):
    client.get("/api/v1/lenses", headers={"Authorization": f"Bearer {alice_key}"})
    client.get("/api/v1/openapi.json")
    assert not RequestLogEntry.objects.exists()


def test_an_api_cancel_names_the_job(client, alice, alice_key):
    job = core.do_submit(alice, None, {"text": TEXT}, {})
    response = client.delete(f"/api/v1/analyses/{job.pk}", headers={"Authorization": f"Bearer {alice_key}"})
    assert response.status_code == 200
    entry = RequestLogEntry.objects.get()
    assert (entry.kind, entry.job_id, entry.outcome, entry.method) == ("cancel", job.pk, "accepted", "DELETE")


def test_a_browser_submit_is_logged_with_its_size_and_options(client, alice):
    client.force_login(alice)
    response = client.post(reverse("analyses:submit"), FORM, **HTMX)
    assert response.status_code == 200
    job = Analysis.objects.get()
    entry = RequestLogEntry.objects.get()
    assert (entry.client, entry.kind, entry.outcome, entry.user) == ("browser", "analysis", "accepted", alice)
    assert (entry.text_chars, entry.text_tokens, entry.job_id) == (len(TEXT), job.progress_total, job.pk)
    assert entry.options == job.options  # the validated options of the job it made
    assert TEXT not in raw_rows()[0]
    session = client.cookies["sessionid"].value
    assert session not in raw_rows()[0]


def test_a_refused_browser_submit_says_so(client, alice):
    client.force_login(alice)
    client.post(reverse("analyses:submit"), {**FORM, "best_of_k": 0}, **HTMX)
    entry = RequestLogEntry.objects.get()
    assert (entry.outcome, entry.reason, entry.status_code) == ("refused", "form_error", 200)
    assert entry.options["best_of_k"] == "0" and "csrfmiddlewaretoken" not in entry.options


def test_an_anonymous_post_is_sent_to_log_in_and_not_logged(client):
    response = client.post(reverse("analyses:submit"), FORM)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert not RequestLogEntry.objects.exists()


def test_note_overrides_what_the_middleware_guessed(client, alice, monkeypatch):
    original = submit.check_capacity

    def noting(user):
        requestlog.note(reason="queue_full", outcome="refused")
        return original(user)

    monkeypatch.setattr(submit, "check_capacity", noting)  # where do_submit calls it
    client.force_login(alice)
    client.post(reverse("analyses:submit"), FORM, **HTMX)
    entry = RequestLogEntry.objects.get()
    assert (entry.outcome, entry.reason) == ("refused", "queue_full")
    with pytest.raises(TypeError):
        requestlog.note(text="the text itself")  # not a field: the log holds no text
    requestlog.note(reason="outside any request")  # a no-op


def test_record_for_socket_actions_and_option_whitelisting(alice):
    entry = requestlog.record(
        client="socket", method="WS", endpoint="/ws/analyses/", kind="cancel", outcome="accepted",
        user=alice, job_id=7, options={"best_of_k": 3, "password": "hunter2", "seed": {"nested": 1},
                                       "temperature": "x" * 500},
    )  # fmt: skip
    assert entry.options == {"best_of_k": 3, "temperature": "x" * 100}
    assert "hunter2" not in raw_rows()[0]


def test_retention_purge_command_and_opportunistic_purge(settings, alice, monkeypatch):
    settings.LENSWEB_REQUEST_LOG_RETENTION_DAYS = 7
    old = requestlog.record(client="api", method="POST", endpoint="/api/v1/analyses", kind="analysis",
                            outcome="accepted", user=alice)  # fmt: skip
    RequestLogEntry.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=8))
    kept = requestlog.record(client="api", method="POST", endpoint="/api/v1/analyses", kind="analysis",
                             outcome="accepted", user=alice)  # fmt: skip
    RequestLogEntry.objects.filter(pk=kept.pk).update(created_at=timezone.now() - timedelta(days=6))
    call_command("purge_request_log")
    assert list(RequestLogEntry.objects.values_list("pk", flat=True)) == [kept.pk]

    # record() purges by itself, at most once an hour per process.
    RequestLogEntry.objects.filter(pk=kept.pk).update(created_at=timezone.now() - timedelta(days=9))
    monkeypatch.setattr(requestlog, "_last_purge", None)
    fresh = requestlog.record(client="api", method="POST", endpoint="/x", kind="analysis", outcome="accepted")
    assert list(RequestLogEntry.objects.values_list("pk", flat=True)) == [fresh.pk]

    settings.LENSWEB_REQUEST_LOG_RETENTION_DAYS = 0  # keep forever
    RequestLogEntry.objects.update(created_at=timezone.now() - timedelta(days=900))
    call_command("purge_request_log")
    assert RequestLogEntry.objects.count() == 1


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_the_async_middleware_path_records_too(async_client, alice, alice_key, live_worker):
    from asgiref.sync import sync_to_async

    response = await async_client.post(
        "/api/v1/analyses",
        json.dumps({"text": TEXT}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {alice_key}"},
    )
    assert response.status_code == 202
    entry = await sync_to_async(RequestLogEntry.objects.select_related("user").get)()
    job = await sync_to_async(Analysis.objects.get)()
    assert (entry.outcome, entry.user.username, entry.job_id, entry.text_chars) == (
        "accepted", "alice", job.pk, len(TEXT),
    )  # fmt: skip
    assert entry.text_tokens == job.progress_total
    await sync_to_async(connections.close_all)()  # the request thread's connection (PostgreSQL teardown)


def test_a_browser_generation_is_logged_with_its_size_and_options(client, alice):
    """The generation form's fields carry the "gen-" prefix; a chat's size is the sum of its turns."""
    from lensweb.analyses.models import Generation

    client.force_login(alice)
    turns = ["You answer briefly.", "Where is Paris?"]
    form = {
        "action": "generate",
        "gen-lens": "tiny",
        "gen-mode": "chat",
        "gen-prompt": "",
        "gen-n": 1,
        "gen-max_new_tokens": 8,
        "gen-temperature": 0.8,
        "gen-top_p": 0.9,
        "gen-seed": 7,
        "gen-role": ["system", "user"],
        "gen-content": turns,
        "lens": "some-other-lens",  # the analysis form's, in the same request: not this submission's
        "best_of_k": "3",
    }
    response = client.post(reverse("analyses:generate"), form, **HTMX)
    assert response.status_code == 200
    generation = Generation.objects.get()
    entry = RequestLogEntry.objects.get()
    assert (entry.client, entry.kind, entry.outcome, entry.job_id) == (
        "browser",
        "generation",
        "accepted",
        generation.pk,
    )
    assert entry.text_chars == sum(len(t) for t in turns) and entry.lens_id == "tiny"
    assert "best_of_k" not in entry.options
