"""API keys: a short lookup prefix and a hash of the whole key, never the key itself (hashing: keys.py)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiKey(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    # The 8 characters after `lw_`: enough to find the row, useless to call the API with.
    prefix = models.CharField(max_length=8, unique=True)
    hashed = models.CharField(max_length=64)  # sha256 hex of the whole key
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name} (lw_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def masked(self) -> str:
        """What pages show of a key: the prefix, enough to tell keys apart."""
        return f"lw_{self.prefix}_…"
