"""The engine reproduces the research code's own outputs (golden README §5–§6)."""

import json

import pytest

from inference.analysis import analyze
from inference.limits import Limits
from inference.registry import LensSpec
from inference.types import AnalysisInput, AnalysisOptions

from .golden import cached_lens, golden_dir, tiny_spec

TEXTS = ["T1", "T2", "T3", "T4", "T7chat", "T8dblbos"]
GREEDY = Limits(min_temperature=0.0)
CHECKPOINTS = [
    pytest.param("tiny_patch2_percur", id="tiny_patch2_percur"),
    pytest.param("tiny_nopatch_single", id="tiny_nopatch_single"),
    pytest.param("smol_L8_patch4", id="smol_L8_patch4", marks=pytest.mark.slow),
]


def _lens(name, request):
    if name.startswith("smol"):
        base = request.getfixturevalue("smol_base")
        g = golden_dir()
        spec = LensSpec(
            id=name, name=name, checkpoint=str(g / "checkpoints" / f"{name}.pt"), base_model=str(base)
        )
        return cached_lens(spec)
    return cached_lens(tiny_spec(name))


def _golden(name, text_id, setting="k1_t0.01"):
    return json.loads((golden_dir() / "outputs" / f"{name}__{text_id}__{setting}.json").read_text())


def _untouched_by_pad_mask_bug(golden, position):
    """The research code masked every <|im_end|> as padding in the activation pass (a bug we do not copy):
    rows from the first masked position on are not comparable."""
    mask = golden["attention_mask_passed"][0]
    return 0 not in mask[: position + 1]


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_k1_rows_match_the_research_code(name, request):
    lens = _lens(name, request)
    compared = 0
    for text_id in TEXTS:
        golden = _golden(name, text_id)
        # temperature 0.01 in the reference is argmax on every row flagged argmax_reproducible
        result = analyze(
            lens,
            AnalysisInput(text=golden["text"]),
            AnalysisOptions(temperature=0.0, salience=True, logit_lens=True),
            limits=GREEDY,
        )
        assert [r["token_id"] for r in result.rows] == golden["input_ids"]
        for row, gold in zip(result.rows, golden["rows"], strict=True):
            assert row["position"] == gold["position"]
            assert row["token"] == gold["token"]
            if not _untouched_by_pad_mask_bug(golden, row["position"]):
                continue
            if not gold["decode"]["argmax_reproducible"]:
                continue
            where = f"{name} {text_id} position {row['position']}"
            assert row["explanation_token_ids"] == gold["explanation_token_ids"], where
            assert row["explanation_tokens"] == gold["explanation_structured"][: lens.t_text], where
            assert row["mse"] == pytest.approx(gold["mse"], rel=1e-3), where
            assert row["relative_rmse"] == pytest.approx(gold["relative_rmse"], rel=1e-3), where
            assert row["token_salience"] == pytest.approx(gold["token_salience"], abs=1e-3), where
            assert " ".join(row["logit_lens_top"]).replace("\n", "\\n") == gold["logit_lens_top"], where
            compared += 1
    assert compared >= 50  # 55–64 rows are flagged and untouched by the pad-mask bug per checkpoint


@pytest.mark.parametrize("name", ["tiny_patch2_percur", "tiny_nopatch_single"])
def test_activations_match_the_research_code(name):
    import torch

    from inference.metrics import orig_forward

    lens = cached_lens(tiny_spec(name))
    saved = torch.load(golden_dir() / "outputs" / "activations" / f"{name}__T1.pt", weights_only=True)
    with torch.inference_mode():
        acts = orig_forward(lens, saved["input_ids"], full=False).acts
    torch.testing.assert_close(acts, saved["A"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny_patch2_percur", "tiny_nopatch_single"])
def test_k4_rollouts_score_as_in_the_research_code(name):
    """Stochastic tokens differ from the reference's RNG; the encoder must still score its rollouts alike."""
    import torch

    from inference.encoding import encode, mse
    from inference.metrics import orig_forward

    lens = cached_lens(tiny_spec(name))
    golden = _golden(name, "T3", "k4_t1.0")
    with torch.inference_mode():
        ids = torch.tensor(golden["input_ids"])
        acts = orig_forward(lens, ids, full=False).acts
        for gold in golden["rows"]:
            p = gold["position"]
            rollout_ids = torch.tensor([r["ids"] for r in gold["rollouts"]])
            cur = ids[p].repeat(len(rollout_ids)) if lens.ckpt.add_current_token else None
            got = mse(acts[p].expand(len(rollout_ids), -1), encode(lens, rollout_ids, cur, chunk=64))
            want = torch.tensor([r["mse"] for r in gold["rollouts"]])
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
            assert int(got.argmin()) == gold["best_rollout_index"]
