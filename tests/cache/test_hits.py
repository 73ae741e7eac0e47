"""Identical requests hit (for anyone); anything that changes the result misses."""

from __future__ import annotations

import pytest
import torch

from lensweb.analyses import services
from lensweb.cache import services as result_cache
from lensweb.cache.models import CachedResult

from .conftest import TEXT, fresh, rows_of

pytestmark = [pytest.mark.django_db(transaction=True)]

OPTIONS = {"best_of_k": 2, "temperature": 1.0, "seed": 7, "salience": True, "kl": False, "logit_lens": False}


def submit(user, text=TEXT, options=OPTIONS, lens=None):
    return services.do_submit(user, lens, {"text": text}, dict(options))


def test_an_identical_request_is_done_at_once_with_the_same_rows_for_any_user(alice, bob, run_queue):
    first = submit(alice)
    assert first.status == "queued"
    assert run_queue() == [first.pk]
    first = fresh(first)
    assert first.status == "done" and "cached" not in first.metadata
    entry = CachedResult.objects.get()
    assert entry.hits == 0 and entry.n_tokens == len(entry.rows) and entry.lens_id == "tiny"
    assert entry.computed_seconds > 0 and entry.size_bytes == len(bytes(entry.blob))

    again, other = submit(alice), submit(bob)
    for job in (again, other):
        assert job.status == "done" and job.finished_at is not None and job.started_at is None
        assert job.metadata["cached"] is True
        assert job.metadata["computed_seconds"] == entry.computed_seconds
        assert job.metadata["summary"] == first.metadata["summary"]
        assert job.metadata["identity"] == first.metadata["identity"]
        assert job.progress_done == job.progress_total == first.progress_total
        assert rows_of(job.pk) == rows_of(first.pk)
    assert other.owner == bob and again.pk != other.pk != first.pk
    assert run_queue() == []  # nothing was queued
    assert CachedResult.objects.get().hits == 2


@pytest.mark.parametrize(
    "change",
    [
        {"best_of_k": 3},
        {"temperature": 0.5},
        {"seed": 8},
        {"salience": False},
        {"kl": True},
        {"logit_lens": True},
        {"keep_candidates": True},
    ],
    ids=lambda change: next(iter(change)),
)
def test_any_change_in_options_misses(alice, run_queue, change):
    submit(alice)
    run_queue()
    varied = submit(alice, options={**OPTIONS, **change})
    assert varied.status == "queued" and "cached" not in varied.metadata
    assert run_queue() == [varied.pk]
    assert CachedResult.objects.count() == 2


def test_another_text_misses(alice, run_queue):
    submit(alice)
    run_queue()
    assert submit(alice, text=TEXT + " today").status == "queued"


def test_another_engine_version_misses(alice, run_queue, monkeypatch):
    submit(alice)
    run_queue()
    for where in (
        "inference.cachekey",
        "inference.engine",
    ):  # the web side's copies: keys and what they record
        monkeypatch.setattr(f"{where}.ENGINE_VERSION", "999")
    upgraded = submit(alice)
    assert upgraded.status == "queued"
    # the worker still runs engine 1 (a rolling upgrade): its result is not stored under a key for 999
    assert run_queue() == [upgraded.pk]
    assert fresh(upgraded).status == "done" and CachedResult.objects.count() == 1


def _registry(directory, checkpoint, base):
    path = directory / "lenses.toml"
    path.write_text(
        f'[[lens]]\nid = "tiny"\nname = "Tiny"\ncheckpoint = "{checkpoint}"\nbase_model = "{base}"\n'
        f'default = true\n[[lens]]\nid = "other"\nname = "Other"\ncheckpoint = "{checkpoint.parent / "other.pt"}"\n'
        f'base_model = "{base}"\n'
    )
    return path


@pytest.fixture
def own_checkpoints(tmp_path, monkeypatch, cache_on, tiny_registry):
    """The tiny lens from a copy we may change, and a second lens whose decoder differs slightly."""
    from lensweb.analyses import engine as engine_module
    from tests.conftest import tiny_lens

    raw = torch.load(tiny_lens().checkpoint, weights_only=False)
    torch.save(raw, tmp_path / "tiny.pt")
    decoder = raw["models"]["decoder"]
    name = next(k for k, v in decoder.items() if torch.is_tensor(v) and v.is_floating_point())
    decoder[name] = decoder[name] + 1e-3
    torch.save(raw, tmp_path / "other.pt")
    monkeypatch.setenv(
        "LENSWEB_LENS_REGISTRY", str(_registry(tmp_path, tmp_path / "tiny.pt", tiny_lens().base))
    )
    engine_module._engines.pop(engine_module.ENGINE_ALIASES["inference"], None)
    return tmp_path


def test_another_lens_misses(alice, run_queue, own_checkpoints):
    submit(alice, lens="tiny")
    run_queue()
    assert submit(alice, lens="other").status == "queued"
    assert submit(alice, lens="tiny").status == "done"


def test_a_changed_checkpoint_never_serves_the_old_result(alice, run_queue, own_checkpoints):
    submit(alice, lens="tiny")
    run_queue()
    assert submit(alice, lens="tiny").status == "done"
    (own_checkpoints / "other.pt").replace(own_checkpoints / "tiny.pt")  # same path, new content
    changed = submit(alice, lens="tiny")
    assert changed.status == "queued"
    # The worker's lens cache notices the files changed (their stamp) and loads the lens anew: the result is
    # the new lens', stored under the new key, and the next submit is served from it.
    assert run_queue() == [changed.pk]
    old, new = CachedResult.objects.order_by("id")
    assert new.lens_identity == fresh(changed).metadata["identity"] != old.lens_identity
    assert submit(alice, lens="tiny").status == "done"
    assert submit(alice, lens="tiny").status == "done"


def test_a_chat_hits_too(alice, run_queue):
    chat = {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"}]}
    services.do_submit(alice, None, chat, {})
    run_queue()
    assert services.do_submit(alice, None, chat, {}).status == "done"
    assert services.do_submit(alice, None, chat, {"last_n_messages": 1}).status == "queued"


def test_the_cache_switched_off_neither_stores_nor_serves(alice, run_queue, settings):
    settings.LENSWEB_RESULT_CACHE = False
    submit(alice)
    run_queue()
    assert submit(alice).status == "queued" and not CachedResult.objects.exists()


def test_identity_is_computed_once_per_lens(alice, cache_on, monkeypatch):
    import inference.engine

    calls = []
    real = inference.engine.identity
    monkeypatch.setattr(inference.engine, "identity", lambda spec: calls.append(spec.id) or real(spec))
    result_cache._identities.clear()
    submit(alice)
    submit(alice, text="another text")
    assert calls == ["tiny"]


def test_hits_cost_no_daily_quota_and_pass_a_full_quota(alice, run_queue, settings):
    from lensweb.analyses.quotas import positions_today

    first = submit(alice)
    run_queue()
    computed = positions_today(alice)
    assert computed == fresh(first).progress_total > 0
    settings.LENSWEB_MAX_POSITIONS_PER_DAY = computed  # the quota is spent
    again = submit(alice)  # a hit computes nothing: still answered
    assert again.status == "done" and again.metadata["cached"] is True
    assert positions_today(alice) == computed
    with pytest.raises(services.SubmissionError, match="positions"):
        submit(alice, text=TEXT + " More.")  # a miss is refused
