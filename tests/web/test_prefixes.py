"""Prefix reuse (analyses.prefixes): a text that begins like one of the owner's earlier analyses (same lens,
same options) takes that analysis' rows for the shared prefix and computes only the rest; the result equals
a computation from scratch, and metadata.reused_positions says how many were taken."""

from __future__ import annotations

import pytest

from lensweb.analyses import services
from lensweb.analyses.models import Analysis, AnalysisRow

from .conftest import token_ids

pytestmark = [pytest.mark.django_db(transaction=True)]

OPTIONS = {"seed": 11, "best_of_k": 2, "kl": True}
SHORT = "The capital of France is Paris."
LONG = SHORT + " The capital of Italy is Rome."


def rows(job_id: int) -> dict[int, dict]:
    return dict(AnalysisRow.objects.filter(analysis_id=job_id).values_list("position", "data"))


def done(job) -> Analysis:
    job = Analysis.objects.get(pk=job.pk)
    assert job.status == "done", job.error
    return job


def same(a: dict[int, dict], b: dict[int, dict]) -> None:
    assert sorted(a) == sorted(b)
    for p in a:
        assert a[p]["explanation_token_ids"] == b[p]["explanation_token_ids"], p
        assert a[p]["mse"] == pytest.approx(b[p]["mse"], rel=1e-4), p
        assert a[p]["kl"] == pytest.approx(b[p]["kl"], rel=1e-4, abs=1e-6), p


def test_a_longer_text_reuses_the_prefix_and_equals_a_fresh_computation(alice, bob, run_jobs):
    short = services.do_submit(alice, None, {"text": SHORT}, dict(OPTIONS))
    run_jobs()
    longer = services.do_submit(alice, None, {"text": LONG}, dict(OPTIONS))
    fresh = services.do_submit(bob, None, {"text": LONG}, dict(OPTIONS))  # another owner: from scratch
    run_jobs()
    longer, fresh = done(longer), done(fresh)
    shared = sum(1 for a, b in zip(token_ids(SHORT), token_ids(LONG), strict=False) if a == b)
    assert longer.metadata["reused_positions"] == shared > 3
    assert longer.metadata["reused_from"] == short.pk
    assert "reused_positions" not in fresh.metadata
    same(rows(longer.pk), rows(fresh.pk))
    assert longer.attempt_base == shared  # its speed is measured over the rows it computed


def test_a_chat_extended_by_a_turn_reuses_its_earlier_turns(alice, bob, run_jobs):
    turns = [{"role": "user", "content": "Where is Paris?"}, {"role": "assistant", "content": "In France."}]
    first = services.do_submit(alice, None, {"messages": turns}, dict(OPTIONS))
    run_jobs()
    extended = [*turns, {"role": "user", "content": "And Rome?"}]
    again = services.do_submit(alice, None, {"messages": extended}, dict(OPTIONS))
    fresh = services.do_submit(bob, None, {"messages": extended}, dict(OPTIONS))
    run_jobs()
    again, fresh = done(again), done(fresh)
    assert again.metadata["reused_positions"] >= 10 and again.metadata["reused_from"] == first.pk
    assert again.metadata["reused_positions"] < again.progress_total
    same(rows(again.pk), rows(fresh.pk))


@pytest.mark.parametrize("changed", [{"seed": 12}, {"kl": False}, {"best_of_k": 1}])
def test_other_options_reuse_nothing(alice, run_jobs, changed):
    services.do_submit(alice, None, {"text": SHORT}, dict(OPTIONS))
    run_jobs()
    other = services.do_submit(alice, None, {"text": LONG}, {**OPTIONS, **changed})
    run_jobs()
    assert "reused_positions" not in done(other).metadata


def test_another_owners_analysis_is_never_reused(alice, bob, run_jobs):
    services.do_submit(alice, None, {"text": SHORT}, dict(OPTIONS))
    run_jobs()
    his = services.do_submit(bob, None, {"text": LONG}, dict(OPTIONS))
    run_jobs()
    assert "reused_positions" not in done(his).metadata


def test_chosen_positions_take_only_what_they_ask_for(alice, run_jobs):
    services.do_submit(alice, None, {"text": SHORT}, dict(OPTIONS))
    run_jobs()
    n = len(token_ids(LONG))
    chosen = services.do_submit(alice, None, {"text": LONG}, {**OPTIONS, "positions": [1, 2, n - 1]})
    run_jobs()
    chosen = done(chosen)
    assert chosen.metadata["reused_positions"] == 2 and sorted(rows(chosen.pk)) == [1, 2, n - 1]


def test_the_api_and_the_card_say_how_many_were_reused(alice, client, run_jobs):
    from django.template.loader import render_to_string

    from lensweb.accounts.keys import create_key

    _, alice_key = create_key(alice, "prefix test")
    services.do_submit(alice, None, {"text": SHORT}, dict(OPTIONS))
    run_jobs()
    longer = services.do_submit(alice, None, {"text": LONG}, dict(OPTIONS))
    run_jobs()
    body = client.get(f"/api/v1/analyses/{longer.pk}", HTTP_AUTHORIZATION=f"Bearer {alice_key}").json()
    reused = body["metadata"]["reused_positions"]
    assert reused > 3
    card = render_to_string("analyses/partials/job-summary.html", {"job": done(longer)})
    assert f"{reused} positions reused" in card
    exported = client.get(f"/analyses/{longer.pk}/export.json")
    assert exported.status_code == 302  # not signed in: the browser's export needs a session
    client.force_login(alice)
    assert client.get(f"/analyses/{longer.pk}/export.json").json()["metadata"]["reused_positions"] == reused
