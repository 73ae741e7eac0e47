"""History lists a user's generations among their analyses, newest first: with their link, prompt, options,
status and first completion, filtered by the same search, lens and status, paged with them, and deletable."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from lensweb.analyses.models import Analysis, Generation, WorkerRecord

from .conftest import create_analysis

pytestmark = pytest.mark.django_db
HISTORY_ROW = re.compile(r'<tr id="history-(?:(generation)-)?(\d+)"')


@pytest.fixture
def owner_client(client, alice):
    client.force_login(alice)
    return client


def generation(owner, prompt="Once upon a time", *, status="done", completion=" there was a lens.", **fields):
    options = {"n": 2, "max_new_tokens": 24, "temperature": 0.7, "top_p": 1.0, "seed": 7, "chat_reply": False}
    options.update(fields.pop("options", {}))
    data = fields.pop("input", None) or {"text": prompt}
    return Generation.objects.create(
        owner=owner,
        lens_id=fields.pop("lens_id", "tiny"),
        input=data,
        options=options,
        status=status,
        result={"samples": [{"index": 0, "text": completion}, {"index": 1, "text": " second sample"}]},
        **fields,
    )


def listed(html: str) -> list[tuple[str, int]]:
    """The history rows in page order, as ("generation" or "analysis", id)."""
    return [(kind or "analysis", int(pk)) for kind, pk in HISTORY_ROW.findall(html)]


def history(client, query: str = "", **headers) -> str:
    response = client.get(reverse("results:history") + query, **headers)
    assert response.status_code == 200
    return response.content.decode()


def test_history_lists_your_generation_with_its_link_options_and_first_completion(owner_client, alice, bob):
    own = generation(alice, "Once upon a time", completion=" a lens read a model's mind")
    theirs = generation(bob, "Bob's secret prompt", completion=" bob's secret completion")
    html = history(owner_client)
    assert listed(html) == [("generation", own.pk)]
    row = re.search(rf'<tr id="history-generation-{own.pk}".*?</tr>', html, re.S).group(0)
    assert f'href="{reverse("analyses:generation", args=[own.pk])}"' in row
    assert "Once upon a time" in row and "a lens read a model&#x27;s mind" in row
    assert "second sample" not in row  # the first completion only
    assert "n 2 · new tokens 24 · t 0.7 · seed 7" in row and "chat reply" not in row
    assert 'class="badge badge-done"' in row
    assert 'type="radio"' not in row  # a generation is not compared with A / B
    assert f'action="{reverse("results:delete_generation", args=[own.pk])}"' in row
    assert "Bob" not in html and f"history-generation-{theirs.pk}" not in html
    assert "(0 analyses and 1 generation)" in html


def test_a_chat_generation_is_tagged_and_an_unfinished_one_shows_no_completion(owner_client, alice):
    chat = generation(
        alice,
        input={"messages": [{"role": "user", "content": "What is a lens?"}]},
        options={"chat_reply": True},
        completion=" A reply.",
    )
    running = generation(alice, "Still going", status="running", completion=" half a sente")
    html = history(owner_client)
    chat_row = re.search(rf'<tr id="history-generation-{chat.pk}".*?</tr>', html, re.S).group(0)
    assert '<span class="tag">chat</span>' in chat_row and "user: What is a lens?" in chat_row
    assert "· chat reply" in chat_row and "A reply." in chat_row
    running_row = re.search(rf'<tr id="history-generation-{running.pk}".*?</tr>', html, re.S).group(0)
    assert "half a sente" not in running_row and "badge-running" in running_row


def test_generations_and_analyses_interleave_newest_first(owner_client, alice, tiny_result):
    now = timezone.now()
    oldest = create_analysis(alice, tiny_result)
    middle = generation(alice)
    newest = create_analysis(alice, tiny_result)
    for job, minutes in ((oldest, 30), (middle, 20), (newest, 10)):
        type(job).objects.filter(pk=job.pk).update(created_at=now - timedelta(minutes=minutes))
    assert listed(history(owner_client)) == [
        ("analysis", newest.pk),
        ("generation", middle.pk),
        ("analysis", oldest.pk),
    ]


def test_search_lens_and_status_filters_apply_to_generations(owner_client, alice, tiny_result):
    create_analysis(alice, tiny_result, text="an analysed sentence about cats")
    cats = generation(alice, "A poem about cats")
    dogs = generation(alice, "A poem about dogs", status="failed", lens_id="other")
    chat = generation(alice, input={"messages": [{"role": "user", "content": "tell me of cats"}]})
    assert {pk for kind, pk in listed(history(owner_client, "?q=poem")) if kind == "generation"} == {
        cats.pk,
        dogs.pk,
    }
    assert [k for k, _ in listed(history(owner_client, "?q=poem"))] == ["generation", "generation"]
    found = listed(history(owner_client, "?q=cats"))
    assert {pk for kind, pk in found if kind == "generation"} == {cats.pk, chat.pk} and len(found) == 3
    assert listed(history(owner_client, "?status=failed")) == [("generation", dogs.pk)]
    assert listed(history(owner_client, "?lens=other")) == [("generation", dogs.pk)]
    assert '<option value="other">other</option>' in history(owner_client)  # a generation's lens to pick
    assert listed(history(owner_client, "?q=dogs&status=done")) == []


def test_pagination_counts_generations_with_analyses(owner_client, alice, bob, tiny_result):
    now = timezone.now()
    for i in range(20):
        analysis = create_analysis(alice, tiny_result, text=f"text number {i}")
        Analysis.objects.filter(pk=analysis.pk).update(created_at=now - timedelta(minutes=2 * i))
    for i in range(10):
        made = generation(alice, f"prompt number {i}")
        Generation.objects.filter(pk=made.pk).update(created_at=now - timedelta(minutes=2 * i + 1))
    generation(bob, "bob's")  # never counted on alice's pages
    first, second = history(owner_client), history(owner_client, "?page=2")
    assert "page 1 of 2 (20 analyses and 10 generations)" in first
    assert len(listed(first)) == 25 and len(listed(second)) == 5
    assert not set(listed(first)) & set(listed(second))
    assert sum(kind == "generation" for kind, _ in listed(first + second)) == 10
    fragment = history(
        owner_client, "?q=prompt&page=1", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="history-list"
    )
    assert "<html" not in fragment and len(listed(fragment)) == 10
    assert "page 1 of 1 (0 analyses and 10 generations)" in fragment


def test_deleting_a_generation_from_history(owner_client, client, alice, bob):
    own = generation(alice)
    url = reverse("results:delete_generation", args=[own.pk])
    response = owner_client.post(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response.content == b""
    assert not Generation.objects.filter(pk=own.pk).exists()
    theirs = generation(bob)
    response = owner_client.post(reverse("results:delete_generation", args=[theirs.pk]))
    assert response.status_code == 404 and Generation.objects.filter(pk=theirs.pk).exists()
    client.logout()
    response = client.post(reverse("results:delete_generation", args=[theirs.pk]))
    assert response.status_code == 302 and reverse("login") in response.url
    assert Generation.objects.filter(pk=theirs.pk).exists()


def test_deleting_a_running_generation_cancels_it_first(owner_client, alice, monkeypatch):
    from lensweb.analyses import services as analyses_services

    worker = WorkerRecord.objects.create(name="w", host="h", pid=1, channel_name="chan")
    running = generation(alice, status="running", worker=worker)
    cancelled = []
    real = analyses_services.do_cancel_generation

    def spy(user, generation_id):
        job = real(user, generation_id)
        cancelled.append((job.pk, job.cancel_requested))
        return job

    monkeypatch.setattr(analyses_services, "do_cancel_generation", spy)
    response = owner_client.post(reverse("results:delete_generation", args=[running.pk]))
    assert response.status_code == 302 and response.url == reverse("results:history")
    assert cancelled == [(running.pk, True)]
    assert not Generation.objects.filter(pk=running.pk).exists()
