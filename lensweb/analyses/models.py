"""The database row is the job of record: a worker, a socket or a server may go away; the row stays."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class WorkerRecord(models.Model):
    """One worker process, as it last reported itself."""

    class State(models.TextChoices):
        STARTING = "starting"
        IDLE = "idle"
        BUSY = "busy"
        STOPPED = "stopped"
        LOST = "lost"

    name = models.CharField(max_length=200, unique=True)
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    # The worker's own channel: cancel and targeted doorbells go here, not to the shared channel.
    channel_name = models.CharField(max_length=200, blank=True)
    device = models.CharField(max_length=50, blank=True)
    lens_id = models.CharField(max_length=100, blank=True)
    memory_bytes = models.BigIntegerField(null=True, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.STARTING)
    started_at = models.DateTimeField(default=timezone.now)
    last_heartbeat = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self):
        return self.name


class JobStatus(models.TextChoices):
    """The life of every job of record (analyses here, generations in the api app)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


# What computed an attempt's rows (lens metadata keys). A resumed job holds rows of several attempts: one
# result only if these agree (bf16 on a GPU and float32 on a CPU do not give the same numbers).
PLACEMENT_KEYS = ("identity", "engine_version", "device", "dtype")


class Analysis(models.Model):
    Status = JobStatus

    FINAL = (Status.DONE, Status.FAILED, Status.CANCELLED)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="analyses")
    lens_id = models.CharField(max_length=100)
    input = models.JSONField()  # AnalysisInput.to_dict(): {"text": ...} or {"messages": [...]}
    options = models.JSONField()  # AnalysisOptions.to_dict()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    # Queue: FIFO within a user by (queued_at, id); fairness between users is computed (services).
    queued_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)  # claims so far; a worker death costs one
    cancel_requested = models.BooleanField(default=False)
    worker = models.ForeignKey(
        WorkerRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    # Rows present when the current attempt started: the ETA counts only this attempt's speed.
    attempt_base = models.PositiveIntegerField(default=0)
    attempt_started_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "analyses"
        indexes = [
            # the dashboard and /metrics filter by these on every poll and scrape
            models.Index(fields=["created_at"], name="analysis_created_idx"),
            models.Index(fields=["started_at"], name="analysis_started_idx"),
            models.Index(fields=["finished_at"], name="analysis_finished_idx"),
            models.Index(fields=["status", "queued_at", "id"], name="analysis_claim_idx"),
            models.Index(fields=["owner", "status"], name="analysis_owner_status_idx"),
            models.Index(fields=["status", "heartbeat_at"], name="analysis_stale_idx"),
            models.Index(fields=["owner", "attempt_started_at"], name="analysis_owner_served_idx"),
        ]

    def __str__(self):
        return f"Analysis {self.pk} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL

    @property
    def is_chat(self) -> bool:
        return "messages" in (self.input or {})

    @property
    def input_preview(self) -> str:
        if self.is_chat:
            return " / ".join(f"{m.get('role')}: {m.get('content')}" for m in self.input["messages"])
        return self.input.get("text") or ""

    @property
    def percent(self) -> int:
        return int(100 * self.progress_done / self.progress_total) if self.progress_total else 0

    def eta_seconds(self, now=None) -> float | None:
        """Remaining time at this attempt's speed so far; None until the first batch of the attempt."""
        if self.status != self.Status.RUNNING or not self.attempt_started_at:
            return None
        done_now = self.progress_done - self.attempt_base
        if done_now <= 0:
            return None
        elapsed = ((now or timezone.now()) - self.attempt_started_at).total_seconds()
        return max(0.0, elapsed / done_now * (self.progress_total - self.progress_done))

    @property
    def elapsed_seconds(self) -> float | None:
        if not self.started_at:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()


class AnalysisRow(models.Model):
    """One analysed position. UNIQUE(analysis, position): a resumed or repeated batch never duplicates."""

    analysis = models.ForeignKey(Analysis, on_delete=models.CASCADE, related_name="rows")
    position = models.PositiveIntegerField()
    data = models.JSONField()

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["analysis", "position"], name="analysis_row_unique_position")
        ]

    def __str__(self):
        return f"row {self.position} of {self.analysis_id}"
