"""The result cache: finished results keyed by everything they depend on (inference.cachekey), and the
link from each analysis submitted while the cache was on to its key (and to the job it waits for)."""

from __future__ import annotations

import json
import zlib

from django.db import models
from django.utils import timezone

from lensweb.analyses.models import Analysis


class CachedResult(models.Model):
    """One finished result, in a scope (cache.services.scope_of): a user's own, or shared by all. Holds no
    owner data."""

    key = models.CharField(max_length=64, unique=True)  # inference.cachekey.result_key
    lens_id = models.CharField(max_length=100, db_index=True)
    lens_identity = models.CharField(max_length=64)  # content hash of checkpoint and models, not a path
    # Where it was computed (bf16 on CUDA and float32 on CPU differ): part of the key, shown to admins.
    device = models.CharField(max_length=20, blank=True)  # the device type: cpu, cuda
    dtype = models.CharField(max_length=20, blank=True)
    engine_version = models.CharField(max_length=20, db_index=True)
    options = models.JSONField()
    n_tokens = models.PositiveIntegerField()
    blob = models.BinaryField()  # the rows, as zlib-compressed JSON (rows with k candidates are large)
    metadata = models.JSONField(default=dict, blank=True)  # the lens' metadata and the summary
    timings = models.JSONField(default=dict, blank=True)
    computed_seconds = models.FloatField()
    size_bytes = models.PositiveIntegerField()
    hits = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_hit_at = models.DateTimeField(null=True, blank=True)
    # Whose requests it answers (services.scope_of): "" everyone's, "user:<id>" one user's; null for entries
    # stored before scopes were recorded (they answer by key as before, but no prefix is read from them).
    scope = models.CharField(max_length=40, null=True, blank=True, db_index=True)
    # Set on a shared-scope entry that exists because its owner shared this analysis by link: taking the
    # link back (or deleting the analysis) takes the entry with it.
    shared_from = models.ForeignKey(
        Analysis, null=True, blank=True, on_delete=models.CASCADE, related_name="shared_cache_entries"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "cached result"

    def __str__(self):
        return f"{self.lens_id} {self.key[:12]}… ({self.n_tokens} tokens)"

    @staticmethod
    def pack(rows: list[dict]) -> bytes:
        return zlib.compress(json.dumps(rows, separators=(",", ":")).encode(), 6)

    @property
    def rows(self) -> list[dict]:
        return json.loads(zlib.decompress(bytes(self.blob)))


class CacheLink(models.Model):
    """How an analysis relates to the cache: its key (stored under it when done) and, for a follower, the
    identical job it waits for instead of computing twice. Workers never claim a follower of a live leader."""

    analysis = models.OneToOneField(
        Analysis, on_delete=models.CASCADE, primary_key=True, related_name="cache_link"
    )
    key = models.CharField(max_length=64, db_index=True)
    shared_key = models.CharField(max_length=64, blank=True)  # the same result's key in the shared scope
    lens_identity = models.CharField(max_length=64)
    engine_version = models.CharField(max_length=20)  # the web process' version, which the key names
    device = models.CharField(max_length=20, blank=True)  # the placement the key names (cachekey.placement)
    dtype = models.CharField(max_length=20, blank=True)
    n_tokens = models.PositiveIntegerField()
    leader = models.ForeignKey(
        Analysis, null=True, blank=True, on_delete=models.SET_NULL, related_name="cache_followers"
    )

    def __str__(self):
        return f"analysis {self.analysis_id} → {self.key[:12]}…"
