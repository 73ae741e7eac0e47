"""Typed refusals of the one submit path: the form shows `.message` next to `.field`, the API maps each
class to its status and code, warm_cache reports them. Nothing here knows who called."""

from __future__ import annotations


class SubmissionError(Exception):
    """A refusal the page shows next to `field` (or above the form when field is None)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class LensUnavailable(SubmissionError):
    """The lens' files cannot be read right now: the server's fault, not the input's. The page says so
    above the form and the API answers 503; the details (paths, torch's text) go to the server log only."""

    retry_after = 60  # seconds: an operator has to fix or replace the lens' files

    def __init__(self, lens_id: str):
        super().__init__(f"the lens {lens_id} is unavailable right now; the operator has been told")
        self.lens_id = lens_id


class QueueFull(SubmissionError):
    """The user's own cap of waiting jobs, or the whole queue, is full: try again later."""

    retry_after = 30


class NoWorker(SubmissionError):
    """No live worker would take the job (asked for by callers that must not queue blindly: the API)."""

    retry_after = 30

    def __init__(self):
        super().__init__(
            "no worker is running to take this job; try again later (the operator has been told by /readyz)"
        )


class QuotaExceeded(SubmissionError):
    """A daily cap reached, with the seconds until it resets."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after
