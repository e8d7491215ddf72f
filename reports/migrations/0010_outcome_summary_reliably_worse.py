"""The summary's `reliably_worse` flag, a stored generated column with a partial index, for the caseload's
deteriorating filter.

SQLite adds a generated column by building the table anew and renaming it, which it refuses while the
triggers of 0008 name the table: they are dropped first and made again after."""

import importlib

from django.db import migrations, models

# The instruments' reliable change as it was when this migration was written (reports.instruments).
RELIABLE_CHANGE = {"phq9": 6, "gad7": 4}

summary_triggers = importlib.import_module("reports.migrations.0008_outcome_summary")


def drop_sqlite_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for event in summary_triggers.SQLITE_TRIGGERS:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS outcome_summary_{event.lower()}")


def create_sqlite_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for event, rows in summary_triggers.SQLITE_TRIGGERS.items():
            schema_editor.execute(summary_triggers._sqlite_trigger(event, rows))


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0009_metrics_indexes"),
        ("tracking", "0014_metrics_indexes"),
    ]

    operations = [
        migrations.RunPython(drop_sqlite_triggers, create_sqlite_triggers),
        migrations.AddField(
            model_name="outcomesummary",
            name="reliably_worse",
            field=models.GeneratedField(
                db_persist=True,
                expression=models.Case(
                    *(
                        models.When(
                            models.Q(instrument=code, latest_total__gte=models.F("first_total") + change),
                            then=models.Value(True),
                        )
                        for code, change in RELIABLE_CHANGE.items()
                    ),
                    default=models.Value(False),
                ),
                output_field=models.BooleanField(),
            ),
        ),
        migrations.AddIndex(
            model_name="outcomesummary",
            index=models.Index(
                condition=models.Q(("reliably_worse", True)), fields=["patient"], name="outcome_summary_worse"
            ),
        ),
        migrations.RunPython(create_sqlite_triggers, drop_sqlite_triggers),
    ]
