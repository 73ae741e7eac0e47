"""The tests' own tiny lens, built in-process in about a second: a random 4-block Llama, a byte-level BPE
tokenizer trained on a fixed corpus, and a lens checkpoint in the research format (spec §9), shaped like
the golden tiny_patch2_percur (layer 1, T = 6, blocks 0-1 patched, per-layer projections, the current
token added). Same seed, same bytes: every run of the suite sees the same lens.

Only the fidelity tests need the golden files; everything else runs on this, so a plain clone tests itself.
It lives under tests/ (not inference/) because nothing the app ships should train tokenizers or make up
weights; a benchmark that wants it can import `tests.tinylens` from the repository root.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

SEED = 1001
HIDDEN = 64  # the golden tiny-llama's sizes, so that timings and shapes match what the tests were tuned on
BLOCKS = 4
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 16
INTERMEDIATE = 128
LAYER = 1
T_TEXT = 6
PATCHED_BLOCKS = 2
VOCAB_SIZE = 4096  # a bound: the trainer stops once every corpus word is one token

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [
    ENDOFTEXT,
    IM_START,
    IM_END,
]  # ids 0, 1, 2, as in SmolLM2: bos = <|im_start|>, eos = <|im_end|>
# ChatML with a default system turn, the shape of SmolLM2's template (so chat inputs tokenize alike).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Other template shapes, on the same tokens, for the chat tests (tokenizer_with_chat_template):
# ChatML with no default system turn;
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Gemma's shape: no system role (it raises), the assistant is "model";
NO_SYSTEM_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<|im_start|>' + role + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>model\n' }}{% endif %}"
)
# and one that drops system turns without a word.
SYSTEM_DROPPING_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
DECODER_PROMPT = "Short explanation of <embed>. Language, topic, sentiment, claims, speaker, style, etc:"
ENCODER_PROMPT = "Summary of the text, encapsulating the main points and message, style and details:<text>"

# What the tokenizer learns from: common English words and the words the tests' inputs use, each one token
# wherever it stands (text start, after a space, capitalised), so that short inputs have about as many
# tokens as with a real tokenizer (the golden SmolLM2 one). The tests count on some: single letters and number
# words are one token each ("a b c d e" is 5 tokens); "Eiffel" is two ("The Eiffel Tower is in Paris" is 7).
WORDS = """
a b c d e f g h i j k l m n o p q r s t u v w x y z
one two three four five six seven eight nine ten first second third last next number numbers
the of and to in is it that for was on are as with his they at be this have from or had by not but what
all were we when your can said there use an each which she do how their if will up other about out many
then them these so some her would make like him into time has look more write go see way could people my
than been call who its now find long down day did get come made may part over new after also back any
only our own same here why where much through before must home big high such because does each well just
very even most still old great tell never few while last might far too shall yes no please thank thanks
hello hi hey there world text texts another different itself entirely private secret prompt prompts job
jobs cancel me fail will early bird ring some plain queued never stored notebook laptop admin web matrix
tiny lens lenses test tests model models user users alice bob carol staff key keys from logout change
after beep robot role content system assistant message messages reply json true false null none
capital france paris famous tower towers history art city river bank quick brown fox jumps lazy
dog near once upon gave red apple hungry walked together tall terse
old lighthouse keeper climbed spiral stairs every evening carrying brass lantern thermos sweet tea top
he could see fishing boats returning harbour lights flickering like fireflies against darkening sea
short explanation embed language topic sentiment claims speaker style etc summary encapsulating main
points message details meaning context story word words sentence analysis token tokens
"""
CORPUS = [
    *(joint.join(words) for joint in (" ", "\n") for words in (WORDS.split(), WORDS.title().split())),
    "E-iffel",  # "iffel" alone: " Eiffel" is " E" + "iffel"
    "Alice's prompt, alice's secret text; it's, don't, I'm, we're, you've, he'll, she'd.",
    '[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]',
    "0 1 2 3 4 5 6 7 8 9 + - * / = < > ( ) [ ] { } ' \" ` ~ ! @ # $ % ^ & _ | \\ : ; , . ? ...",
    *("  ", "   ", "    ", "\n\n", "   \n", "\t\t"),
]


@dataclass(frozen=True)
class TinyLens:
    checkpoint: Path
    base: Path


def build_tiny_lens(directory: Path) -> TinyLens:
    """Write <directory>/tiny-llama/ (model + tokenizer) and <directory>/tiny_patch2_percur.pt."""
    directory.mkdir(parents=True, exist_ok=True)
    base = directory / "tiny-llama"
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(base)
    embeddings = write_base_model(base, vocab_size=len(tokenizer))
    checkpoint = directory / "tiny_patch2_percur.pt"
    write_checkpoint(checkpoint, embeddings, tokenizer)
    return TinyLens(checkpoint=checkpoint, base=base)


def build_tokenizer():
    """SmolLM2's pipeline (digits split, GPT-2 byte level, no BOS/EOS added to plain text) on a small BPE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=IM_START,
        eos_token=IM_END,
        pad_token=IM_END,
        unk_token=ENDOFTEXT,
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
        chat_template=CHAT_TEMPLATE,
    )


