"""Batches shared across texts (inference.sharing): each text's rows equal its rows run alone, owners take
turns, a cancel or a stop leaves the other texts' rows untouched, progress is per text."""

import dataclasses

import pytest

from inference.analysis import analyze
from inference.driver import begin
from inference.nla import analyze as analyze_nla
from inference.sharing import SharedBatches, batch_key
from inference.types import AnalysisInput, AnalysisOptions

from .nla_fixtures import cached_nla, tiny_spec
from .test_analysis import _close

TEXTS = (
    "Alice gave Bob a red apple because he was hungry, and then they walked home together.",
    "The old lighthouse keeper climbed the spiral stairs.",
    "Rain.",
)
OPTS = AnalysisOptions(best_of_k=2, temperature=1.0, seed=7, salience=True, kl=True, logit_lens=True)


def _shared(lens, tasks, rows_budget):
    shared = SharedBatches(lens, tasks[0].options, tasks[0].steps, rows_budget)
    for task in tasks:
        shared.add(task)
    while shared.running:
        shared.step()
    return shared


def test_three_texts_in_shared_batches_get_their_rows_run_alone(tiny_lens):
    seeds = (7, 8, 7)  # the seed is per text: sampling draws from each text's own
    options = [dataclasses.replace(OPTS, seed=s) for s in seeds]
    handed = {i: [] for i in range(3)}
    tasks = [
        begin(tiny_lens, AnalysisInput(text=t), o, owner=f"user{i}", on_batch=handed[i].append)
        for i, (t, o) in enumerate(zip(TEXTS, options, strict=True))
    ]
    shared = _shared(tiny_lens, tasks, rows_budget=10)
    assert max(len(batch) for batch in shared.batches) == 3  # the texts did share batches
    for i, task in enumerate(tasks):
        alone = analyze(tiny_lens, AnalysisInput(text=TEXTS[i]), options[i])
        result = task.result()
        assert result.status == "done" and result.metadata == alone.metadata
        _close(result.rows, alone.rows)
        for x, y in zip(result.rows, alone.rows, strict=True):
            assert x["kl"] == pytest.approx(y["kl"], rel=1e-3, abs=1e-5)
            assert x["logit_lens_top"] == y["logit_lens_top"] and x["token"] == y["token"]
        # handed out per batch, in order, each update counting this text's rows only
        assert [r for u in handed[i] for r in u.rows] == result.rows
        assert [u.done for u in handed[i]][-1] == u_total(handed[i]) == len(alone.rows)


def u_total(updates):
    return updates[-1].total


def test_owners_take_turns_however_many_jobs_each_has(tiny_lens):
    text = TEXTS[0]
    a1, a2, b = (
        begin(tiny_lens, AnalysisInput(text=text), OPTS, owner=owner, first_batch=8)
        for owner in ("alice", "alice", "bob")
    )
    shared = SharedBatches(tiny_lens, OPTS, a1.steps, rows_budget=6 * OPTS.best_of_k)
    for task in (a1, a2, b):
        shared.add(task)
    shared.step()
    first = shared.batches[0]
    # six places: alice and bob three each (alice's two jobs split hers), not two thirds to alice
    assert len(first[b]) == 3 and len(first[a1]) + len(first[a2]) == 3
    assert abs(len(first[a1]) - len(first[a2])) <= 1
    while shared.running:
        shared.step()
    for task in (a1, a2, b):
        assert task.result().status == "done"
        assert [r["position"] for r in task.rows] == task.prepared.positions


def test_a_newcomer_gets_a_small_first_share_in_the_next_batch(tiny_lens):
    long = begin(tiny_lens, AnalysisInput(text=" ".join([TEXTS[0]] * 3)), OPTS, owner="alice")
    shared = SharedBatches(tiny_lens, OPTS, long.steps, rows_budget=16 * OPTS.best_of_k)
    shared.add(long)
    for _ in range(4):
        shared.step()
    assert len(shared.batches[-1][long]) == 16  # grown to the whole batch
    late = begin(tiny_lens, AnalysisInput(text=TEXTS[1]), OPTS, owner="bob", first_batch=2)
    shared.add(late)
    shared.step()
    assert len(shared.batches[-1][late]) == 2 and len(shared.batches[-1][long]) == 14
    assert len(late.rows) == 2  # its first rows after one batch, not after the long text


