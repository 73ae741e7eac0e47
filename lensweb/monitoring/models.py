"""The request log: who asked for what, how big, and what became of it. Never the text, never a secret."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class RequestLogEntry(models.Model):
    """One request to a submit endpoint or the API (or one socket action).

    Holds sizes, not contents: the text is counted (characters, tokens) and dropped. No API key, password,
    Authorization header, cookie or session id is ever stored; `api_key` is the key's row, not the key.
    """

    class Client(models.TextChoices):
        BROWSER = "browser"
        API = "api"
        SOCKET = "socket"

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted"
        REFUSED = "refused"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True)  # kept when the user is deleted
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    client = models.CharField(max_length=10, choices=Client.choices)
    method = models.CharField(max_length=10)
    endpoint = models.CharField(max_length=200)  # the path, without the query string
    kind = models.CharField(max_length=60)  # analysis, generation, cancel, or the view's name
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    reason = models.CharField(max_length=100, blank=True)  # why it was refused: a code, e.g. queue_full
    text_chars = models.PositiveIntegerField(null=True, blank=True)
    text_tokens = models.PositiveIntegerField(null=True, blank=True)  # positions, once a job was made
    lens_id = models.CharField(max_length=100, blank=True)
    options = models.JSONField(default=dict, blank=True)
    job_id = models.PositiveBigIntegerField(null=True, blank=True)  # the analysis or generation concerned
    duration_ms = models.FloatField(null=True, blank=True)
    timings = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "request log entry"
        verbose_name_plural = "request log"
        indexes = [models.Index(fields=["user", "created_at"], name="requestlog_user_idx")]

    def __str__(self):
        return f"{self.method} {self.endpoint} by {self.username or 'anonymous'}: {self.outcome}"
