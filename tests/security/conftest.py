"""The access-matrix world: an owner with a finished analysis (real rows from the tiny test lens), a queued
job, a share link, a generation, a probe and API keys; another user; a staff member; a live worker record."""

from __future__ import annotations

import pytest

from tests.accounts.conftest import clear_ratelimits  # noqa: F401  (autouse fixture)
from tests.results.conftest import create_analysis, run_tiny
from tests.web.conftest import _fresh_channel_layer, tiny_engine, tiny_registry  # noqa: F401  (fixtures)

from .access import World


@pytest.fixture(scope="session")
def matrix_result():
    """Best of 2 with candidates kept: the candidates routes need a row that has some."""
    return run_tiny(best_of_k=2, keep_candidates=True)


@pytest.fixture
def world(django_user_model, matrix_result, tiny_engine) -> World:  # noqa: F811
    from lensweb.accounts import keys
    from lensweb.analyses.models import Analysis, Generation, Probe, WorkerRecord
    from lensweb.results.models import ShareLink

    owner = django_user_model.objects.create_user("owner", password="pw-owner-Long-1")
    other = django_user_model.objects.create_user("other", password="pw-other-Long-1")
    staff = django_user_model.objects.create_user("staff", password="pw-staff-Long-1", is_staff=True)
    analysis = create_analysis(owner, matrix_result)
    position = next(r.position for r in analysis.rows.all() if r.data.get("candidates"))
    queued = Analysis.objects.create(owner=owner, lens_id="tiny", input={"text": "queued"}, options={})
    link = ShareLink.objects.create(analysis=analysis, created_by=owner)
    api_key, owner_raw = keys.create_key(owner, "matrix")
    revoked, revoked_raw = keys.create_key(owner, "old")
    keys.revoke_key(revoked)
    generation = Generation.objects.create(owner=owner, lens_id="tiny", input={"text": "hi"}, options={})
    probe = Probe.objects.create(
        owner=owner,
        analysis=analysis,
        lens_id="tiny",
        input={"text": "hi"},
        options={},
        what="activations",
        request={"positions": [0]},
    )
    WorkerRecord.objects.create(name="matrix-worker", host="test", pid=1, state=WorkerRecord.State.IDLE)
    return World(
        owner=owner,
        other=other,
        staff=staff,
        analysis=analysis,
        queued=queued,
        position=position,
        share_token=link.token,
        api_key=api_key,
        keys={
            "no_key": None,
            "revoked_key": revoked_raw,
            "owner_key": owner_raw,
            "other_key": keys.create_key(other, "matrix")[1],
            "staff_key": keys.create_key(staff, "matrix")[1],
        },
        generation=generation,
        probe=probe,
    )
