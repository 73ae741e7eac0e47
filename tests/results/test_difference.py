"""The compare page's "explain the difference": A's activation at one position minus B's at another, queued
as a probe and explained when the worker answers; only analyses of one's own, and one lens."""

from __future__ import annotations

import pytest
from django.urls import reverse

from lensweb.analyses import services
from tests.web.conftest import run_jobs, tiny_engine, tiny_registry  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


def test_explain_the_difference_of_two_positions_on_the_compare_page(client, alice, bob, run_jobs):  # noqa: F811
    a = services.do_submit(alice, None, {"text": "The capital of France is Paris"}, {"seed": 1})
    b = services.do_submit(alice, None, {"text": "The capital of France is Paris"}, {"seed": 2})
    theirs = services.do_submit(bob, None, {"text": "The capital of France is Paris"}, {"seed": 3})
    run_jobs()
    client.force_login(alice)
    page = client.get(reverse("results:compare"), {"a": a.pk, "b": b.pk}).content.decode()
    assert 'id="difference-form"' in page
    url = reverse("results:explain_difference")
    pending = client.post(url, {"a": a.pk, "b": b.pk, "pa": 5, "pb": 2}).content.decode()
    assert "explaining…" in pending and 'hx-trigger="load delay:1s"' in pending
    probe_id = int(pending.split("/analyses/differences/")[1].split("/")[0])
    run_jobs()
    done = client.get(reverse("results:difference", args=[probe_id])).content.decode()
    assert (
        f"#{a.pk} position 5 − #{b.pk} position 2" in done and "‖a − b‖" in done and "hx-trigger" not in done
    )
    refused = client.post(url, {"a": a.pk, "b": theirs.pk, "pa": 1, "pb": 1}).content.decode()
    assert 'class="flash error"' in refused and f"no analysis {theirs.pk} of yours" in refused
    assert "choose a position" in client.post(url, {"a": a.pk, "b": b.pk}).content.decode()
    client.force_login(bob)
    assert client.get(reverse("results:difference", args=[probe_id])).status_code == 404
