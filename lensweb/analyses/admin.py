"""Analyses, generations, rows and workers in the admin: read-only views of the rows of record, and two
actions (cancel, re-queue) that go through the services, never straight to the fields."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from . import services
from .formatting import duration, size
from .models import Analysis, AnalysisRow, Generation, LensEntry, WorkerRecord

Status = Analysis.Status


@admin.register(Analysis)
class AnalysisAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "owner",
        "lens_id",
        "status",
        "progress",
        "created_at",
        "queue_wait",
        "run_time",
        "attempts",
        "worker",
    )
    list_filter = ("status", "lens_id", ("owner", admin.RelatedOnlyFieldListFilter), "created_at")
    date_hierarchy = "created_at"
    search_fields = ("=id", "owner__username", "lens_id", "error")
    list_select_related = ("owner", "worker")
    actions = ["cancel", "requeue"]
    readonly_fields = [f.name for f in Analysis._meta.fields] + ["rows_link", "queue_wait", "run_time"]
    fieldsets = (
        (None, {"fields": ("owner", "lens_id", "status", "error", "rows_link")}),
        ("Input and options", {"fields": ("input", "options")}),
        (
            "Progress",
            {
                "fields": (
                    "progress_done",
                    "progress_total",
                    "attempts",
                    "attempt_base",
                    "cancel_requested",
                    "worker",
                    "heartbeat_at",
                )
            },
        ),
        (
            "Times",
            {
                "fields": (
                    "created_at",
                    "queued_at",
                    "started_at",
                    "attempt_started_at",
                    "finished_at",
                    "queue_wait",
                    "run_time",
                )
            },
        ),
        ("Engine", {"fields": ("metadata", "timings"), "classes": ("collapse",)}),
    )

    def has_add_permission(self, request):
        return False  # jobs come from the form or the API, where the bounds are checked

    @admin.display(description="progress")
    def progress(self, obj):
        return f"{obj.progress_done}/{obj.progress_total}"

    @admin.display(description="queue wait")
    def queue_wait(self, obj):
        return duration((obj.started_at - obj.queued_at).total_seconds()) if obj.started_at else "–"

    @admin.display(description="run time")
    def run_time(self, obj):
        if not obj.started_at:
            return "–"
        return duration(((obj.finished_at or timezone.now()) - obj.started_at).total_seconds())

    @admin.display(description="rows")
    def rows_link(self, obj):
        count = obj.rows.count()
        url = reverse("admin:analyses_analysisrow_changelist") + f"?analysis__id__exact={obj.pk}"
        return format_html('<a href="{}">{} row(s)</a>', url, count)

    @admin.action(description="Cancel the selected analyses (queued: at once; running: within a batch)")
    def cancel(self, request, queryset):
        pending = list(queryset.exclude(status__in=Analysis.FINAL).values_list("pk", flat=True))
        for job_id in pending:
            services.do_staff_cancel(job_id)
        self.message_user(
            request, f"{len(pending)} analysis(es) cancelled or asked to stop.", messages.SUCCESS
        )
        skipped = queryset.count() - len(pending)
        if skipped:
            self.message_user(
                request, f"{skipped} had already finished; left as they were.", messages.WARNING
            )

    @admin.action(description="Re-queue the selected failed or cancelled analyses (rows kept)")
    def requeue(self, request, queryset):
        requeued = 0
        for job in queryset.filter(status__in=services.REQUEUABLE):
            if services.do_requeue(job.pk):
                requeued += 1
                self.log_change(
                    request, job, f"Re-queued from {job.status} with {job.progress_done} rows kept"
                )
        skipped = queryset.count() - requeued
        self.message_user(request, f"{requeued} analysis(es) re-queued.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"{skipped} not re-queued: only failed or cancelled analyses can be.",
                messages.WARNING,
            )


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "lens_id", "status", "progress", "created_at", "finished_at", "worker")
    list_filter = ("status", "lens_id")
    date_hierarchy = "created_at"
    search_fields = ("=id", "owner__username", "lens_id", "error")
    list_select_related = ("owner", "worker")
    actions = ["cancel", "requeue"]
    readonly_fields = [f.name for f in Generation._meta.fields]

    def has_add_permission(self, request):
        return False  # jobs come from the form or the API, where the bounds are checked

    @admin.display(description="tokens")
    def progress(self, obj):
        return f"{obj.progress_done}/{obj.progress_total}"

    @admin.action(description="Cancel the selected generations")
    def cancel(self, request, queryset):
        pending = list(queryset.exclude(status__in=Generation.FINAL).values_list("pk", flat=True))
        for generation_id in pending:
            services.do_staff_cancel(generation_id, Generation.kind)
        self.message_user(
            request, f"{len(pending)} generation(s) cancelled or asked to stop.", messages.SUCCESS
        )

    @admin.action(description="Re-queue the selected failed or cancelled generations")
    def requeue(self, request, queryset):
        requeued = sum(
            services.do_requeue(g.pk, Generation.kind)
            for g in queryset.filter(status__in=services.REQUEUABLE)
        )
        self.message_user(request, f"{requeued} generation(s) re-queued.", messages.SUCCESS)


@admin.register(AnalysisRow)
class AnalysisRowAdmin(admin.ModelAdmin):
    """The rows of one analysis: reached from its page (`?analysis__id__exact=`); read-only."""

    list_display = ("analysis", "position", "token", "explanation", "mse")
    list_select_related = ("analysis",)
    search_fields = ("=analysis__id",)
    list_per_page = 100
    readonly_fields = ("analysis", "position", "data")

    @admin.display(description="token")
    def token(self, obj):
        return (obj.data or {}).get("token", "")

    @admin.display(description="explanation")
    def explanation(self, obj):
        return (obj.data or {}).get("explanation", "")

    @admin.display(description="mse")
    def mse(self, obj):
        value = (obj.data or {}).get("mse")
        return f"{value:.4g}" if isinstance(value, int | float) else "–"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(LensEntry)
class LensEntryAdmin(admin.ModelAdmin):
    """The registry's lenses as users meet them: staff rename, describe, hide or reserve them for staff, choose
    the default and the order. Files and families stay in the registry file (LENSWEB_LENS_REGISTRY)."""

    list_display = (
        "lens_id",
        "name",
        "visibility",
        "is_default",
        "order",
        "rows_budget",
        "base_model",
        "layer",
        "t_text",
    )
    list_editable = ("visibility", "is_default", "order", "rows_budget")
    list_filter = ("visibility", "base_model")
    search_fields = ("lens_id", "name", "base_model")
    readonly_fields = ("lens_id", "base_model", "layer", "t_text")
    ordering = ("base_model", "order", "lens_id")  # lenses sharing a base model side by side

    def has_add_permission(self, request):
        return False  # the registry seeds them

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if obj.is_default:  # one default: choosing one unchooses the others
            LensEntry.objects.exclude(pk=obj.pk).update(is_default=False)


@admin.register(WorkerRecord)
class WorkerRecordAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "host",
        "device",
        "lens_id",
        "cached_lenses",
        "pinned_lenses",
        "memory",
        "state",
        "last_heartbeat",
        "live",
    )
    list_filter = ("state", "host", "device")
    search_fields = ("name", "host", "lens_id")
    readonly_fields = [f.name for f in WorkerRecord._meta.fields]
    actions = ("pin", "unpin", "unload")

    @admin.action(description="Pin the lens each holds on its device (kept past the idle time)")
    def pin(self, request, queryset):
        pinned = services.pin_held_lenses(queryset)
        self.message_user(request, f"{pinned} lens(es) pinned.", messages.SUCCESS)

    @admin.action(description="Unpin their lenses")
    def unpin(self, request, queryset):
        queryset.update(pinned_lenses=[])
        self.message_user(request, "Unpinned.", messages.SUCCESS)

    @admin.action(description="Unload their lenses now (the device's once its running job ends)")
    def unload(self, request, queryset):
        asked = services.unload_lenses(queryset)
        self.message_user(
            request,
            f"{asked} worker(s) asked to let go of their lenses at the next heartbeat.",
            messages.SUCCESS,
        )

    @admin.display(description="memory")
    def memory(self, obj):
        return size(obj.memory_bytes)

    @admin.display(description="live", boolean=True)
    def live(self, obj):
        age = (timezone.now() - obj.last_heartbeat).total_seconds()
        return (
            obj.state in (WorkerRecord.State.IDLE, WorkerRecord.State.BUSY)
            and age <= settings.LENSWEB_STALE_AFTER
        )

    def has_add_permission(self, request):
        return False  # workers register themselves

    def has_change_permission(self, request, obj=None):
        return False
