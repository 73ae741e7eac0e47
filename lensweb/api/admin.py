from django.contrib import admin

from .models import Generation


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "lens_id", "status", "created_at", "finished_at", "worker")
    list_filter = ("status", "lens_id")
    search_fields = ("owner__username",)
    list_select_related = ("owner", "worker")
    readonly_fields = [f.name for f in Generation._meta.fields]

    def has_add_permission(self, request):
        return False  # jobs come from the API, where the bounds are checked
