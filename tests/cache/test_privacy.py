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


def test_a_text_shared_by_link_answers_everyone_until_the_link_is_taken_back(alice, bob, carol, private):
    from lensweb.results import services as results

    first = submit(alice)
    private()
    assert submit(bob).status == "queued"  # private: bob computes his own
    private()
    results.do_share(alice, first.pk)
    shared = CachedResult.objects.get(shared_from=first)
    assert shared.rows == rows_of(first.pk)
    hit = submit(carol)
    assert hit.status == "done" and hit.metadata["cached"] is True
    assert rows_of(hit.pk) == rows_of(first.pk)
    results.do_unshare(alice, first.pk)
    assert not CachedResult.objects.filter(pk=shared.pk).exists()
    from django.contrib.auth import get_user_model

    dave = get_user_model().objects.create_user("dave", password="pw-dave-Long-1")
    assert submit(dave).status == "queued"  # private again: a new user computes his own


def test_a_copy_from_the_cache_shared_by_link_joins_the_shared_scope(alice, bob, private):
    from lensweb.results import services as results

    submit(alice)
    private()
    copy = submit(alice)  # answered from her own scope
    assert copy.metadata["cached"] is True
    results.do_share(alice, copy.pk)
    entry = CachedResult.objects.get(shared_from=copy)
    assert entry.computed_seconds > 0  # the time of the computation it copies
    assert submit(bob).metadata["cached"] is True


def test_sharing_an_unfinished_analysis_shares_nothing_in_the_cache(alice, private):
    from lensweb.results import services as results

    job = submit(alice)
    results.do_share(alice, job.pk)
    assert not CachedResult.objects.filter(shared_from=job).exists()


def test_deleting_a_shared_analysis_takes_its_shared_entry_with_it(alice, bob, private):
    from lensweb.results import services as results

    first = submit(alice)
    private()
    results.do_share(alice, first.pk)
    assert CachedResult.objects.filter(shared_from=first).exists()
    results.do_delete(alice, first.pk)
    assert not CachedResult.objects.filter(shared_from=first.pk).exists()
    assert submit(bob).status == "queued"
