"""The web app's side of the engine's one door (inference.engine, torch-free at import): tokenizers and the
loaded lens cached per process, and a lens loads only where a worker asks for it."""

from __future__ import annotations

import os
import threading
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from inference import engine as core
from inference.limits import DEFAULT_LIMITS

from .lenscache import LensCache

ENGINE_ALIASES = {"inference": "lensweb.analyses.engine.InferenceEngine"}

# The lenses this process holds (one on the device, recent ones in CPU memory): its workers share them.
_cache: LensCache | None = None
_cache_lock = threading.Lock()


def lens_cache() -> LensCache:
    """This process' lens cache, sized by LENSWEB_CPU_CACHE_BYTES and LENSWEB_IDLE_UNLOAD_S."""
    global _cache
    with _cache_lock:
        if _cache is None:
            _cache = LensCache(
                load=core.load,
                move=core.move,
                nbytes=core.nbytes,
                free=core.free_memory,
                cpu_budget=settings.LENSWEB_CPU_CACHE_BYTES,
                idle_unload_s=settings.LENSWEB_IDLE_UNLOAD_S,
            )
        return _cache


def files_stamp(spec) -> tuple:
    """Names, sizes and mtimes of the lens' files: a checkpoint replaced at the same path loads anew."""
    stamp = []
    for location in core.files(spec):
        path = location and os.path.expanduser(location)
        try:
            if path and os.path.isdir(path):
                entries = sorted(os.scandir(path), key=lambda e: e.name)
                stamp.append(tuple((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries))
            elif path and os.path.exists(path):
                info = os.stat(path)
                stamp.append((info.st_size, info.st_mtime_ns))
            else:
                stamp.append(None)  # "demo", a hub name, or missing (loading says which)
        except OSError:
            stamp.append(None)
    return tuple(stamp)


class InferenceEngine:
    """Adapter over `inference`: registry, cheap tokenizer (cached per lens), lens loading (one lens per
    process, cached), analysis and generation."""

    def __init__(self):
        self._lock = threading.Lock()
        self._registry = None  # (the LENSWEB_LENS_REGISTRY it was read from, LensRegistry)
        self._tokenizers: dict[Any, tuple[tuple, Any]] = {}  # spec -> (its files' stamp, tokenizer)
        self._tokenizer_locks: dict[Any, threading.Lock] = {}  # spec -> the lock its tokenizer loads under
        self._widths: dict[tuple, int] = {}  # (spec, its files' stamp) -> its activations' width

    def registry(self):
        """The registry LENSWEB_LENS_REGISTRY names; read again only when that variable changes."""
        path = os.environ.get("LENSWEB_LENS_REGISTRY") or None
        with self._lock:
            if self._registry is None or self._registry[0] != path:
                self._registry = (path, core.load_registry(path))
            return self._registry[1]

    def lenses(self) -> list:
        return list(self.registry().lenses)

    def default_lens(self):
        return self.registry().default

    def get_spec(self, lens_id: str):
        return self.registry().get(lens_id)

    def lens_notes(self, spec) -> dict[str, Any]:
        """What the page says about a lens before any job has loaded it (the demo lens is the untrained,
        Patchscope-style one; a loaded lens' metadata says `untrained` too)."""
        return {"untrained": spec.untrained, "description": spec.description or ""}

    def tokenizer(self, spec):
        """Cached per lens while its files are unchanged (a replaced or broken checkpoint is read again,
        so the error shows here, before a worker lets go of the lens it holds). Loaded once: concurrent
        first submissions for a lens wait on its lock for the one load."""
        stamp = files_stamp(spec)
        with self._lock:
            lock = self._tokenizer_locks.setdefault(spec, threading.Lock())
        with lock:
            cached = self._tokenizers.get(spec)
            if cached is None or cached[0] != stamp:
                cached = self._tokenizers[spec] = (stamp, core.tokenizer(spec))
        return cached[1]

    def width(self, spec) -> int:
        """The width of the activations the lens explains (cached while its files are unchanged)."""
        key = ("width", spec, files_stamp(spec))
        with self._lock:
            if key in self._widths:
                return self._widths[key]
        value = core.width(spec)
        with self._lock:
            self._widths[key] = value
        return value

    def identity(self, spec) -> str:
        """What `load(spec).identity` will be, without loading weights: a hash of its files (cache keys)."""
        return core.identity(spec)

    def prepare(self, spec, inp, options, limits):
        return core.prepare_input(self.tokenizer(spec), inp, options, limits)

    def acquire(self, spec):
        """The loaded lens of `spec` on the device, in use until release(): the one held if its files are
        unchanged, else from the CPU cache or loaded now (slow: seconds), once no job uses the lens it replaces
        (lenscache.LensCache)."""
        return lens_cache().acquire(spec, (spec, files_stamp(spec)))

    def release(self, spec) -> None:
        lens_cache().release()

    def load(self, spec):
        """The loaded lens of `spec`, for a caller outside a job (tests, benchmarks): acquired and released."""
        try:
            return self.acquire(spec)
        finally:
            self.release(spec)

    def last_load_source(self) -> str:
        """Where the last acquire() took its lens from: "disk", "cpu_cache" or "held"."""
        last = lens_cache().last
        return last.source if last else ""

    def tidy(self, pinned=frozenset(), unload=frozenset()) -> bool:
        """Staff's pins applied, an idle device copy and the lenses staff unloaded let go (LensCache.tidy)."""
        cache = lens_cache()
        cache.pinned = set(pinned)
        return cache.tidy(set(unload))

    def held(self) -> dict[str, Any]:
        """What this process holds: the lens on the device (its id, the device) and those in the CPU cache."""
        cache = lens_cache()
        state, on_device = cache.state(), cache.on_device
        return {
            "lens_id": state["device"][0] if state["device"] else "",
            "device": on_device.home if on_device else "",
            "cached": state["cpu_cache"],
        }

    def holds(self, spec) -> bool:
        """Whether `spec`'s lens is on the device now, its files unchanged (no load before its job)."""
        return lens_cache().holds((spec, files_stamp(spec)))

    def metadata(self, lens, prepared=None) -> dict[str, Any]:
        """The lens' metadata; with `prepared`, a job's too: the positions it analyses, its token ids (what a
        later text's prefix is matched against: analyses.prefixes) and the glyphs split over its tokens."""
        metadata = dict(lens.metadata())
        if prepared is not None:
            metadata.update(positions=list(prepared.positions), token_ids=list(prepared.token_ids))
            metadata.update(prepared.glyph_metadata())
        return metadata

    def analyze(self, lens, inp, options, **kwargs):
        return core.analyze(lens, inp, options, **kwargs)

    def begin(self, lens, inp, options, **kwargs):
        """One text's analysis as a task for shared batches (inference.sharing): analyze()'s keywords."""
        return core.begin(lens, inp, options, **kwargs)

    def shared_batches(self, lens, task, rows_budget=None):
        """Batches that `task` and later tasks of its lens and option set share, owners taking turns."""
        return core.shared_batches(lens, task.options, task.steps, rows_budget)

    def score(self, lens, inp, options, position, **kwargs):
        return core.score(lens, inp, options, position, **kwargs)

    def activations(self, lens, inp, positions, **kwargs) -> list[list[float]]:
        return core.activations(lens, inp, positions, **kwargs)

    def describe(self, lens, vectors, options, **kwargs):
        return core.describe(lens, vectors, options, **kwargs)

    def generate(
        self, lens, inp, options, should_cancel=None, *, limits=None, on_tokens=None, stream_every=None
    ) -> dict[str, Any]:
        """Continuations or a chat reply: `inference.generation.generate`'s result dict. `on_tokens` gets
        each sample's new token ids so far as they are produced (every `stream_every` tokens)."""
        every = {"stream_every": stream_every} if stream_every else {}
        return core.generate(
            lens,
            inp,
            options,
            should_cancel=should_cancel,
            limits=limits or DEFAULT_LIMITS,
            on_tokens=on_tokens,
            **every,
        )

    def chat_info(self, spec) -> dict[str, Any]:
        """What the lens' chat template does with system turns (inference.chat.ChatTemplateInfo as a dict):
        cheap, from the cached tokenizer, so a page may ask on every render."""
        return core.chat_template_info(self.tokenizer(spec)).to_dict()


_engines: dict[str, Any] = {}


def get_engine():
    """The engine settings.LENSWEB_ENGINE names ("inference", or a dotted path to a class with the same
    methods); one instance per process (it caches tokenizers)."""
    path = ENGINE_ALIASES.get(settings.LENSWEB_ENGINE, settings.LENSWEB_ENGINE)
    engine = _engines.get(path)
    if engine is None:
        engine = _engines[path] = import_string(path)()
    return engine
