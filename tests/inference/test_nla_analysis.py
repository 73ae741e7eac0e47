"""NLA analysis on the tiny golden pair: determinism across batches, best-of-k, salience, stopping, the
explanation bound, cancellation and progress, chats, KL and logit lens, and the CLI contract."""

import dataclasses
import json

import pytest

from inference.__main__ import main
from inference.analysis import analyze
from inference.errors import OptionError
from inference.limits import Limits
from inference.nla import analyze as analyze_nla
from inference.nla_analysis import _StopString, reconstruct, score
from inference.nla_format import without_word
from inference.types import AnalysisInput, AnalysisOptions

from .nla_fixtures import cached_nla, golden, golden_dir, nla_golden_dir, tiny_spec

TEXT = "Alice gave Bob a red apple because he was hungry."
OPTS = AnalysisOptions(best_of_k=3, temperature=1.0, seed=7, salience=True)
GREEDY = Limits(min_temperature=0.0)
STEPS = 12  # max_new_tokens of these tests' lens: short explanations keep them quick


@pytest.fixture(scope="module")
def nla():
    return cached_nla(tiny_spec(max_new_tokens=STEPS))


def _key(rows):
    return [(r["position"], r["explanation_token_ids"]) for r in rows]


def _close(a, b):
    assert _key(a) == _key(b)
    for x, y in zip(a, b, strict=True):
        for name in ("mse_nrm", "cosine_similarity", "fve_nrm", "mse"):
            assert x[name] == pytest.approx(y[name], rel=1e-5, abs=1e-6), name
        assert x["token_salience"] == pytest.approx(y["token_salience"], abs=1e-4)


def test_result_does_not_depend_on_batch_size(nla):
    some = [1, 4, 7, 10]
    whole = analyze(nla, AnalysisInput(text=TEXT), OPTS, rows_budget=512, remaining=some)
    one_by_one = analyze(nla, AnalysisInput(text=TEXT), OPTS, rows_budget=1, remaining=some)
    odd = analyze(nla, AnalysisInput(text=TEXT), OPTS, rows_budget=7, remaining=some)
    _close(whole.rows, one_by_one.rows)
    _close(whole.rows, odd.rows)


def test_batches_grow_from_a_small_first_one_with_progress_between(nla):
    some = [1, 2, 3, 4, 7, 9, 10]
    heard, sizes = [], []
    grown = analyze(
        nla,
        AnalysisInput(text=TEXT),
        OPTS,
        rows_budget=8 * OPTS.best_of_k,
        remaining=some,
        on_batch=lambda u: sizes.append(len(u.rows)),
        on_progress=heard.append,
    )
    assert sizes == [2, 4, 1]
    _close(grown.rows, analyze(nla, AnalysisInput(text=TEXT), OPTS, rows_budget=512, remaining=some).rows)
    assert {p.phase for p in heard} >= {"decoding", "encoding"}
    assert [p.done for p in heard] == sorted(p.done for p in heard)


def test_result_does_not_depend_on_which_positions_share_the_run(nla):
    whole = analyze(nla, AnalysisInput(text=TEXT), OPTS)
    subset = analyze(nla, AnalysisInput(text=TEXT), OPTS, remaining=[2, 5, 9])
    _close([r for r in whole.rows if r["position"] in (2, 5, 9)], subset.rows)


def test_seed_changes_the_sample_and_repeats_reproduce(nla):
    opts = AnalysisOptions(best_of_k=2, temperature=1.0, seed=7, salience=False)
    a = analyze(nla, AnalysisInput(text=TEXT), opts, remaining=[0, 1, 2])
    b = analyze(nla, AnalysisInput(text=TEXT), opts, remaining=[0, 1, 2])
    c = analyze(nla, AnalysisInput(text=TEXT), dataclasses.replace(opts, seed=8), remaining=[0, 1, 2])
    assert _key(a.rows) == _key(b.rows)
    assert _key(a.rows) != _key(c.rows)


def test_best_of_k_keeps_the_candidate_the_ar_reconstructs_best(nla):
    opts = AnalysisOptions(best_of_k=4, temperature=1.0, keep_candidates=True, salience=False)
    result = analyze(nla, AnalysisInput(text=TEXT), opts, remaining=[1, 4])
    for row in result.rows:
        cands = row["candidates"]
        assert len(cands) == 4 and len({tuple(c["explanation_token_ids"]) for c in cands}) > 1
        best = min(range(4), key=lambda j: (cands[j]["mse_nrm"], j))
        assert cands[best]["chosen"] and sum(c["chosen"] for c in cands) == 1
        for name in (
            "explanation_token_ids",
            "explanation",
            "mse_nrm",
            "cosine_similarity",
            "fve_nrm",
            "mse",
        ):
            assert cands[best][name] == row[name], name
        assert row["token_salience"] is None


