"""One generation at a time, for the core's worker to call between analysis jobs.

    process_one_generation(worker_record, get_lens, stopping=lambda: False) -> bool

claims the oldest queued generation, runs it with `get_lens(lens_id)` (the worker's own lens cache, so a
generation on the loaded lens costs no load), stores the result or the failure, and says whether it did
any work. Synchronous and blocking: call it off the event loop, as the worker runs analyses. A database
error while it runs hands the generation back to the queue (it stores nothing until it ends, so it starts
again); only engine errors fail it.
"""

from __future__ import annotations

import logging
import math
import time

from django.conf import settings

from inference.errors import LensError
from lensweb.analyses.worker import DATABASE_AWAY, retry_while_database_away

from . import services
from .models import Generation

log = logging.getLogger("lensweb.worker.generations")

Status = Generation.Status


def process_one_generation(worker_record, get_lens, stopping=lambda: False) -> bool:
    services.requeue_stale_generations()
    generation = services.claim_next_generation(worker_record)
    if generation is None:
        return False
    started = time.monotonic()
    timings: dict = {}
    pk, worker_id = generation.pk, worker_record.pk
    try:
        lens = get_lens(generation.lens_id)
        timings["load_s"] = round(time.monotonic() - started, 3)
        services.run_generation(lens, generation, services.cancel_checker(generation.pk), timings=timings)
    except LensError as exc:
        error = str(exc)
        outcome = "fail", lambda: services.do_fail_generation(pk, worker_id, error, timings)
    except DATABASE_AWAY as exc:
        error = f"{type(exc).__name__}: {exc}"
        log.warning("generation %s: database error (%s); handing it back to the queue", pk, error)
        outcome = "hand back", lambda: hand_back(pk, worker_id, error)
    except Exception as exc:
        log.exception("generation %s failed", generation.pk)
        error = f"internal error ({type(exc).__name__}): {exc}"
        outcome = "fail", lambda: services.do_fail_generation(pk, worker_id, error, timings)
    else:
        return True
    # Written until the database answers: a generation's stale rule is its worker's death, so one this
    # live worker gave up on would stay running. Only a stopping worker gives up (then the rule applies).
    what, action = outcome
    retry_while_database_away(action, f"{what} generation {pk}", math.inf, stopping)
    return True


def hand_back(generation_id: int, worker_id: int, error: str) -> bool:
    """After a database error: queued again, or failed once it has used up its attempts (the claim counted
    this one), or cancelled if that was asked for."""
    mine = Generation.objects.filter(pk=generation_id, worker_id=worker_id, status=Status.RUNNING)
    generation = mine.only("attempts", "cancel_requested").first()
    if generation is None:
        return False
    if generation.cancel_requested:
        return services.do_finish_generation(generation_id, worker_id, Status.CANCELLED)
    if generation.attempts >= settings.LENSWEB_MAX_ATTEMPTS:
        return services.do_fail_generation(
            generation_id,
            worker_id,
            f"the database failed {generation.attempts} times while running this generation; giving up "
            f"(last error: {error})",
        )
    return bool(mine.update(status=Status.QUEUED, worker=None))
