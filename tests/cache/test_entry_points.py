"""A hit through the JSON API (200, "cached": true, any user, no worker needed) and through the browser
(a finished card with a cached mark and the original computation time, and the results page)."""

from __future__ import annotations

import pytest
from django.template.defaultfilters import floatformat
from django.urls import reverse

from lensweb.analyses.models import Analysis, WorkerRecord
from tests.accounts.conftest import alice_key, bob_key, clear_ratelimits  # noqa: F401  (fixtures)
from tests.api.conftest import api, live_worker  # noqa: F401  (fixtures)

from .conftest import TEXT, rows_of

pytestmark = [pytest.mark.django_db(transaction=True)]

URL = "/api/v1/analyses"
BODY = {"text": TEXT, "options": {"seed": 11, "best_of_k": 2}}


def test_the_api_answers_a_hit_with_200_and_cached_true(api, alice_key, bob_key, live_worker, run_queue):  # noqa: F811
    first = api.post(URL, BODY, key=alice_key)
    assert first.status_code == 202 and first.json_body["cached"] is False
    duplicate = api.post(URL, BODY, key=bob_key)  # while the first is queued: it waits for it
    assert duplicate.status_code == 202 and duplicate.json_body["cached"] is False
    run_queue()
    for key in (alice_key, bob_key):
        response = api.post(URL, BODY, key=key)
        body = response.json_body
        assert response.status_code == 200 and body["cached"] is True and body["status"] == "done"
        assert body["queue_position"] is None and response["Location"] == body["url"]
        detail = api.get(body["url"].replace("http://testserver", ""), key=key).json_body
        assert detail["rows"] == rows_of(first.json_body["id"])
        assert detail["metadata"]["cached"] is True and detail["metadata"]["computed_seconds"] > 0
    followed = api.get(f"{URL}/{duplicate.json_body['id']}", key=bob_key).json_body
    assert followed["status"] == "done" and followed["rows"] == rows_of(first.json_body["id"])


def test_a_hit_needs_no_worker_but_a_miss_does(api, alice_key, live_worker, run_queue):  # noqa: F811
    api.post(URL, BODY, key=alice_key)
    run_queue()
    WorkerRecord.objects.all().delete()  # no worker at all now
    assert api.post(URL, BODY, key=alice_key).status_code == 200
    miss = api.post(URL, {**BODY, "options": {"seed": 12}}, key=alice_key)
    assert miss.status_code == 503 and miss.json_body["error"]["code"] == "no_worker"


def test_a_hit_takes_no_queue_place(api, alice_key, live_worker, run_queue, settings):  # noqa: F811
    api.post(URL, BODY, key=alice_key)
    run_queue()
    settings.LENSWEB_MAX_QUEUED_PER_USER = 1
    api.post(URL, {**BODY, "options": {"seed": 13}}, key=alice_key)  # fills alice's one place
    assert api.post(URL, BODY, key=alice_key).status_code == 200
    assert api.post(URL, {**BODY, "options": {"seed": 14}}, key=alice_key).status_code == 429


def test_the_browser_shows_a_hit_finished_with_a_cached_mark(client, alice, bob, run_queue):
    form = {"text": TEXT, "input_format": "text", "best_of_k": 2, "temperature": 1.0, "seed": 11}
    form.update(salience="on", lens="tiny")
    client.force_login(alice)
    assert client.post(reverse("analyses:submit"), form, HTTP_HX_REQUEST="true").status_code == 200
    run_queue()
    client.force_login(bob)
    client.post(reverse("analyses:submit"), form, HTTP_HX_REQUEST="true")
    job = Analysis.objects.filter(owner=bob).get()
    assert job.status == "done" and job.metadata["cached"] is True
    card = client.get(reverse("analyses:card", args=[job.pk])).content.decode()
    assert "badge-done" in card and ">cached</span>" in card
    # the template's own rounding (floatformat rounds half up; Python's :.1f rounds the binary value)
    assert f"computed in {floatformat(job.metadata['computed_seconds'], 1)} s" in card
    assert all(f'id="row-{job.pk}-{row["position"]}"' in card for row in rows_of(job.pk))
    page = client.get(reverse("results:detail", args=[job.pk])).content.decode()
    assert "yes (served from the result cache)" in page
    assert page.count("<tr") > job.progress_total  # the rows table, one row per position
