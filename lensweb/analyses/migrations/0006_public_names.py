from django.db import migrations

from inference.types import public_metadata


def public_names(apps, schema_editor):
    """Results stored before metadata named models by their public names carry the server's paths."""
    for name in ("Analysis", "Generation"):
        model = apps.get_model("analyses", name)
        for job in model.objects.exclude(metadata={}).only("pk", "metadata").iterator():
            public = public_metadata(job.metadata or {})
            if public != job.metadata:
                model.objects.filter(pk=job.pk).update(metadata=public)


class Migration(migrations.Migration):
    dependencies = [
        ("analyses", "0005_job_phase_and_rates"),
    ]

    operations = [migrations.RunPython(public_names, migrations.RunPython.noop)]
