"""Describing vectors (inference.engine.describe) and reading activations (inference.engine.activations), both
lens families: a greedy row's activation, described with its token at temperature 0, gives that row's
explanation and mse again; bad vectors are refused with the reason, naming the lens' width."""

from __future__ import annotations

import math

import pytest

from inference import engine
from inference.errors import InputError, OptionError
from inference.models import hidden_size
from inference.types import AnalysisInput, AnalysisOptions

from .nla_fixtures import cached_nla, tiny_spec

TEXT = "Alice gave Bob a red apple because he was hungry."
GREEDY = AnalysisOptions(best_of_k=1, temperature=0.0, salience=True)


@pytest.fixture(scope="module", params=["lens", "nla"])
def lens(request, tiny_lens):
    return tiny_lens if request.param == "lens" else cached_nla(tiny_spec(max_new_tokens=8))


def test_a_greedy_rows_activation_described_with_its_token_is_that_row(lens):
    rows = engine.analyze(lens, AnalysisInput(text=TEXT), GREEDY).rows
    chosen = [rows[2], rows[5], rows[-1]]
    vectors = engine.activations(lens, AnalysisInput(text=TEXT), [row.position for row in chosen])
    assert len(vectors) == 3 and all(len(v) == hidden_size(lens.orig) for v in vectors)
    described = engine.describe(lens, vectors, GREEDY, token_ids=[row.token_id for row in chosen])
    assert described.status == "done" and [r.position for r in described.rows] == [0, 1, 2]
    for mine, row in zip(described.rows, chosen, strict=True):
        assert mine.explanation_token_ids == row.explanation_token_ids and mine.token == row.token
        assert mine.mse == pytest.approx(row.mse, rel=1e-4)
        assert mine.token_salience == pytest.approx(row.token_salience, rel=1e-4, abs=1e-6)
    assert described.metadata["token_ids_given"] is True


def test_a_vector_without_a_token_is_described_too(lens):
    [vector] = engine.activations(lens, AnalysisInput(text=TEXT), [-1])
    result = engine.describe(lens, [vector, [2 * x for x in vector]], GREEDY)
    assert len(result.rows) == 2 and all(math.isfinite(r.mse) for r in result.rows)
    assert result.metadata["token_ids_given"] is False and result.rows[0].token == ""


def test_bad_vectors_and_options_are_refused(lens):
    width = hidden_size(lens.orig)
    good = [0.5] * width
    cases = [
        (
            [[0.5] * (width - 1)],
            GREEDY,
            InputError,
            f"vector 0 has {width - 1} values; this lens' activations have {width}",
        ),
        (
            [good, [math.nan] * width],
            GREEDY,
            InputError,
            "vector 1 holds a value that is not a finite number",
        ),
        ([good] * 257, GREEDY, InputError, "give 1 to 256 vectors"),
        ([], GREEDY, InputError, "give 1 to 256 vectors"),
        ("not a list", GREEDY, InputError, "give 1 to"),
        ([good], AnalysisOptions(kl=True), OptionError, "kl compares"),
        ([good], AnalysisOptions(positions=(1,)), OptionError, "describe takes vectors"),
    ]
    for vectors, options, error, message in cases:
        with pytest.raises(error, match=message):
            engine.describe(lens, vectors, options)
    with pytest.raises(InputError, match="one token id per vector"):
        engine.describe(lens, [good], GREEDY, token_ids=[1, 2])
    with pytest.raises(OptionError, match="position 99 is outside"):
        engine.activations(lens, AnalysisInput(text=TEXT), [99])


def test_the_width_is_known_without_loading_weights(tiny_lens):
    """What the web process checks a described vector against: the same number the loaded lens has."""
    nla = cached_nla(tiny_spec(max_new_tokens=8))
    assert engine.width(tiny_lens.spec) == hidden_size(tiny_lens.orig)
    assert engine.width(nla.spec) == hidden_size(nla.orig)
