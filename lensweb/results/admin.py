from django.contrib import admin

from .models import ResultsPreference, ShareLink


@admin.register(ShareLink)
class ShareLinkAdmin(admin.ModelAdmin):
    list_display = ("analysis", "created_by", "created_at")
    raw_id_fields = ("analysis", "created_by")
    readonly_fields = ("token",)  # shown so staff can revoke a link (delete), never to be typed in


@admin.register(ResultsPreference)
class ResultsPreferenceAdmin(admin.ModelAdmin):
    list_display = ("user", "scale", "palette", "columns", "updated_at")
    raw_id_fields = ("user",)
