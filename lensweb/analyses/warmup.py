"""A web process reads its lenses' tokenizers (and the result cache their identities) in the background as it
starts, so that the first submission after a start answers at once instead of waiting seconds for
transformers to import and a tokenizer to load. Tokenizers only: models load in workers, never here."""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings

log = logging.getLogger(__name__)
_started = threading.Event()
_done = threading.Event()


def warm_tokenizers() -> None:
    """Every lens' tokenizer and identity, read now; a broken lens is logged and says so on submit."""
    from inference.types import AnalysisInput, AnalysisOptions

    from . import store
    from .engine import get_engine
    from .limits import limits

    started = time.monotonic()
    engine = get_engine()
    for spec in engine.lenses():
        try:
            engine.prepare(spec, AnalysisInput(text="warm up"), AnalysisOptions(), limits())
            store.result_store.warm(spec)
        except Exception as exc:
            log.warning("could not read the tokenizer of lens %s: %s", spec.id, exc)
    log.info("tokenizers read in %.1f s", time.monotonic() - started)


def _warm_then_say_so() -> None:
    try:
        warm_tokenizers()
    finally:
        _done.set()  # a failed warm-up is logged; it must not keep the site "not ready" for ever


def is_warm() -> bool:
    """False while the start-up warm-up runs: /readyz says not ready meanwhile, so that a load balancer
    sends no submission that would wait for it."""
    return not _started.is_set() or _done.is_set()


def wait_until_warm(timeout: float) -> bool:
    """The embedded worker's first load waits for the warm-up: transformers' lazy imports are not safe from
    two threads at once."""
    return not _started.is_set() or _done.wait(timeout)


def warm_tokenizers_soon() -> None:
    """Once per process, in a daemon thread (LENSWEB_WARM_TOKENIZERS=false: not at all)."""
    if not settings.LENSWEB_WARM_TOKENIZERS or _started.is_set():
        return
    _started.set()
    threading.Thread(target=_warm_then_say_so, name="warm-tokenizers", daemon=True).start()
