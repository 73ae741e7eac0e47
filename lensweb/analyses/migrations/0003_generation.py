"""Generations join analyses in the core, on the same lifecycle; the api app's rows are copied over."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

FIELDS = (
    "id",
    "owner_id",
    "lens_id",
    "input",
    "options",
    "status",
    "queued_at",
    "attempts",
    "cancel_requested",
    "worker_id",
    "result",
    "error",
    "timings",
    "created_at",
    "started_at",
    "finished_at",
)


def copy_generations(apps, schema_editor):
    """Every generation the api app held, with its id (URLs given out stay valid) and its state."""
    old, new = apps.get_model("api", "Generation"), apps.get_model("analyses", "Generation")
    rows = []
    for values in old.objects.values(*FIELDS).iterator():
        options = values["options"] or {}
        rows.append(new(**values, progress_total=int(options.get("max_new_tokens") or 0)))
        if len(rows) >= 500:
            new.objects.bulk_create(rows)
            rows = []
    new.objects.bulk_create(rows)


class Migration(migrations.Migration):
    dependencies = [
        ("analyses", "0002_alter_analysis_options_analysis_analysis_created_idx_and_more"),
        ("api", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Generation",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("lens_id", models.CharField(max_length=100)),
                ("input", models.JSONField()),
                ("options", models.JSONField()),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("queued", "Queued"),
                            ("running", "Running"),
                            ("done", "Done"),
                            ("failed", "Failed"),
                            ("cancelled", "Cancelled"),
                        ],
                        default="queued",
                        max_length=20,
                    ),
                ),
                ("queued_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("cancel_requested", models.BooleanField(default=False)),
                ("heartbeat_at", models.DateTimeField(blank=True, null=True)),
                ("progress_done", models.PositiveIntegerField(default=0)),
                ("progress_total", models.PositiveIntegerField(default=0)),
                ("attempt_base", models.PositiveIntegerField(default=0)),
                ("attempt_started_at", models.DateTimeField(blank=True, null=True)),
                ("error", models.TextField(blank=True)),
                ("metadata", models.JSONField(blank=True, default=dict)),
                ("timings", models.JSONField(blank=True, default=dict)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("result", models.JSONField(blank=True, null=True)),
                ("analysis_options", models.JSONField(blank=True, null=True)),
                ("follow_up_error", models.TextField(blank=True)),
                (
                    "follow_up",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="source_generation",
                        to="analyses.analysis",
                    ),
                ),
                (
                    "owner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="generations",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "worker",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="generations",
                        to="analyses.workerrecord",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "abstract": False,
                "indexes": [
                    models.Index(fields=["status", "queued_at", "id"], name="gen_job_claim_idx"),
                    models.Index(fields=["owner", "created_at"], name="gen_job_owner_day_idx"),
                    models.Index(fields=["owner", "status"], name="gen_job_owner_status_idx"),
                    models.Index(fields=["status", "heartbeat_at"], name="gen_job_stale_idx"),
                    models.Index(fields=["owner", "attempt_started_at"], name="gen_job_owner_served_idx"),
                ],
            },
        ),
        migrations.RunPython(copy_generations, migrations.RunPython.noop),
    ]