def test_metrics_agree_with_their_definitions(nla):
    result = analyze(nla, AnalysisInput(text=TEXT), AnalysisOptions(temperature=1.0, salience=False))
    for row in result.rows:
        assert row["mse_nrm"] == pytest.approx(2 * (1 - row["cosine_similarity"]), abs=1e-5)
        assert row["fve_nrm"] == pytest.approx(1 - row["mse_nrm"] / 0.9065, rel=1e-12)
        assert 0 <= row["mse_nrm"] <= 4 and row["mse"] > 0
        assert "".join(row["explanation_tokens"]) == row["explanation"]


def test_salience_is_the_relative_change_of_mse_nrm_without_each_word(nla):
    import torch

    result = analyze(nla, AnalysisInput(text=TEXT), AnalysisOptions(temperature=1.0, seed=3), remaining=[3])
    row = result.rows[0]
    words = row["explanation_tokens"]
    assert len(words) >= 2 and len(row["token_salience"]) == len(words)
    from inference.metrics import orig_forward

    with torch.inference_mode():
        ids = torch.tensor(result.metadata["token_ids"])
        act = orig_forward(nla, ids, full=False).acts[3]
        texts = [without_word(words, j) for j in range(len(words))]
        ablated, _ = score(reconstruct(nla, texts), act.expand(len(texts), -1), nla.cfg.mse_scale)
    want = [(m - row["mse_nrm"]) / row["mse_nrm"] for m in ablated.tolist()]
    assert row["token_salience"] == pytest.approx(want, rel=1e-4, abs=1e-6)
    assert any(abs(s) > 1e-4 for s in row["token_salience"])


def test_word_removal_keeps_the_rest_of_the_text():
    words = [" Paris", " is", " in\n France. "]
    assert without_word(words, 1) == " Paris in\n France. "
    assert without_word(words, 0) == " is in\n France. "
    assert without_word(words, 2) == " Paris is"


def test_generation_stops_at_eos_and_leaves_it_out(nla):
    """A token the greedy AV emits made an EOS: each row ends just before its first occurrence, the rows that
    stop leave the batch, and the others go on exactly as before."""
    opts = AnalysisOptions(temperature=0.0, salience=False)
    plain = analyze(nla, AnalysisInput(text=TEXT), opts, limits=GREEDY)
    eos = plain.rows[0]["explanation_token_ids"][4]
    stopping = dataclasses.replace(nla, eos_ids=frozenset({eos}))
    result = analyze(stopping, AnalysisInput(text=TEXT), opts, limits=GREEDY)
    stopped = 0
    for row, before in zip(result.rows, plain.rows, strict=True):
        ids = before["explanation_token_ids"]
        cut = ids.index(eos) if eos in ids else len(ids)
        assert row["explanation_token_ids"] == ids[:cut]
        assert row["av_stop"] == ("eos" if eos in ids else "max_new_tokens")
        stopped += eos in ids
    assert 0 < stopped < len(result.rows)
    assert nla.metadata()["stop"]["eos_token_ids"] == [2]  # the lens' own, from generation_config.json


def test_stop_string_completes_exactly_once(nla):
    tok = nla.av_tokenizer
    for text in ("<explanation>\nA city in France.\n</explanation>", "a </explanation> and more"):
        ids = tok.encode(text, add_special_tokens=False)
        stopper = _StopString(tok)
        done = [stopper.completed(ids[: i + 1]) for i in range(len(ids))]
        first = done.index(True)
        assert "</explanation>" in tok.decode(ids[: first + 1])
        assert "</explanation>" not in tok.decode(ids[:first])


def test_max_new_tokens_is_the_lens_setting_and_bounded_by_the_limits(nla):
    result = analyze(nla, AnalysisInput(text="Hello there"), AnalysisOptions(temperature=1.0, salience=False))
    assert result.metadata["max_new_tokens"] == STEPS
    assert all(len(r["explanation_token_ids"]) == STEPS for r in result.rows)  # the untrained AV never stops
    short = analyze_nla(
        nla, AnalysisInput(text="Hello there"), AnalysisOptions(salience=False), max_new_tokens=3
    )
    assert all(len(r["explanation_token_ids"]) == 3 for r in short.rows)
    with pytest.raises(OptionError, match="max_new_tokens must be between 1 and 8"):
        analyze_nla(nla, AnalysisInput(text="Hi"), AnalysisOptions(), limits=Limits(max_new_tokens=8))


