"""A request identical to one queued or running waits for it: one computation, every owner served; if the
one it waits for is cancelled or fails, it computes itself. Only complete, done results are stored."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.template.loader import render_to_string

from lensweb.analyses import services
from lensweb.analyses.models import Analysis
from lensweb.analyses.notify import user_group
from lensweb.cache.models import CachedResult, CacheLink
from tests.conftest import scaled

from .conftest import TEXT, fresh, rows_of

pytestmark = [pytest.mark.django_db(transaction=True)]


def submit(user, text=TEXT):
    return services.do_submit(user, None, {"text": text}, {"seed": 3})


def test_a_duplicate_attaches_and_is_completed_with_the_leader(alice, bob, run_queue):
    leader = submit(alice)
    follower = submit(bob)
    assert follower.status == "queued" and follower.metadata == {"followed": True}
    assert services.fair_queue() == [("analysis", leader.pk)]  # workers never claim the follower
    assert services.queue_position(follower) is None
    card = render_to_string("analyses/partials/job-queue.html", {"job": follower, "position": None})
    assert "Waiting for an identical analysis already under way" in card

    assert run_queue() == [leader.pk]
    leader, follower = fresh(leader), fresh(follower)
    assert leader.status == follower.status == "done"
    assert rows_of(follower.pk) == rows_of(leader.pk) and len(rows_of(leader.pk)) == leader.progress_total
    assert follower.attempts == 0 and follower.worker is None
    assert follower.metadata["cached"] is True and follower.metadata["followed"] is True
    assert follower.metadata["summary"] == leader.metadata["summary"]
    assert CachedResult.objects.count() == 1


def test_the_follower_rows_reach_its_owner_socket(alice, bob, run_queue):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(user_group(bob.pk), channel)
    leader = submit(alice)
    follower = submit(bob)
    run_queue()

    async def collect():
        # One event loop for every receive: the Redis layer's receive buffer belongs to the loop it ran on.
        messages = []
        while True:
            message = await asyncio.wait_for(layer.receive(channel), timeout=scaled(20))
            messages.append(message)
            if message["type"] == "analysis.state" and message["job"] == follower.pk and message["final"]:
                return messages

    messages = async_to_sync(collect)()
    assert messages[0]["type"] == "analysis.created" and messages[0]["job"] == follower.pk
    rows = [m for m in messages if m["type"] == "analysis.rows" and m["job"] == follower.pk]
    assert [p for p, _ in rows[0]["rows"]] == [r["position"] for r in rows_of(leader.pk)]
    assert "cached" in messages[-1]["html"] and "badge-done" in messages[-1]["html"]


def test_a_queued_leader_cancelled_lets_its_followers_compute(alice, bob, carol, run_queue):
    leader = submit(alice)
    first, second = submit(bob), submit(carol)
    services.do_cancel(alice, leader.pk)
    # the first follower leads now; the second waits for it rather than computing a third time
    assert CacheLink.objects.get(pk=first.pk).leader is None
    assert CacheLink.objects.get(pk=second.pk).leader_id == first.pk
    assert fresh(first).metadata == {}
    assert run_queue() == [first.pk]
    first, second = fresh(first), fresh(second)
    assert first.status == second.status == "done" and "cached" not in first.metadata
    assert second.metadata["followed"] is True and rows_of(second.pk) == rows_of(first.pk)
    assert fresh(leader).status == "cancelled" and CachedResult.objects.count() == 1


def test_a_running_leader_cancelled_or_failed_lets_its_follower_compute(alice, bob, carol, run_queue):
    for outcome in ("cancelled", "failed"):
        Analysis.objects.all().delete()
        leader, follower = submit(alice, text=f"{TEXT} {outcome}"), submit(bob, text=f"{TEXT} {outcome}")
        worker = services.register_worker()
        assert services.claim_next_job(worker).pk == leader.pk
        if outcome == "cancelled":
            services.do_cancel(alice, leader.pk)
            services.do_finish_job(leader.pk, worker.pk, Analysis.Status.CANCELLED)
        else:
            services.do_fail_job(leader.pk, worker.pk, "out of memory")
        assert fresh(leader).status == outcome
        assert services.fair_queue() == [("analysis", follower.pk)]
        assert run_queue() == [follower.pk]
        assert fresh(follower).status == "done" and "cached" not in fresh(follower).metadata


def test_a_follower_cancelled_by_its_owner_stays_cancelled(alice, bob, run_queue):
    leader = submit(alice)
    follower = submit(bob)
    services.do_cancel(bob, follower.pk)
    run_queue()
    assert fresh(leader).status == "done" and fresh(follower).status == "cancelled"
    assert rows_of(follower.pk) == []


def test_a_new_request_follows_the_released_follower_that_now_leads(alice, bob, carol, run_queue):
    leader = submit(alice)
    first = submit(bob)
    services.do_cancel(alice, leader.pk)
    late = submit(carol)
    assert CacheLink.objects.get(pk=late.pk).leader_id == first.pk


def test_cancelled_stopped_and_incomplete_results_are_not_stored(alice, cache_on):
    from inference import ENGINE_VERSION

    worker = services.register_worker()
    cancelled, stopped, short = (
        submit(alice, "one two"),
        submit(alice, "three four"),
        submit(alice, "five six"),
    )
    for job in (cancelled, stopped, short):
        assert services.claim_next_job(worker).pk == job.pk
        identity = CacheLink.objects.get(pk=job.pk).lens_identity  # what the key names: storable but for this
        services.do_record_metadata(
            job.pk, worker.pk, {"identity": identity, "engine_version": ENGINE_VERSION}, total=3
        )
        services.do_record_batch(job.pk, worker.pk, [{"position": 0, "mse": 1.0}])
        if job is cancelled:
            services.do_finish_job(job.pk, worker.pk, Analysis.Status.CANCELLED)
        elif job is stopped:
            services.do_requeue_job(job.pk, worker.pk)
            Analysis.objects.filter(pk=job.pk).update(status=Analysis.Status.CANCELLED)
        else:  # "done" with a position missing
            services.do_finish_job(job.pk, worker.pk, Analysis.Status.DONE)
    assert fresh(short).status == "done"
    assert not CachedResult.objects.exists()


def test_a_leader_failed_by_the_stale_sweep_frees_its_follower(alice, bob, run_queue):
    """requeue_stale_jobs fails a job without the finish path: the queue itself stops holding the follower."""
    leader = submit(alice)
    follower = submit(bob)
    Analysis.objects.filter(pk=leader.pk).update(status=Analysis.Status.FAILED)
    assert services.fair_queue() == [("analysis", follower.pk)]
    assert run_queue() == [follower.pk] and fresh(follower).status == "done"
