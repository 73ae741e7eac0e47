"""The demo lens' prompts: the measurement that chose them (bench/demo_prompts.py), the prompt placement in
inference/demo.py, and that what ships is what the bench table names."""

from __future__ import annotations

import re

import pytest
import torch

from bench import demo_prompts as dp
from inference import demo
from inference.analysis import analyze
from inference.lens import load_lens
from inference.registry import DEMO_SPEC, LensSpec
from inference.types import AnalysisInput, AnalysisOptions
from tests.conftest import REPO

from .golden import cached_lens

RESULTS = REPO / "bench" / "results" / "demo-prompts.md"


# --- the metric -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "words",
    [
        ("cat", "cats", "Cat"),
        ("run", "running", "runs"),
        ("study", "studies", "studied"),
        ("bake", "baked", "bakes", "baking"),
        ("play", "played", "plays", "playing"),
        ("box", "boxes"),
        ("stop", "stopped", "stopping"),
        ("teach", "teacher"),
    ],
)
def test_stem_joins_inflections(words):
    assert len({dp.stem(w) for w in words}) == 1, {w: dp.stem(w) for w in words}


@pytest.mark.parametrize(
    "a, b",
    [
        ("cat", "catalogue"),
        ("glass", "glas"),
        ("fall", "fail"),
        ("bus", "bu"),
        ("red", "read"),
        ("sing", "song"),
    ],
)
def test_stem_keeps_other_words_apart(a, b):
    assert dp.stem(a) != dp.stem(b)


def test_stem_leaves_short_words_and_own_final_s():
    assert [dp.stem(w) for w in ("is", "bed", "sing", "glass", "bus", "this")] == [
        "is",
        "bed",
        "sing",
        "glass",
        "bus",
        "this",
    ]


def test_content_positions_are_whole_content_words_after_position_0():
    # "Mice" at 0 is left out (position 0), " on"/" the" are stopwords, " windows"+"ill" is one word split
    # in two, "." is punctuation, " X" is one letter, " don" + "'t" a stopword.
    tokens = ["Mice", " slept", " on", " the", " windows", "ill", " X", " don", "'t", " jump", "."]
    assert dp.content_positions(tokens) == [1, 9]


def test_content_positions_after_punctuation_and_at_the_end():
    tokens = ["He", " said", ":", '"', "rain", '"', " today"]
    assert dp.content_positions(tokens) == [1, 4, 6]


def test_names_token_by_word_or_stem_not_by_substring():
    assert dp.names_token(" cats, a pet that purrs", " cat")
    assert dp.names_token("\nRunning: to move fast", " runs")
    assert dp.names_token(' "Museum": a building', " museum")
    assert not dp.names_token(" catalogue of the library", " cat")
    assert not dp.names_token(" something else entirely", " cat")


def test_names_share_counts_content_positions_only():
    rows = [{"position": p, "explanation": e} for p, e in enumerate(["x", " cats!", " of", " dog food"])]
    record = {"tokens": ["The", " cat", " of", " mice"], "rows": rows}
    # positions 1 (" cat": named) and 3 (" mice": "dog food" does not name it); " of" is a stopword
    assert dp.names_share([record]) == (1, 2)


def test_mean_rel_rmse_leaves_out_position_0():
    rows = [{"position": 0, "relative_rmse": 5.0}, {"position": 1, "relative_rmse": 0.4}]
    rows.append({"position": 2, "relative_rmse": 0.6})
    assert dp.mean_rel_rmse([{"rows": rows}]) == pytest.approx(0.5)


def test_choice_takes_the_namer_then_the_encoder_its_explanations_help():
    pairs = [{"name": "a", "names": 10.0}, {"name": "b", "names": 40.0}, {"name": "c", "names": 39.0}]
    cross = {
        ("a", "a"): 0.40, ("a", "b"): 0.50, ("a", "c"): 0.50,
        ("b", "a"): 0.45, ("b", "b"): 0.50, ("b", "c"): 0.48,
        ("c", "a"): 0.47, ("c", "b"): 0.49, ("c", "c"): 0.49,
        (dp.BLANK, "a"): 0.44, (dp.BLANK, "b"): 0.55, (dp.BLANK, "c"): 0.49,
    }  # fmt: skip
    # b and c tie on names (within 2 points); b's explanations beat the blank row only with encoders b and c
    # (0.45 under a is worse than a's blank 0.44), c's only with b: b with encoder c (0.48) wins
    assert dp.choose(pairs, cross) == ("b", "c")
    cross[(dp.BLANK, "c")] = 0.47  # now b's explanations help encoder b alone (0.50): c's 0.49 under b wins
    assert dp.choose(pairs, cross) == ("c", "b")
    pairs[2]["names"] = 20.0
    for enc in "abc":
        cross[(dp.BLANK, enc)] = 0.0  # no encoder is helped: the lowest rel. RMSE overall
    assert dp.choose(pairs, cross) == ("b", "a")


# --- prompt placement -------------------------------------------------------------------------------------


