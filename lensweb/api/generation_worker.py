"""One generation at a time, for the core's worker to call between analysis jobs.

    process_one_generation(worker_record, get_lens) -> bool

claims the oldest queued generation, runs it with `get_lens(lens_id)` (the worker's own lens cache, so a
generation on the loaded lens costs no load), stores the result or the failure, and says whether it did
any work. Synchronous and blocking: call it off the event loop, as the worker runs analyses.
"""

from __future__ import annotations

import logging
import time

from inference.errors import LensError

from . import services

log = logging.getLogger("lensweb.worker.generations")


def process_one_generation(worker_record, get_lens) -> bool:
    services.requeue_stale_generations()
    generation = services.claim_next_generation(worker_record)
    if generation is None:
        return False
    started = time.monotonic()
    timings: dict = {}
    try:
        lens = get_lens(generation.lens_id)
        timings["load_s"] = round(time.monotonic() - started, 3)
        services.run_generation(lens, generation, services.cancel_checker(generation.pk), timings=timings)
    except LensError as exc:
        services.do_fail_generation(generation.pk, worker_record.pk, str(exc), timings)
    except Exception as exc:
        log.exception("generation %s failed", generation.pk)
        services.do_fail_generation(
            generation.pk, worker_record.pk, f"internal error ({type(exc).__name__}): {exc}", timings
        )
    return True
