"""Glyphs split over tokens (inference.glyphs): a byte-level tokenizer's fragments of one character found and
joined, with the tests' tiny tokenizer (SmolLM2's pipeline on a small BPE: "é" is two byte tokens) and with
SmolLM2's own."""

from __future__ import annotations

import pytest

from inference.glyphs import REPLACEMENT, glyph_metadata, glyph_spans
from inference.inputs import prepare_input
from inference.types import AnalysisInput
from tests.conftest import tiny_tokenizer

MIXED = "café ☕ 😀 naïve"
CJK = "東京タワーは日本語のテキスト"


def fragments(tokenizer, ids) -> set[int]:
    return {i for i, token_id in enumerate(ids) if REPLACEMENT in tokenizer.decode([token_id])}


def check_spans(tokenizer, text: str, glyphs: list[str]):
    """The spans cover exactly the fragment positions, in order, each joined text its glyph (with the space
    before it where its first token holds one), and the tokens outside them decode as before."""
    ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    spans = glyph_spans(tokenizer, ids)
    covered = [p for start, end, _ in spans for p in range(start, end)]
    assert covered == sorted(fragments(tokenizer, ids))
    assert all(end - start >= 2 for start, end, _ in spans)
    for start, end, joined in spans:
        assert joined == tokenizer.decode(ids[start:end]) and REPLACEMENT not in joined
    assert [joined.strip() for _, _, joined in spans] == glyphs
    return ids, spans


def test_tiny_tokenizer_splits_accents_and_emoji_and_each_is_joined():
    tokenizer = tiny_tokenizer()
    ids, spans = check_spans(tokenizer, MIXED, ["é", "☕", "😀", "ï"])
    assert spans[0][:2] == (3, 5)  # c a f + é's two bytes
    assert "".join(tokenizer.decode([i]) for i in ids).count(REPLACEMENT) == 2 + 3 + 4 + 2


def test_cjk_gives_one_span_per_glyph():
    tokenizer = tiny_tokenizer()
    check_spans(tokenizer, CJK, list(CJK))


def test_plain_ascii_and_a_text_of_its_own_replacement_character_give_none():
    tokenizer = tiny_tokenizer()
    for text in ("The Eiffel Tower is in Paris.", "a \ufffd b"):
        assert glyph_spans(tokenizer, tokenizer(text).input_ids) == []
    assert glyph_metadata([]) == {}


def test_prepared_input_carries_them_and_the_tokens_stay_each_ids_own_decode():
    tokenizer = tiny_tokenizer()
    prepared = prepare_input(tokenizer, AnalysisInput(text=MIXED))
    assert prepared.tokens == [tokenizer.decode([i]) for i in prepared.token_ids]
    assert prepared.glyphs == glyph_spans(tokenizer, prepared.token_ids)
    assert prepared.glyph_metadata() == {"glyphs": [list(span) for span in prepared.glyphs]}
    assert prepare_input(tokenizer, AnalysisInput(text="hello world")).glyph_metadata() == {}


def test_the_engine_result_metadata_has_them(tiny_lens):
    from inference.analysis import analyze
    from inference.types import AnalysisOptions

    result = analyze(tiny_lens, AnalysisInput(text=MIXED), AnalysisOptions(positions=(0,)))
    spans = glyph_spans(tiny_lens.tokenizer, result.metadata["token_ids"])
    assert spans and result.metadata["glyphs"] == [list(span) for span in spans]
    plain = analyze(tiny_lens, AnalysisInput(text="hello world"), AnalysisOptions(positions=(0,)))
    assert "glyphs" not in plain.metadata


@pytest.mark.slow
def test_smollm2_tokenizer(smol_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smol_base)
    ids, spans = check_spans(tokenizer, MIXED, ["☕", "😀"])  # é and ï are tokens of their own there
    assert [text for _, _, text in spans] == [" ☕", " 😀"]
    check_spans(tokenizer, "東京タワー", ["東", "京", "タ", "ワ"])
    assert glyph_spans(tokenizer, tokenizer("hello world — plain").input_ids) == []
