"""By default a user's cache is their own: a hit never tells one user what another analysed, nor how long it
took them; what an operator warmed answers everyone; LENSWEB_RESULT_CACHE_SHARED makes one trusted group."""

from __future__ import annotations

import pytest

from lensweb.analyses import services
from lensweb.cache.models import CachedResult

from .conftest import TEXT, fresh, rows_of
from .test_warm_cache import warm

pytestmark = [pytest.mark.django_db(transaction=True)]

OPTIONS = {"best_of_k": 2, "seed": 7}


@pytest.fixture
def private(run_queue, settings):
    settings.LENSWEB_RESULT_CACHE_SHARED = False  # the default
    return run_queue


def submit(user, text=TEXT):
    return services.do_submit(user, None, {"text": text}, dict(OPTIONS))


def test_another_users_identical_text_is_computed_not_answered_from_the_first(alice, bob, private):
    first = submit(alice)
    private()
    again = submit(alice)
    assert again.status == "done" and again.metadata["cached"] is True  # her own result: a hit
    other = submit(bob)
    assert other.status == "queued" and "cached" not in other.metadata and "followed" not in other.metadata
    assert private() == [other.pk]
    other = fresh(other)
    assert other.status == "done" and "cached" not in other.metadata
    assert rows_of(other.pk) == rows_of(first.pk)  # the same computation, done again for him
    assert CachedResult.objects.count() == 2  # one entry each


def test_another_users_running_identical_job_is_not_followed(alice, bob, private):
    first = submit(alice)
    second = submit(bob)  # alice's is still queued: bob's does not wait for it, nor learn of it
    assert "followed" not in fresh(second).metadata
    assert sorted(private()) == sorted([first.pk, second.pk])


def test_what_an_operator_warmed_answers_everyone(alice, bob, private, tmp_path):
    path = tmp_path / "inputs.jsonl"
    path.write_text(f'{{"text": "{TEXT}", "options": {{"best_of_k": 2, "seed": 7}}}}\n')
    out, _, failure = warm(path, "--local")
    assert failure is None and "1 computed" in out, out
    for user in (alice, bob):
        job = submit(user)
        assert job.status == "done" and job.metadata["cached"] is True, user
    assert private() == []


def test_one_trusted_group_shares_results(alice, bob, run_queue, settings):
    settings.LENSWEB_RESULT_CACHE_SHARED = True
    submit(alice)
    run_queue()
    assert submit(bob).metadata["cached"] is True
