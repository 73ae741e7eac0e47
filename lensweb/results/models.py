"""What this app keeps beside an analysis: a viewer's display choices and the owner's share link."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from lensweb.analyses.models import Analysis


def new_share_token() -> str:
    return secrets.token_urlsafe(24)  # 192 bits: unguessable, 32 URL-safe characters


class ResultsPreference(models.Model):
    """How one user likes results shown; every results page reads it, the preferences form writes it."""

    class Scale(models.TextChoices):
        FITTED = "fitted", "fitted to this analysis"
        FIXED = "fixed", "fixed"

    class Palette(models.TextChoices):
        SAFE = "safe", "colour-blind safe (blue–orange, viridis)"
        CLASSIC = "classic", "classic (green–red, as the research site)"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="results_preference"
    )
    columns = models.JSONField(default=list)
    scale = models.CharField(max_length=10, choices=Scale.choices, default=Scale.FITTED)
    palette = models.CharField(max_length=10, choices=Palette.choices, default=Palette.SAFE)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"results preference of {self.user}"


class ShareLink(models.Model):
    """A read-only link to one analysis. Turning sharing off deletes the row, so an old link dies for good
    and turning it on again makes a new token."""

    analysis = models.OneToOneField(Analysis, on_delete=models.CASCADE, related_name="share_link")
    token = models.CharField(max_length=64, unique=True, default=new_share_token)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"share link of analysis {self.analysis_id}"
