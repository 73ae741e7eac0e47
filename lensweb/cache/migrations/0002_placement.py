from django.db import migrations, models


def drop_unreachable_entries(apps, schema_editor):
    """Keys now name the device and dtype too: entries stored before can never be looked up again."""
    apps.get_model("result_cache", "CachedResult").objects.filter(device="").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("result_cache", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="cachedresult",
            name="device",
            field=models.CharField(blank=True, max_length=20),
        ),
        migrations.AddField(
            model_name="cachedresult",
            name="dtype",
            field=models.CharField(blank=True, max_length=20),
        ),
        migrations.AddField(
            model_name="cachelink",
            name="device",
            field=models.CharField(blank=True, max_length=20),
        ),
        migrations.AddField(
            model_name="cachelink",
            name="dtype",
            field=models.CharField(blank=True, max_length=20),
        ),
        migrations.RunPython(drop_unreachable_entries, migrations.RunPython.noop),
    ]
