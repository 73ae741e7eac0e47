"""API keys in the admin: listed, revoked, created (the key shown once, on the page after saving).
Neither the key nor its hash is ever shown: `hashed` is not a field of any admin form or list."""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone

from . import keys
from .forms import validate_key_name
from .models import ApiKey


class ApiKeyAdminForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("user", "name")

    def clean_name(self):
        name = self.cleaned_data["name"]
        validate_key_name(name)  # on adding and on renaming: the name goes into log lines
        return name

    def clean(self):
        data = super().clean()
        user, limit = data.get("user"), settings.LENSWEB_MAX_API_KEYS_PER_USER
        adding = self.instance.pk is None and user is not None and limit
        if adding and ApiKey.objects.filter(user=user, revoked_at__isnull=True).count() >= limit:
            raise forms.ValidationError(f"{user} already has {limit} active keys; revoke one first")
        return data


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyAdminForm
    list_display = ("name", "user", "masked", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user",)
    actions = ["revoke"]
    fields = ("user", "name", "masked", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("masked", "created_at", "last_used_at", "revoked_at")

    @admin.display(description="key")
    def masked(self, obj):
        return obj.masked if obj.pk else "(made when you save)"

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:  # a key's owner never changes; only its name and revocation
            return (*self.readonly_fields, "user")
        return self.readonly_fields

    def get_fields(self, request, obj=None):
        return ("user", "name") if obj is None else self.fields

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["name"])
            return
        row, raw = keys.create_key(obj.user, obj.name)
        obj.pk, obj.prefix, obj.created_at = row.pk, row.prefix, row.created_at
        obj._raw_key = raw  # for response_add only; never stored

    def response_add(self, request, obj, post_url_continue=None):
        raw = getattr(obj, "_raw_key", None)
        if raw is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "api_key": obj,
            "raw_key": raw,
            "title": "API key created",
        }
        response = TemplateResponse(request, "accounts/admin_key_created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"{count} key(s) revoked.", messages.SUCCESS)
