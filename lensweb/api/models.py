"""Continuations (text generation) as jobs of record, beside the core's analyses."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from lensweb.analyses.models import JobStatus


class Generation(models.Model):
    Status = JobStatus

    FINAL = (Status.DONE, Status.FAILED, Status.CANCELLED)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generations")
    lens_id = models.CharField(max_length=100)
    input = models.JSONField()  # AnalysisInput.to_dict()
    options = models.JSONField()  # GenerationOptions.to_dict()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    queued_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    worker = models.ForeignKey(
        "analyses.WorkerRecord", null=True, blank=True, on_delete=models.SET_NULL, related_name="generations"
    )
    result = models.JSONField(null=True, blank=True)  # inference.generation.generate()'s dict
    error = models.TextField(blank=True)
    timings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "queued_at", "id"], name="generation_claim_idx"),
            models.Index(fields=["owner", "created_at"], name="generation_owner_day_idx"),
        ]

    def __str__(self):
        return f"Generation {self.pk} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL
