"""The service API of the core: everything that changes a job goes through it (check_* validate and look up,
do_* write and notify on commit), so views, the API, warm_cache, consumers and the worker stay thin and agree on
the rules. One lifecycle for both kinds of job, analyses and generations (models.Job). Refusals are typed
(errors.py); the caller maps them (a form error, an API status, a CLI line).

Written in modules by what they do, named together here so a caller imports one name:
    submit.py      check a submission and queue it (or attach a cached result)
    lifecycle.py   claim in fair order (queue.py), record rows and progress, cancel, finish, fail, re-queue
    access.py      who may read or change a job
    workers.py     worker records and the doorbell (the worker's loop itself: worker.py)
    summaries.py   a finished analysis' summary, plain data
    store.py       the result cache's port (lensweb.cache plugs itself in)
    probes.py      questions to a lens answered by a worker: scores, activations, vectors and differences
"""

from __future__ import annotations

from .access import check_job_for_user, get_analysis_for, get_generation_for
from .engine import get_engine
from .errors import LensUnavailable, NoWorker, QueueFull, SubmissionError
from .lifecycle import (
    GREW_WHILE_RUNNING,
    KEPT_METADATA,
    REQUEUABLE,
    TOKENS_EVERY_SECONDS,
    claim_next_job,
    do_cancel,
    do_cancel_generation,
    do_fail_job,
    do_finish_job,
    do_record_batch,
    do_record_metadata,
    do_record_progress,
    do_record_tokens,
    do_requeue,
    do_requeue_job,
    do_staff_cancel,
    is_cancel_requested,
    persisted_positions,
    requeue_stale_jobs,
    row_at,
    stale_job_changes,
    worker_heartbeat,
)
from .limits import limits
from .models import Analysis, Generation, WorkerRecord
from .probes import (
    activations_probe,
    do_submit_compare,
    do_submit_describe,
    do_submit_probe,
    get_probe_for,
    user_scores,
)
from .queue import JOB_MODELS, fair_queue, queue_position, queue_positions
from .store import COPY_MARKS, NoResultStore, use_result_store
from .submit import (
    GENERATION_OPTION_FIELDS,
    OPTION_FIELDS,
    check_analysis_options,
    check_capacity,
    check_generation_capacity,
    check_generation_submission,
    check_prepared_submission,
    check_queue_caps,
    check_submission,
    check_worker_available,
    do_analyse_sample,
    do_submit,
    do_submit_generation,
    lens_spec,
    lock_owner,
    queue_follow_up,
)
from .summaries import first_trained_position, summarize, summarize_rows, summary_note, summary_rows
from .workers import (
    live_workers,
    pin_held_lenses,
    register_worker,
    ring_doorbell,
    served_lens_ids,
    unload_lenses,
    unloads_done,
    worker_directives,
    worker_lenses_problem,
    worker_listens_on,
    worker_stopped,
)

__all__ = [
    "activations_probe",
    "do_submit_compare",
    "do_submit_describe",
    "do_submit_probe",
    "get_probe_for",
    "user_scores",
    "Analysis",
    "COPY_MARKS",
    "GENERATION_OPTION_FIELDS",
    "GREW_WHILE_RUNNING",
    "Generation",
    "JOB_MODELS",
    "KEPT_METADATA",
    "LensUnavailable",
    "NoResultStore",
    "NoWorker",
    "OPTION_FIELDS",
    "QueueFull",
    "REQUEUABLE",
    "SubmissionError",
    "TOKENS_EVERY_SECONDS",
    "WorkerRecord",
    "check_analysis_options",
    "check_capacity",
    "check_generation_capacity",
    "check_generation_submission",
    "check_job_for_user",
    "check_prepared_submission",
    "check_queue_caps",
    "check_submission",
    "check_worker_available",
    "claim_next_job",
    "do_analyse_sample",
    "do_cancel",
    "do_cancel_generation",
    "do_fail_job",
    "do_finish_job",
    "do_record_batch",
    "do_record_metadata",
    "do_record_progress",
    "do_record_tokens",
    "do_requeue",
    "do_requeue_job",
    "do_staff_cancel",
    "do_submit",
    "do_submit_generation",
    "fair_queue",
    "first_trained_position",
    "get_analysis_for",
    "get_engine",
    "get_generation_for",
    "is_cancel_requested",
    "lens_spec",
    "limits",
    "live_workers",
    "lock_owner",
    "persisted_positions",
    "queue_follow_up",
    "queue_position",
    "queue_positions",
    "register_worker",
    "requeue_stale_jobs",
    "ring_doorbell",
    "row_at",
    "served_lens_ids",
    "stale_job_changes",
    "summarize",
    "summarize_rows",
    "summary_note",
    "summary_rows",
    "pin_held_lenses",
    "unload_lenses",
    "unloads_done",
    "use_result_store",
    "worker_directives",
    "worker_heartbeat",
    "worker_lenses_problem",
    "worker_listens_on",
    "worker_stopped",
]
