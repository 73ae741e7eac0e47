"""The request log in the admin: read-only (entries are facts; only the retention purge removes them)."""

from django.contrib import admin

from .models import RequestLogEntry


@admin.register(RequestLogEntry)
class RequestLogEntryAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "username",
        "client",
        "method",
        "endpoint",
        "kind",
        "status_code",
        "outcome",
        "reason",
        "text_chars",
        "text_tokens",
        "lens_id",
        "duration_ms",
        "job_id",
    )
    list_filter = ("outcome", "client", "kind", "reason", "created_at")
    search_fields = ("username", "endpoint", "reason", "lens_id", "=job_id")
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    readonly_fields = [f.name for f in RequestLogEntry._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