def test_cancelling_one_text_mid_batch_leaves_the_others_untouched(tiny_lens):
    asked = {"since_rows": 0}

    def cancel_in_second_batch():
        if victim.rows:  # asked before the second batch, then at each decode step: true at its second
            asked["since_rows"] += 1
        return asked["since_rows"] >= 3

    heard = []
    tasks = [
        begin(tiny_lens, AnalysisInput(text=TEXTS[0]), OPTS, owner="alice", first_batch=3),
        begin(
            tiny_lens,
            AnalysisInput(text=TEXTS[0]),
            OPTS,
            owner="bob",
            first_batch=3,
            should_cancel=cancel_in_second_batch,
            on_progress=heard.append,
        ),
        begin(tiny_lens, AnalysisInput(text=TEXTS[1]), OPTS, owner="carol", first_batch=3),
    ]
    victim = tasks[1]
    shared = _shared(tiny_lens, tasks, rows_budget=9 * OPTS.best_of_k)
    assert victim.result().status == "cancelled"
    assert [r["position"] for r in victim.rows] == victim.prepared.positions[:3]  # its first batch only
    assert victim in shared.batches[1] and len(shared.batches) > 2  # cancelled within the second batch
    for task, text in ((tasks[0], TEXTS[0]), (tasks[2], TEXTS[1])):
        assert task.result().status == "done"
        _close(task.rows, analyze(tiny_lens, AnalysisInput(text=text), OPTS).rows)
    assert all(p.total == victim.total and p.done <= 6 for p in heard)  # its own progress, never past


def test_a_text_whose_owner_stops_it_leaves_after_its_batch(tiny_lens):
    stop_after_one = begin(
        tiny_lens, AnalysisInput(text=TEXTS[0]), OPTS, owner="a", first_batch=2, on_batch=lambda u: False
    )
    other = begin(tiny_lens, AnalysisInput(text=TEXTS[1]), OPTS, owner="b", first_batch=2)
    _shared(tiny_lens, [stop_after_one, other], rows_budget=4 * OPTS.best_of_k)
    assert stop_after_one.result().status == "stopped" and len(stop_after_one.rows) == 2
    assert other.result().status == "done" and len(other.rows) == other.total


def test_only_texts_of_one_option_set_share_a_batch(tiny_lens):
    task = begin(tiny_lens, AnalysisInput(text=TEXTS[2]), OPTS)
    shared = SharedBatches(tiny_lens, OPTS, task.steps)
    assert shared.fits(dataclasses.replace(OPTS, seed=99, positions=(1,)), task.steps)
    assert not shared.fits(dataclasses.replace(OPTS, best_of_k=3), task.steps)
    assert not shared.fits(dataclasses.replace(OPTS, kl=False), task.steps)
    assert not shared.fits(OPTS, task.steps + 1)
    with pytest.raises(ValueError):
        shared.add(begin(tiny_lens, AnalysisInput(text=TEXTS[2]), dataclasses.replace(OPTS, temperature=0.5)))
    assert batch_key(OPTS, 4) == batch_key(dataclasses.replace(OPTS, seed=1), 4)


def test_nla_texts_in_shared_batches_get_their_rows_run_alone():
    nla = cached_nla(tiny_spec(max_new_tokens=12))
    # positions whose rows alone do not depend on the batch size either: at a few, float arithmetic of
    # another batch shape tips a near-tie in sampling (position 6 of TEXTS[0] at seed 5, alone)
    options = AnalysisOptions(best_of_k=2, temperature=1.0, seed=7, salience=True, kl=True)
    picks = ([1, 4, 7], [1, 2], [4, 10])
    texts = (TEXTS[0], TEXTS[1], TEXTS[0])
    tasks = [
        begin(nla, AnalysisInput(text=t), options, owner=i, remaining=p)
        for i, (t, p) in enumerate(zip(texts, picks, strict=True))
    ]
    _shared(nla, tasks, rows_budget=6 * options.best_of_k)
    for task, text, some in zip(tasks, texts, picks, strict=True):
        alone = analyze_nla(nla, AnalysisInput(text=text), options, remaining=some)
        assert [r["explanation_token_ids"] for r in task.rows] == [
            r["explanation_token_ids"] for r in alone.rows
        ]
        for x, y in zip(task.rows, alone.rows, strict=True):
            assert x["mse_nrm"] == pytest.approx(y["mse_nrm"], rel=1e-5, abs=1e-6)
            assert x["kl"] == pytest.approx(y["kl"], rel=1e-3, abs=1e-5)
