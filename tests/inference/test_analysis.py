"""Determinism, incremental delivery, cancellation, resuming, candidates, bounds."""

import itertools

import pytest

from inference.analysis import analyze
from inference.batching import DEFAULT_FIRST_BATCH, batches
from inference.errors import InputError, OptionError
from inference.limits import Limits
from inference.types import AnalysisInput, AnalysisOptions

TEXT = "Alice gave Bob a red apple because he was hungry, and then they walked home together."
OPTS = AnalysisOptions(best_of_k=3, temperature=1.0, seed=7, salience=True)


def _key(rows):
    return [(r["position"], r["explanation_token_ids"]) for r in rows]


def _close(a, b):
    assert _key(a) == _key(b)
    for x, y in zip(a, b, strict=True):
        assert x["mse"] == pytest.approx(y["mse"], rel=1e-4)
        assert x["token_salience"] == pytest.approx(y["token_salience"], abs=1e-4)


def test_result_does_not_depend_on_batch_size(tiny_lens):
    whole = analyze(tiny_lens, AnalysisInput(text=TEXT), OPTS, rows_budget=512)
    one_by_one = analyze(tiny_lens, AnalysisInput(text=TEXT), OPTS, rows_budget=1)
    odd = analyze(tiny_lens, AnalysisInput(text=TEXT), OPTS, rows_budget=7)
    _close(whole.rows, one_by_one.rows)
    _close(whole.rows, odd.rows)


def test_result_does_not_depend_on_which_positions_share_the_run(tiny_lens):
    whole = analyze(tiny_lens, AnalysisInput(text=TEXT), OPTS)
    subset = analyze(tiny_lens, AnalysisInput(text=TEXT), OPTS, remaining=[3, 9, 12])
    _close([r for r in whole.rows if r["position"] in (3, 9, 12)], subset.rows)


def test_seed_changes_the_sample_and_repeats_reproduce(tiny_lens):
    a = analyze(tiny_lens, AnalysisInput(text=TEXT), OPTS)
    b = analyze(tiny_lens, AnalysisInput(text=TEXT), OPTS)
    c = analyze(tiny_lens, AnalysisInput(text=TEXT), AnalysisOptions(best_of_k=3, temperature=1.0, seed=8))
    assert _key(a.rows) == _key(b.rows)
    assert _key(a.rows) != _key(c.rows)


def test_best_of_k_keeps_the_lowest_mse_candidate(tiny_lens):
    opts = AnalysisOptions(best_of_k=5, temperature=1.0, keep_candidates=True, salience=False)
    result = analyze(tiny_lens, AnalysisInput(text=TEXT), opts)
    for row in result.rows:
        cands = row["candidates"]
        assert len(cands) == 5
        best = min(range(5), key=lambda j: (cands[j]["mse"], j))
        assert cands[best]["chosen"] and sum(c["chosen"] for c in cands) == 1
        assert cands[best]["explanation_token_ids"] == row["explanation_token_ids"]
        assert cands[best]["mse"] == row["mse"]
        assert row["token_salience"] is None


def test_rows_arrive_per_batch_with_progress(tiny_lens):
    updates = []
    result = analyze(tiny_lens, AnalysisInput(text=TEXT), OPTS, rows_budget=12, on_batch=updates.append)
    largest = 12 // 3
    # a small first batch, then doubling up to the budget: [2, 4, 4, …]
    sizes = [len(u.rows) for u in updates]
    assert sizes[0] == DEFAULT_FIRST_BATCH and sizes[1] == largest
    assert all(size == largest for size in sizes[1:-1]) and 0 < sizes[-1] <= largest
    assert [u.done for u in updates] == list(itertools.accumulate(sizes))
    assert all(u.total == len(result.rows) for u in updates)
    assert [r for u in updates for r in u.rows] == result.rows


def test_batches_start_small_and_double_up_to_the_largest():
    assert [len(b) for b in batches(list(range(60)), 16, 2)] == [2, 4, 8, 16, 16, 14]
    assert [len(b) for b in batches(list(range(5)), 1, 2)] == [1] * 5
    assert [b for b in batches(list(range(7)), 64, 3)] == [[0, 1, 2], [3, 4, 5, 6]]
    assert list(batches([], 8)) == []


