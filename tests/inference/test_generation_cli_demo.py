"""Generation (spec §8), the command-line tool, and the bundled demo lens on the real SmolLM2."""

import json
import subprocess
import sys

import pytest

from inference.analysis import analyze
from inference.errors import OptionError
from inference.generation import end_of_turn_ids, generate
from inference.registry import DEMO_SPEC
from inference.types import AnalysisInput, AnalysisOptions, GenerationOptions

from .golden import REPO, cached_lens, golden_dir


def test_continuations_are_seeded_and_sized(tiny_lens):
    opts = GenerationOptions(n=3, max_new_tokens=5, temperature=1.0, top_p=0.9, seed=3)
    a = generate(tiny_lens, AnalysisInput(text="Once upon a time"), opts)
    b = generate(tiny_lens, AnalysisInput(text="Once upon a time"), opts)
    assert a["samples"] == b["samples"] and len(a["samples"]) == 3
    assert all(len(s["token_ids"]) == 5 for s in a["samples"])
    assert a["prompt"] == "Once upon a time"
    c = generate(
        tiny_lens, AnalysisInput(text="Once upon a time"), GenerationOptions(n=3, max_new_tokens=5, seed=4)
    )
    assert c["samples"] != a["samples"]


def test_greedy_samples_repeat_the_argmax_continuation(tiny_lens):
    out = generate(
        tiny_lens, AnalysisInput(text="Once"), GenerationOptions(n=3, max_new_tokens=4, temperature=0)
    )
    assert len(out["samples"]) == 3 and out["samples"][0] == out["samples"][1] == out["samples"][2]


def test_generation_options_are_bounded(tiny_lens):
    with pytest.raises(OptionError, match="chat_reply"):
        generate(tiny_lens, AnalysisInput(text="x"), GenerationOptions(chat_reply="yes"))
    with pytest.raises(OptionError, match="max_new_tokens"):
        generate(tiny_lens, AnalysisInput(text="x"), GenerationOptions(max_new_tokens=10_000))
    with pytest.raises(OptionError, match="top_p"):
        generate(tiny_lens, AnalysisInput(text="x"), GenerationOptions(top_p=0))


def test_cancelled_generation_stops_early(tiny_lens):
    out = generate(
        tiny_lens, AnalysisInput(text="x"), GenerationOptions(max_new_tokens=50), should_cancel=lambda: True
    )
    assert out["cancelled"] and len(out["samples"][0]["token_ids"]) < 50


def test_cli_analyze_json(tmp_path):
    ckpt = golden_dir() / "checkpoints" / "tiny_patch2_percur.pt"
    base = golden_dir() / "tiny-llama"
    cmd = [
        sys.executable,
        "-m",
        "inference",
        "analyze",
        "--checkpoint",
        str(ckpt),
        "--base-model",
        str(base),
        "--text",
        "Hello world",
        "--best-of-k",
        "2",
        "--salience",
        "--kl",
        "--logit-lens",
        "--json",
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    assert data["metadata"]["layer"] == 1 and data["metadata"]["options"]["best_of_k"] == 2
    keys = {
        "position",
        "token",
        "token_id",
        "explanation",
        "explanation_tokens",
        "explanation_token_ids",
        "token_salience",
        "mse",
        "relative_rmse",
        "kl",
        "logit_lens_top",
    }
    assert [r["token"] for r in data["rows"]] == ["Hello", " world"]
    for row in data["rows"]:
        assert keys <= set(row)
        assert len(row["explanation_token_ids"]) == 6 and len(row["token_salience"]) == 6
        assert row["kl"] >= 0 and len(row["logit_lens_top"]) == 6


def test_cli_scores_a_rows_own_explanation_as_the_row():
    """`--score POSITION --explanation-ids …` gives the row's numbers back: the round trip, on the command line."""
    ckpt = golden_dir() / "checkpoints" / "tiny_patch2_percur.pt"
    base = golden_dir() / "tiny-llama"
    cmd = [sys.executable, "-m", "inference", "analyze", "--checkpoint", str(ckpt), "--base-model", str(base)]
    cmd += ["--text", "Hello world", "--json"]
    row = json.loads(subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout)[
        "rows"
    ][1]
    ids = [str(i) for i in row["explanation_token_ids"]]
    mine = subprocess.run(
        [*cmd, "--score", "1", "--explanation-ids", *ids], cwd=REPO, capture_output=True, text=True
    )
    scored = json.loads(mine.stdout)
    assert (
        scored["mse"] == pytest.approx(row["mse"], rel=1e-4) and scored["explanation"] == row["explanation"]
    )
    assert scored["relative_rmse"] == pytest.approx(row["relative_rmse"], rel=1e-4)
    text = subprocess.run(
        [*cmd[:-1], "--score", "-1", "--explanation", "a greeting"], cwd=REPO, capture_output=True, text=True
    )
    assert text.returncode == 0 and "mse=" in text.stdout and "salience:" in text.stdout
    alone = subprocess.run([*cmd, "--explanation", "a greeting"], cwd=REPO, capture_output=True, text=True)
    assert alone.returncode == 1 and "--score POSITION goes with" in alone.stderr


def test_cli_reports_errors_without_a_traceback(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "inference",
        "analyze",
        "--checkpoint",
        str(tmp_path / "missing.pt"),
        "--text",
        "x",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "checkpoint not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def demo_lens():
    return cached_lens(DEMO_SPEC)


@pytest.mark.slow
def test_demo_lens_explains_smollm2(demo_lens):
    meta = demo_lens.metadata()
    assert meta["untrained"] and "untrained" in meta["description"] and meta["layer"] == 8
    result = analyze(
        demo_lens,
        AnalysisInput(text="The Eiffel Tower is in Paris."),
        AnalysisOptions(temperature=1.0, seed=1),
    )
    assert len(result.rows) == 8 and result.status == "done"
    for row in result.rows:
        assert len(row["explanation_token_ids"]) == 8 and row["mse"] > 0 and len(row["token_salience"]) == 8
    # identity projections: the explanation of a mid-sentence token reconstructs far better than position 0's
    assert result.rows[6]["relative_rmse"] < result.rows[0]["relative_rmse"]


@pytest.mark.slow
def test_demo_chat_reply_stops_at_end_of_turn(demo_lens):
    out = generate(
        demo_lens,
        AnalysisInput(messages=[{"role": "user", "content": "What is the capital of France?"}]),
        GenerationOptions(max_new_tokens=40, temperature=0.0),
    )
    sample = out["samples"][0]
    assert "Paris" in sample["text"] and sample["finished"]
    assert not set(sample["token_ids"]) & set(end_of_turn_ids(demo_lens.tokenizer))
