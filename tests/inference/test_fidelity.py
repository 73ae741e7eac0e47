"""The fidelity columns (issue 14): cos(A, Â) and ‖A‖ on every row, and the flag for a norm far outside the
lens' usual range. Checked against a direct computation on the suite's own tiny lens (tests/tinylens.py)
and tiny NLA (tests/tinynla.py): no golden files needed."""

from __future__ import annotations

import math

import pytest
import torch

from inference import metrics
from inference.analysis import analyze
from inference.encoding import encode, mse
from inference.engine import load
from inference.metrics import NORM_OUTLIER_FACTOR, NORM_REFERENCE_TEXT, NormRange, norm_range, orig_forward
from inference.registry import LensSpec
from inference.types import AnalysisInput, AnalysisOptions

TEXT = "The capital of France is Paris, famous for the Eiffel Tower."
MORE = " The lighthouse keeper climbed the stairs every evening."
OPTS = AnalysisOptions(best_of_k=3, temperature=1.0, seed=5, salience=False)
FIELDS = ("cosine_similarity", "activation_norm", "activation_norm_outlier")


@pytest.fixture(scope="module")
def lens():
    from tests.conftest import tiny_lens

    built = tiny_lens()
    spec = LensSpec(id="tiny", name="tiny", checkpoint=str(built.checkpoint), base_model=str(built.base))
    return load(spec, device="cpu")


@pytest.fixture(scope="module")
def nla():
    from tests.tinynla import MAX_NEW_TOKENS, tiny_nla

    built = tiny_nla()
    spec = LensSpec(
        id="tiny-nla",
        name="tiny NLA",
        kind="nla",
        checkpoint=str(built.folder),
        base_model=str(built.base),
        max_new_tokens=MAX_NEW_TOKENS,
    )
    return load(spec, device="cpu")


@pytest.fixture(scope="module")
def result(lens):
    return analyze(lens, AnalysisInput(text=TEXT), OPTS)


def _acts(lens, token_ids) -> torch.Tensor:
    with torch.inference_mode():
        return orig_forward(lens, torch.tensor(token_ids), full=False).acts


def test_every_row_has_cos_and_norm_as_computed_directly(lens, result):
    acts = _acts(lens, result.metadata["token_ids"])
    assert result.rows and all(set(FIELDS) <= set(row) for row in result.rows)
    for row in result.rows:
        a = acts[row["position"]]
        with torch.inference_mode():
            recon = encode(
                lens,
                torch.tensor([row["explanation_token_ids"]]),
                torch.tensor([row["token_id"]]) if lens.ckpt.add_current_token else None,
                chunk=8,
            )[0]
        assert row["mse"] == pytest.approx(float(mse(a[None], recon[None])[0]), rel=1e-4)  # the same Â
        direct_cos = float(torch.nn.functional.cosine_similarity(a, recon, dim=0))
        assert row["cosine_similarity"] == pytest.approx(direct_cos, abs=1e-5)
        assert row["activation_norm"] == pytest.approx(float(a.double().norm()), rel=1e-5)
        # and ‖A‖ agrees with the relative RMSE the row already had: sqrt(mse · d) / ‖A‖
        d = a.shape[0]
        assert row["relative_rmse"] == pytest.approx(
            math.sqrt(row["mse"] * d) / row["activation_norm"], rel=1e-4
        )


def test_the_usual_range_is_the_median_norm_of_the_reference_text(lens, result):
    ids = list(lens.tokenizer(NORM_REFERENCE_TEXT, add_special_tokens=True).input_ids)
    norms = sorted(float(n) for n in _acts(lens, ids)[1:].double().norm(dim=-1))
    lower_middle = norms[(len(norms) - 1) // 2]  # torch.median's choice for an even count
    usual = norm_range(lens)
    assert usual.median == pytest.approx(lower_middle, rel=1e-5)
    assert usual.high == pytest.approx(usual.median * NORM_OUTLIER_FACTOR)
    assert usual.low == pytest.approx(usual.median / NORM_OUTLIER_FACTOR)
    stated = result.metadata["activation_norm_range"]
    assert (stated["median"], stated["low"], stated["high"]) == (usual.median, usual.low, usual.high)
    assert "median" in stated["rule"] and f"{NORM_OUTLIER_FACTOR:g}×" in stated["rule"]


def test_the_flag_marks_norms_outside_the_range_and_only_those(lens, result, monkeypatch):
    norms = sorted(row["activation_norm"] for row in result.rows)
    assert not any(row["activation_norm_outlier"] for row in result.rows)  # a random model: no sink
    # A range that the text's largest and smallest norms fall outside: exactly those rows are flagged.
    narrow = NormRange(median=norms[len(norms) // 2], low=norms[1] - 1e-3, high=norms[-2] + 1e-3)
    monkeypatch.setattr(lens, "_norm_range", narrow)
    flagged = analyze(lens, AnalysisInput(text=TEXT), OPTS)
    assert [r["activation_norm_outlier"] for r in flagged.rows] == [
        r["activation_norm"] in (norms[0], norms[-1]) for r in flagged.rows
    ]
    assert sum(r["activation_norm_outlier"] for r in flagged.rows) == 2
    # the other fields are the same numbers: the flag is read off, nothing is recomputed differently
    for a, b in zip(result.rows, flagged.rows, strict=True):
        assert {k: v for k, v in a.items() if k != "activation_norm_outlier"} == {
            k: v for k, v in b.items() if k != "activation_norm_outlier"
        }


def test_a_row_does_not_depend_on_the_text_after_it(lens, result):
    """The range is the lens', not the text's: a longer text (or a reused prefix) gives the prefix's rows the
    same norm and the same flag."""
    longer = analyze(lens, AnalysisInput(text=TEXT + MORE), OPTS)
    for a, b in zip(result.rows, longer.rows[: len(result.rows)], strict=True):
        assert a["token_id"] == b["token_id"]
        assert b["activation_norm"] == pytest.approx(a["activation_norm"], rel=1e-5)
        assert b["activation_norm_outlier"] == a["activation_norm_outlier"]
        assert b["cosine_similarity"] == pytest.approx(a["cosine_similarity"], abs=1e-5)


def test_the_range_is_computed_once_per_lens(lens, monkeypatch):
    norm_range(lens)
    calls = []
    monkeypatch.setattr(metrics, "orig_forward", lambda *a, **k: calls.append(1))
    analyze(lens, AnalysisInput(text="a b c"), OPTS)
    assert calls == []  # norm_range's forward did not run again (analyze's own is imported by name)


def test_an_nla_row_keeps_its_cos_and_adds_the_norm(nla):
    from inference.nla_analysis import reconstruct, score

    result = analyze(nla, AnalysisInput(text=TEXT), AnalysisOptions(best_of_k=2, seed=3, salience=False))
    acts = _acts(nla, result.metadata["token_ids"])
    usual = norm_range(nla)
    assert result.metadata["activation_norm_range"]["median"] == usual.median
    for row in result.rows[:6]:
        a = acts[row["position"]]
        assert row["activation_norm"] == pytest.approx(float(a.double().norm()), rel=1e-5)
        assert row["activation_norm_outlier"] == usual.is_outlier(row["activation_norm"])
        # its own cos (of the rescaled vectors: the same cosine), as score() gives it for the kept explanation
        with torch.inference_mode():
            _, cos = score(reconstruct(nla, [row["explanation"]]), a[None], nla.cfg.mse_scale)
        assert row["cosine_similarity"] == pytest.approx(float(cos[0]), abs=1e-5)
