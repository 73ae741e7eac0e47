"""The api app keeps no model: generations live in the core now (analyses 0003 copied them)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("api", "0001_initial"),
        ("analyses", "0003_generation"),
    ]

    operations = [
        migrations.DeleteModel(
            name="Generation",
        ),
    ]