def test_the_first_batch_of_a_60_token_job_is_small_and_its_rows_equal_one_batch(tiny_lens):
    text = " ".join(["Alice gave Bob a red apple because he was hungry, and then they walked home."] * 4)
    opts = AnalysisOptions(best_of_k=2, temperature=1.0, seed=3, salience=True)
    updates = []
    grown = analyze(tiny_lens, AnalysisInput(text=text), opts, rows_budget=64, on_batch=updates.append)
    assert grown.metadata["n_tokens"] >= 60
    assert len(updates[0].rows) <= 4
    assert len(updates) > 1 and max(len(u.rows) for u in updates) == 64 // 2
    one = analyze(tiny_lens, AnalysisInput(text=text), opts, rows_budget=4096, first_batch=4096)
    _close(grown.rows, one.rows)


def test_progress_moves_within_a_batch_through_its_phases(tiny_lens):
    heard = []
    batches_done = []
    analyze(
        tiny_lens,
        AnalysisInput(text=TEXT),
        OPTS,
        rows_budget=300,
        first_batch=8,
        on_progress=heard.append,
        on_batch=lambda u: batches_done.append((len(heard), u.done)),
    )
    first_batch = heard[: batches_done[0][0]]
    # every decode step reports, then the phases after decoding, within the first batch's 8 positions
    assert [p.phase for p in first_batch] == ["decoding"] * tiny_lens.t_text + ["encoding", "salience"]
    done = [p.done for p in first_batch]
    assert done == sorted(done) and done[0] == 0 and 0 < done[-1] < 8
    assert all(p.total == batches_done[-1][1] for p in heard)


def test_cancel_stops_between_decode_steps_and_reports_partial_rows(tiny_lens):
    calls = {"n": 0}
    seen = []

    def should_cancel():
        calls["n"] += 1
        return len(seen) >= 2  # after two batches have been handed out

    result = analyze(
        tiny_lens,
        AnalysisInput(text=TEXT),
        OPTS,
        rows_budget=3,
        on_batch=seen.append,
        should_cancel=should_cancel,
    )
    assert result.status == "cancelled"
    assert len(result.rows) == 2 and [r["position"] for r in result.rows] == [0, 1]
    # checked between decode steps, not only between batches
    assert calls["n"] >= 2 * tiny_lens.t_text


def test_on_batch_false_stops_after_that_batch(tiny_lens):
    result = analyze(tiny_lens, AnalysisInput(text=TEXT), OPTS, rows_budget=3, on_batch=lambda u: False)
    assert result.status == "stopped" and len(result.rows) == 1


def test_resume_from_persisted_rows_reports_global_progress(tiny_lens):
    updates = []
    result = analyze(tiny_lens, AnalysisInput(text=TEXT), OPTS, remaining=[10, 11], on_batch=updates.append)
    assert [r["position"] for r in result.rows] == [10, 11]
    assert updates[-1].done == updates[-1].total


@pytest.mark.parametrize(
    "opts, message",
    [
        (AnalysisOptions(best_of_k=0), "best_of_k"),
        (AnalysisOptions(best_of_k=65), "best_of_k"),
        (AnalysisOptions(temperature=-0.1), "temperature"),  # 0 is greedy, below it nothing
        (AnalysisOptions(temperature=float("nan")), "temperature"),
        (AnalysisOptions(seed=-1), "seed"),
        (AnalysisOptions(salience="yes"), "salience"),
    ],
)
def test_options_out_of_range_are_refused(tiny_lens, opts, message):
    with pytest.raises(OptionError, match=message):
        analyze(tiny_lens, AnalysisInput(text=TEXT), opts)


def test_empty_and_too_long_inputs_are_refused(tiny_lens):
    with pytest.raises(InputError, match="empty"):
        analyze(tiny_lens, AnalysisInput(text="   "), AnalysisOptions())
    with pytest.raises(InputError, match="characters"):
        analyze(tiny_lens, AnalysisInput(text="x" * 50), AnalysisOptions(), limits=Limits(max_text_chars=20))
    with pytest.raises(InputError, match="tokens; the limit is 5"):
        analyze(tiny_lens, AnalysisInput(text=TEXT), AnalysisOptions(), limits=Limits(max_tokens=5))
    with pytest.raises(OptionError, match="outside"):
        analyze(tiny_lens, AnalysisInput(text="Hi there"), AnalysisOptions(), remaining=[99])