def tokenizer_with_chat_template(tokenizer, chat_template: str):
    """A copy of `tokenizer` (same tokens and ids) whose chat template is `chat_template`."""
    import copy

    other = copy.deepcopy(tokenizer)
    other.chat_template = chat_template
    return other


def write_base_model(directory: Path, vocab_size: int):
    """A random LlamaForCausalLM saved as a plain HF directory; returns its embedding table.

    The golden tiny-llama's recipe (shared/golden/README.md §2.2), drawn from our own generator: embeddings
    ~ N(0, 1), Linear weights ~ mult/sqrt(fan_in) with stronger residual writes and sharper attention, norms
    near 1. Plain 1/sqrt(fan_in) weights make every explanation the same repeated token."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=BLOCKS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    model = LlamaForCausalLM(config)  # its own init is overwritten below, from our generator
    generator = torch.Generator().manual_seed(SEED)
    multiplier = {"o_proj": 3.0, "down_proj": 3.0, "q_proj": 2.0, "k_proj": 2.0}
    with torch.no_grad():
        for name, parameter in model.named_parameters():  # the tied lm_head comes once, as embed_tokens
            noise = torch.randn(parameter.shape, generator=generator)
            if name.endswith("norm.weight"):
                parameter.copy_(1 + 0.1 * noise)
            elif "embed_tokens" in name:
                parameter.copy_(noise)
            else:
                module = name.split(".")[-2]
                parameter.copy_(noise * multiplier.get(module, 1.0) / math.sqrt(parameter.shape[1]))
    with _quiet_transformers():
        model.save_pretrained(directory)
    return model.get_input_embeddings().weight.detach().clone()


def write_checkpoint(path: Path, embeddings, tokenizer) -> None:
    """{config, models: {decoder, encoder}} as the research trainer saves it, numpy RNG state included (real
    checkpoints carry it, and the loader must take it). Prompts are their tokens' embeddings plus noise and
    projections the identity plus noise, as in the golden lens (a): not an identity lens."""
    import numpy
    import torch

    generator = torch.Generator().manual_seed(SEED + 1)

    def noise(*shape, std):
        return torch.randn(*shape, generator=generator) * std

    def embedded(text: str):
        return embeddings[tokenizer.encode(text, add_special_tokens=False)]

    left, right = DECODER_PROMPT.split("<embed>")
    encoder_text = ENCODER_PROMPT.split("<text>")[0]
    eye = torch.eye(HIDDEN)
    decoder = {
        "proj_weight": torch.stack([eye + noise(HIDDEN, HIDDEN, std=0.05) for _ in range(PATCHED_BLOCKS)]),
        "proj_bias": noise(PATCHED_BLOCKS, HIDDEN, std=0.25),
    }
    decoder["prompt_left_emb"] = embedded(left) + noise(len(embedded(left)), HIDDEN, std=0.1)
    decoder["prompt_right_emb"] = embedded(right) + noise(len(embedded(right)), HIDDEN, std=0.1)
    decoder["prompt_ids"] = torch.tensor(tokenizer.encode(left + right, add_special_tokens=False))
    soft_prompt = embedded(encoder_text)
    encoder = {
        "soft_prompt_embeddings": soft_prompt + noise(*soft_prompt.shape, std=0.1),
        "proj.weight": eye + noise(HIDDEN, HIDDEN, std=0.05),
        "proj.bias": noise(HIDDEN, std=0.25),
        "special_last_token_vector": noise(HIDDEN, std=0.2),
    }
    torch.save(
        {
            "config": _lens_config(path.parent / "tiny-llama"),
            "models": {"decoder": decoder, "encoder": encoder},
            "rng_states": {
                "torch": torch.Generator().manual_seed(SEED).get_state(),
                "cuda": None,
                "numpy": numpy.random.RandomState(SEED).get_state(),
            },
            "step": 0,
            "epoch": 0,
            "tau": 0.1,
        },
        path,
    )


def _lens_config(base: Path) -> dict:
    return {
        "model_name": base.name,
        "tokenizer_name": base.name,
        "layer_l": LAYER,
        "t_text": T_TEXT,
        "decoder_prompt": DECODER_PROMPT,
        "encoder_prompt": ENCODER_PROMPT,
        "trainable_components": {
            "decoder": {
                "projection_layer": True,
                "trainable_prompts": True,
                "patch_all_layers": PATCHED_BLOCKS,
                "per_layer_projections": True,
            },
            "encoder": {
                "use_base_model": True,
                "projection_layer": True,
                "use_projection_layer": True,
                "trainable_soft_prompt": True,
                "output_layer": LAYER,
                "soft_prompt_init_text": ENCODER_PROMPT,
                "special_last_token_vector": True,
                "add_current_token": True,
            },
        },
        "run_name": "tests_tiny_patch2_percur",
        "note": "random (untrained) test lens built by tests/tinylens.py",
    }


@contextlib.contextmanager
def _quiet_transformers():
    """No "Writing model shards" progress bar in the test log."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()
