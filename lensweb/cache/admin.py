"""Cached results in the admin: read-only, with hit counts; deleting one is safe (the Redis front, if any,
never serves an entry the database no longer has)."""

from __future__ import annotations

from django.contrib import admin

from lensweb.analyses.formatting import size

from .models import CachedResult


@admin.register(CachedResult)
class CachedResultAdmin(admin.ModelAdmin):
    list_display = (
        "short_key",
        "lens_id",
        "device",
        "dtype",
        "engine_version",
        "n_tokens",
        "stored_size",
        "computed_seconds",
        "hits",
        "created_at",
        "last_hit_at",
    )
    list_filter = ("lens_id", "device", "dtype", "engine_version", "created_at")
    search_fields = ("=key", "lens_id", "lens_identity")
    ordering = ("-hits", "-created_at")
    date_hierarchy = "created_at"
    exclude = ("blob",)
    readonly_fields = [f.name for f in CachedResult._meta.fields if f.name != "blob"] + ["stored_size"]

    @admin.display(description="key", ordering="key")
    def short_key(self, obj):
        return obj.key[:16] + "…"

    @admin.display(description="size", ordering="size_bytes")
    def stored_size(self, obj):
        return size(obj.size_bytes)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