def test_cancel_stops_between_decode_steps_and_reports_partial_rows(nla):
    calls = {"n": 0}
    seen = []

    def should_cancel():
        calls["n"] += 1
        return len(seen) >= 2

    opts = AnalysisOptions(temperature=1.0, salience=False)
    result = analyze(
        nla, AnalysisInput(text=TEXT), opts, rows_budget=2, on_batch=seen.append, should_cancel=should_cancel
    )
    assert result.status == "cancelled"
    assert [r["position"] for r in result.rows] == [0, 1, 2, 3]
    assert calls["n"] >= 2 * STEPS  # checked at every decode step, not only between batches


def test_rows_arrive_per_batch_with_progress_and_can_be_stopped(nla):
    updates = []
    opts = AnalysisOptions(best_of_k=2, temperature=1.0, salience=False)
    result = analyze(
        nla, AnalysisInput(text=TEXT), opts, rows_budget=6, on_batch=updates.append, remaining=[4, 5, 6, 7, 8]
    )
    assert [len(u.rows) for u in updates] == [2, 3]  # a small first batch, then the budget's 3
    total = updates[0].total  # every position of the text; five of them are run here
    assert [u.done for u in updates] == [total - 3, total]
    assert [r["position"] for r in result.rows] == [4, 5, 6, 7, 8]
    stopped = analyze(nla, AnalysisInput(text=TEXT), opts, rows_budget=2, on_batch=lambda u: False)
    assert stopped.status == "stopped" and len(stopped.rows) == 1


def test_a_chat_is_rendered_with_the_base_template():
    gold = golden("tiny")["texts"]["T3chat"]
    nla = cached_nla(tiny_spec(max_new_tokens=STEPS))
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    result = analyze(nla, AnalysisInput(messages=chat), AnalysisOptions(salience=False), remaining=[14, 20])
    assert result.metadata["token_ids"] == gold["input_ids"]
    assert [r["token_id"] for r in result.rows] == [gold["input_ids"][14], gold["input_ids"][20]]


def test_kl_and_logit_lens_columns(nla):
    opts = AnalysisOptions(temperature=1.0, salience=False, kl=True, logit_lens=True)
    result = analyze(nla, AnalysisInput(text=TEXT), opts, remaining=[1, 2, 3])
    for row in result.rows:
        assert row["kl"] >= -1e-6 and len(row["logit_lens_top"]) == 10
    assert len({round(r["kl"], 6) for r in result.rows}) > 1
    assert "rescaled to the norm" in result.metadata["kl"]


def test_fve_is_null_without_a_variance_constant(nla):
    bare = dataclasses.replace(nla, cfg=dataclasses.replace(nla.cfg, variance=None, variance_source=None))
    result = analyze(bare, AnalysisInput(text="Hi"), AnalysisOptions(salience=False))
    assert all(r["fve_nrm"] is None and r["mse_nrm"] > 0 for r in result.rows)
    assert result.metadata["fve_variance"] is None


def test_metadata_says_what_computed_the_rows(nla):
    meta = analyze(nla, AnalysisInput(text="Hi"), AnalysisOptions(salience=False)).metadata
    assert meta["kind"] == "nla" and meta["layer"] == 2 and meta["ar_blocks"] == 3
    assert meta["identity"] == nla.identity and meta["options"]["seed"] == 42
    assert (meta["injection_scale"], meta["mse_scale"], meta["fve_variance"]) == (50.0, 8.0, 0.9065)
    assert meta["injection_position"] == 117
    # the folder's name: the server's path to it is not for users (exports, share links, the API)
    assert meta["base_model"] == "tiny-llama" and "/" not in meta["av"] + meta["ar"]


def test_cli_prints_the_contract_json(capsys):
    folder = nla_golden_dir() / "tiny"
    argv = ["analyze", "--checkpoint", str(folder), "--base-model", str(golden_dir() / "tiny-llama")]
    code = main([*argv, "--text", "Paris.", "--temperature", "0", "--max-new-tokens", "5", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metadata"]["kind"] == "nla" and out["metadata"]["max_new_tokens"] == 5
    assert len(out["rows"]) == 2
    for row in out["rows"]:
        for name in ("position", "token", "token_id", "explanation", "explanation_token_ids", "mse_nrm"):
            assert name in row
        assert len(row["explanation_token_ids"]) == 5 and isinstance(row["fve_nrm"], float)
        assert row["cosine_similarity"] == pytest.approx(1 - row["mse_nrm"] / 2, abs=1e-5)


def test_cli_refuses_nla_options_for_a_consistency_lens():
    with pytest.raises(SystemExit, match="--max-new-tokens: for NLA folders"):
        main(["analyze", "--checkpoint", "demo", "--text", "Hi", "--max-new-tokens", "4"])
