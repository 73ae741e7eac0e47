"""Prefix reuse from the result cache (analyses.prefixes with cache.services.prefix_sources): a shared entry
(what an operator warmed) lends its prefix to anyone; a user's own entry to that user only."""

from __future__ import annotations

import pytest

from lensweb.analyses import services
from lensweb.analyses.models import Analysis, AnalysisRow
from lensweb.cache.models import CachedResult

from .conftest import fresh
from .test_warm_cache import warm

pytestmark = [pytest.mark.django_db(transaction=True)]

SHORT = "The capital of France is Paris."
LONG = SHORT + " The capital of Italy is Rome."
OPTIONS = {"seed": 3, "best_of_k": 2}


@pytest.fixture
def private(run_queue, settings):
    settings.LENSWEB_RESULT_CACHE_SHARED = False
    return run_queue


def rows(job_id: int) -> dict[int, dict]:
    return dict(AnalysisRow.objects.filter(analysis_id=job_id).values_list("position", "data"))


def test_a_warmed_entry_lends_its_prefix_to_anyone(alice, private, tmp_path):
    path = tmp_path / "inputs.jsonl"
    path.write_text(f'{{"text": "{SHORT}", "options": {{"seed": 3, "best_of_k": 2}}}}\n')
    assert warm(path, "--local")[2] is None
    (entry,) = CachedResult.objects.all()
    assert entry.scope == ""
    job = services.do_submit(alice, None, {"text": LONG}, dict(OPTIONS))
    private()
    job = fresh(job)
    assert job.status == "done" and job.metadata["reused_from"] == "the result cache"
    reused = job.metadata["reused_positions"]
    assert reused >= 5
    got = rows(job.pk)
    for row in entry.rows:
        if row["position"] < reused:
            assert got[row["position"]] == row


def test_a_users_own_entry_lends_to_that_user_only(alice, bob, private):
    first = services.do_submit(alice, None, {"text": SHORT}, dict(OPTIONS))
    private()
    assert CachedResult.objects.get().scope == f"user:{alice.pk}"
    Analysis.objects.filter(pk=first.pk).delete()  # only the cache entry holds her prefix now
    his = services.do_submit(bob, None, {"text": LONG}, dict(OPTIONS))
    hers = services.do_submit(alice, None, {"text": LONG}, dict(OPTIONS))
    private()
    assert "reused_positions" not in fresh(his).metadata
    assert fresh(hers).metadata["reused_from"] == "the result cache"


def test_an_entry_of_unknown_scope_lends_nothing(alice, private):
    first = services.do_submit(alice, None, {"text": SHORT}, dict(OPTIONS))
    private()
    CachedResult.objects.update(scope=None)  # stored before scopes were recorded
    Analysis.objects.filter(pk=first.pk).delete()
    job = services.do_submit(alice, None, {"text": LONG}, dict(OPTIONS))
    private()
    assert "reused_positions" not in fresh(job).metadata
