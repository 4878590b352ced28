from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("matching", "0003_review_workflow"),
    ]

    operations = [
        migrations.AddField(
            model_name="case",
            name="closed_at",
            field=models.DateTimeField(blank=True, db_index=True, null=True),
        ),
        migrations.AddField(
            model_name="case",
            name="purged_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="face",
            name="purged_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="photo",
            name="original",
            field=models.FileField(blank=True, max_length=300, upload_to="originals/%Y/%m/"),
        ),
        migrations.AddField(
            model_name="photo",
            name="purged_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="subject",
            name="erased_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
