"""Chosen positions (`options.positions`): rows for exactly those, equal to the same positions of a whole-text
run, for both lens families; negative positions count from the end; the key holds the whole list."""

from __future__ import annotations

import pytest

from inference.analysis import analyze
from inference.cachekey import result_key
from inference.errors import OptionError
from inference.types import AnalysisInput, AnalysisOptions

from .nla_fixtures import cached_nla, tiny_spec

TEXT = "Alice gave Bob a red apple because he was hungry."
OPTS = dict(best_of_k=2, temperature=1.0, seed=7, salience=True, kl=True)
ROW_FIELDS = ("position", "token", "explanation_token_ids", "mse", "token_salience", "kl")


def same_rows(chosen, whole, positions):
    by_position = {row["position"]: row for row in whole}
    assert [row["position"] for row in chosen] == positions
    for row in chosen:
        other = by_position[row["position"]]
        for name in ROW_FIELDS:
            expected = other[name] if isinstance(other[name], str) else pytest.approx(other[name], rel=1e-5)
            assert row[name] == expected, (row["position"], name)


@pytest.fixture(scope="module", params=["lens", "nla"])
def any_lens(request, tiny_lens):
    return tiny_lens if request.param == "lens" else cached_nla(tiny_spec(max_new_tokens=8))


def test_chosen_rows_equal_the_same_positions_of_the_whole_text(any_lens):
    whole = analyze(any_lens, AnalysisInput(text=TEXT), AnalysisOptions(**OPTS))
    n = whole.metadata["n_tokens"]
    chosen = analyze(any_lens, AnalysisInput(text=TEXT), AnalysisOptions(**OPTS, positions=(-1, 3, 1, 3)))
    assert chosen.metadata["positions"] == [1, 3, n - 1]  # resolved: sorted, each once
    assert chosen.metadata["options"]["positions"] == [-1, 3, 1, 3]  # as asked
    assert whole.metadata["positions"] == list(range(n))
    same_rows(chosen.rows, whole.rows, [1, 3, n - 1])


def test_a_position_outside_the_text_is_refused_by_name(tiny_lens):
    with pytest.raises(OptionError, match=r"positions 40, -41 are outside the input, which has \d+ tokens"):
        analyze(tiny_lens, AnalysisInput(text=TEXT), AnalysisOptions(positions=(2, 40, -41)))


def test_positions_and_last_n_messages_do_not_go_together(tiny_lens):
    chat = AnalysisInput(messages=({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}))
    with pytest.raises(OptionError, match="give one of them"):
        analyze(tiny_lens, chat, AnalysisOptions(positions=(1,), last_n_messages=1))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ((), "positions is empty"),
        (tuple(range(257)), "257 items; the limit is 256"),
        ((1.5,), "whole number"),
    ],
)
def test_bad_positions_are_refused(tiny_lens, value, message):
    with pytest.raises(OptionError, match=message):
        analyze(tiny_lens, AnalysisInput(text=TEXT), AnalysisOptions(positions=value))


def test_the_key_holds_every_resolved_position():
    ids, options = [5, 6, 7, 8, 9, 10], AnalysisOptions()
    assert result_key("lens", ids, [1, 5], options) != result_key("lens", ids, [1, 3, 5], options)
    assert result_key("lens", ids, [1, 5], options) == result_key("lens", ids, [1, 5], options)
