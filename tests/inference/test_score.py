"""Scoring your own explanation (inference.engine.score), both lens families: scoring a row's own
explanation_token_ids gives that row's numbers again (the round trip is the same computation), a text of
your own gets its own numbers, and bad explanations or positions are refused with the reason."""

from __future__ import annotations

import pytest

from inference import engine
from inference.errors import InputError, OptionError
from inference.types import AnalysisInput, AnalysisOptions

from .nla_fixtures import cached_nla, tiny_spec

TEXT = "Alice gave Bob a red apple because he was hungry."
OPTS = dict(best_of_k=2, temperature=1.0, seed=7, salience=True, kl=True)
SAME = ("mse", "relative_rmse", "cosine_similarity", "kl", "activation_norm")
NLA_SAME = ("mse_nrm", "fve_nrm")


@pytest.fixture(scope="module", params=["lens", "nla"])
def analysed(request, tiny_lens):
    lens = tiny_lens if request.param == "lens" else cached_nla(tiny_spec(max_new_tokens=8))
    result = engine.analyze(lens, AnalysisInput(text=TEXT), AnalysisOptions(**OPTS))
    return request.param, lens, result.rows


def test_a_rows_own_explanation_ids_score_as_the_row(analysed):
    family, lens, rows = analysed
    for row in rows[1::3]:
        mine = engine.score(
            lens,
            AnalysisInput(text=TEXT),
            AnalysisOptions(**OPTS),
            row.position,
            explanation_token_ids=row.explanation_token_ids,
        )
        assert mine.explanation == row.explanation and mine.explanation_tokens == row.explanation_tokens
        for name in SAME + (NLA_SAME if family == "nla" else ()):
            assert getattr(mine, name) == pytest.approx(getattr(row, name), rel=1e-4, abs=1e-9), (
                row.position,
                name,
            )
        assert mine.token_salience == pytest.approx(row.token_salience, rel=1e-4, abs=1e-6)
        assert mine.activation_norm_outlier == row.activation_norm_outlier and mine.token == row.token


def test_your_own_words_get_their_own_numbers(analysed):
    family, lens, rows = analysed
    row = rows[4]
    opts = AnalysisOptions(**{**OPTS, "kl": False})
    mine = engine.score(lens, AnalysisInput(text=TEXT), opts, row.position, explanation="a red fruit")
    assert mine.explanation == "a red fruit" and mine.kl is None
    assert mine.mse > 0 and mine.mse != pytest.approx(row.mse, rel=1e-3)
    assert len(mine.token_salience) == len(mine.explanation_tokens) > 0
    # negative positions count from the end, as for chosen positions
    last = engine.score(lens, AnalysisInput(text=TEXT), opts, -1, explanation="a red fruit")
    assert last.position == rows[-1].position
    if family == "nla":
        assert mine.mse_nrm is not None and mine.explanation_tokens == [
            "a",
            " red",
            " fruit",
        ]  # its words, as salience counts them


@pytest.mark.parametrize(
    ("position", "given", "error", "message"),
    [
        (99, {"explanation": "x"}, OptionError, "position 99 is outside the input"),
        (1, {}, InputError, "either an explanation or its explanation_token_ids"),
        (1, {"explanation": "x", "explanation_token_ids": [1]}, InputError, "not both"),
        (1, {"explanation": "  "}, InputError, "explanation: give a text"),
        (1, {"explanation_token_ids": []}, InputError, "give 1 to"),
        (1, {"explanation_token_ids": [10**9]}, InputError, "is not a token id"),
        (1, {"explanation_token_ids": ["a"]}, InputError, "is not a token id"),
    ],
)
def test_bad_explanations_and_positions_are_refused(analysed, position, given, error, message):
    _family, lens, _rows = analysed
    with pytest.raises(error, match=message):
        engine.score(lens, AnalysisInput(text=TEXT), AnalysisOptions(**OPTS), position, **given)