def test_split_prompts_places_every_part():
    assert demo.split_prompts("A <embed> B", "C<text>D") == ("A ", " B", "C", "D")
    assert demo.split_prompts("A <embed>", "C:<text>") == ("A ", "", "C:", "")


@pytest.mark.parametrize(
    "decoder, encoder, message",
    [
        ("no marker", "C<text>", "decoder prompt must hold <embed> exactly once"),
        ("<embed> and <embed>", "C<text>", "exactly once"),
        ("<embed> first", "C<text>", "decoder prompt needs text before <embed>"),
        ("A <embed>", "<text> first", "encoder prompt needs text before <text>"),
        ("A <embed>", "C <embed>", "encoder prompt must hold <text>"),
    ],
)
def test_split_prompts_rejects_misplaced_markers(decoder, encoder, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        demo.split_prompts(decoder, encoder)


@pytest.fixture(scope="module")
def tiny():
    """A real small model and tokenizer (the tests' tiny lens) to build demo tensors from."""
    from tests.conftest import tiny_lens

    built = tiny_lens()
    spec = LensSpec(id="tiny", name="tiny", checkpoint=str(built.checkpoint), base_model=str(built.base))
    return load_lens(spec, device="cpu")


def test_demo_checkpoint_puts_each_prompt_part_in_its_place(tiny):
    embed = tiny.model.get_input_embeddings().weight.detach().float()

    def rows(text):
        return embed[tiny.tokenizer.encode(text, add_special_tokens=False)]

    ckpt = demo.demo_checkpoint(tiny.model, tiny.tokenizer, "the cat <embed> sat", "a dog<text> ran")
    assert torch.equal(ckpt.decoder.prompt_left, rows("the cat "))
    assert torch.equal(ckpt.decoder.prompt_right, rows(" sat"))
    assert torch.equal(ckpt.encoder.soft_prompt, rows("a dog"))
    assert torch.equal(ckpt.encoder.soft_prompt_postfix, rows(" ran"))
    # nothing after <text>: no postfix, so the current token follows the explanation directly
    assert (
        demo.demo_checkpoint(tiny.model, tiny.tokenizer, "a <embed>", "b<text>").encoder.soft_prompt_postfix
        is None
    )


def test_demo_hash_follows_prompts_and_version(monkeypatch):
    default = demo.demo_sha256()
    assert default == demo.demo_sha256(demo.DECODER_PROMPT, demo.ENCODER_PROMPT)
    assert demo.demo_sha256("x <embed>", demo.ENCODER_PROMPT) != default
    assert demo.demo_sha256(demo.DECODER_PROMPT, "y<text>") != default
    config = demo.demo_config()
    assert (config["decoder_prompt"], config["encoder_prompt"]) == (demo.DECODER_PROMPT, demo.ENCODER_PROMPT)
    monkeypatch.setattr(demo, "DEMO_VERSION", demo.DEMO_VERSION + "x")
    assert demo.demo_sha256() != default  # a new version never reuses cached results


# --- what ships is what was measured ----------------------------------------------------------------------


def _chosen_prompts() -> tuple[str, str]:
    text = RESULTS.read_text(encoding="utf-8")
    found = {}
    for part in ("decoder", "encoder"):
        match = re.search(rf"^- chosen {part} prompt: `(.*)`$", text, re.MULTILINE)
        assert match, f"{RESULTS} names no chosen {part} prompt"
        found[part] = match.group(1).replace("\\n", "\n")  # the table writes newlines as \n
    return found["decoder"], found["encoder"]


def test_shipped_prompts_are_the_ones_the_bench_table_chose():
    assert _chosen_prompts() == (demo.DECODER_PROMPT, demo.ENCODER_PROMPT)
    # the research prompts were demo version 1; results cached under them must not be reused
    assert demo.DEMO_VERSION != "1"


def test_bench_table_lists_every_candidate_and_the_shipped_prompts_are_candidates():
    text = RESULTS.read_text(encoding="utf-8")
    for cand in dp.CANDIDATES:
        assert f"| {cand['name']} | **" in text, cand["name"]
    assert demo.DECODER_PROMPT in {c["decoder"] for c in dp.CANDIDATES}
    assert demo.ENCODER_PROMPT in {c["encoder"] for c in dp.CANDIDATES}


@pytest.mark.slow
def test_shipped_demo_lens_names_the_words_it_reads():
    """The real demo lens at the default options: its explanations name some content words, which the
    research prompts it replaced almost never did (bench/results/demo-prompts.md)."""
    lens = cached_lens(DEMO_SPEC)
    assert lens.ckpt.config["decoder_prompt"] == demo.DECODER_PROMPT
    records = []
    for text in ("My uncle drives a red truck to the farm.", "Fresh bread smells wonderful in the morning."):
        result = analyze(lens, AnalysisInput(text=text), AnalysisOptions(salience=False))
        ids = result.metadata["token_ids"]
        tokens = [lens.tokenizer.decode([i]) for i in ids]
        records.append({"tokens": tokens, "rows": sorted(result.rows, key=lambda r: r["position"])})
    hits, total = dp.names_share(records)
    assert total >= 8 and hits >= total // 4, (hits, total)
