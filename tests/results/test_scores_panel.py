"""The owner's "edit" panel under a row (results:scores): their explanation scored through the queue, the
panel polling until the worker answers, refusals shown in it, and nobody else's to open."""

from __future__ import annotations

import pytest
from django.urls import reverse

from lensweb.analyses import services
from tests.web.conftest import run_jobs, tiny_engine, tiny_registry  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)
TEXT = "The capital of France is Paris"


@pytest.fixture
def analysed(alice, run_jobs):  # noqa: F811
    job = services.do_submit(alice, None, {"text": TEXT}, {"seed": 2})
    run_jobs()
    return job


def test_score_in_the_panel_then_it_polls_until_answered(client, alice, bob, analysed, run_jobs):  # noqa: F811
    url = reverse("results:scores", args=[analysed.pk, 2])
    client.force_login(alice)
    opened = client.get(url).content.decode()
    assert 'name="explanation"' in opened and "hx-trigger" not in opened  # nothing pending: no polling
    pending = client.post(url, {"explanation": "a country"}).content.decode()
    assert "scoring…" in pending and 'hx-trigger="load delay:1s"' in pending
    run_jobs()
    answered = client.get(url).content.decode()
    assert 'class="score done"' in answered and "Δ mse" in answered and "hx-trigger" not in answered
    refused = client.post(url, {"explanation": "   "}).content.decode()
    assert 'class="flash error"' in refused and "explanation" in refused
    client.force_login(bob)
    assert client.get(url).status_code == 404 and client.post(url, {"explanation": "x"}).status_code == 404
