from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0005_api_keys"),
    ]

    operations = [
        migrations.AddField(
            model_name="organisation",
            name="keep_originals",
            field=models.BooleanField(
                default=False, help_text="Keep each upload as received (with its metadata) beside the cleaned copy."
            ),
        ),
        migrations.AddField(
            model_name="organisation",
            name="retention_days",
            field=models.PositiveIntegerField(
                blank=True,
                null=True,
                help_text="Days after a case is closed before its probe photos, crops and encodings are purged. "
                "Empty keeps them until erased by hand.",
            ),
        ),
    ]
