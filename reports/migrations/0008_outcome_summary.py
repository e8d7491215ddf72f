"""The per-patient outcome summary (first and latest totals, how many), kept by triggers on
`reports_outcomeresponse` so that it is right whatever writes a response.

On PostgreSQL an INSERT merges the new response into the summary with one `INSERT … ON CONFLICT DO
UPDATE`, which is safe under concurrent ingest (the merge is commutative, and ON CONFLICT re-reads the
latest row). An UPDATE that moves a response, or a DELETE, rebuilds the (patient, instrument) summary from
its responses by the (patient, instrument, administered_at) index. SQLite (the demo, one writer) rebuilds
on every write."""

from django.db import migrations, models
import django.db.models.deletion

COLUMNS = (
    "patient_id, instrument, first_total, first_at, first_response_id, latest_total, latest_at, "
    "latest_response_id, count"
)


def rebuild(where: str) -> str:
    """INSERT the summaries of the (patient, instrument) pairs whose responses match `where`."""

    def pick(column: str, order: str) -> str:
        return (
            f"(SELECT r.{column} FROM reports_outcomeresponse r"
            " WHERE r.patient_id = d.patient_id AND r.instrument = d.instrument"
            f" ORDER BY r.administered_at {order}, r.response_id {order} LIMIT 1)"
        )

    picks = ", ".join(pick(c, "ASC") for c in ("total", "administered_at", "response_id"))
    latest = ", ".join(pick(c, "DESC") for c in ("total", "administered_at", "response_id"))
    return (
        f"INSERT INTO reports_outcomesummary ({COLUMNS}) SELECT d.patient_id, d.instrument, {picks}, {latest}, d.n"
        " FROM (SELECT patient_id, instrument, count(*) AS n FROM reports_outcomeresponse"
        f" WHERE {where} GROUP BY patient_id, instrument) d"
    )


def recount(patient: str, instrument: str) -> list[str]:
    where = f"patient_id = {patient} AND instrument = {instrument}"
    return [f"DELETE FROM reports_outcomesummary WHERE {where}", rebuild(where)]


def newer(a: str, b: str) -> str:
    return f"(EXCLUDED.{a}_at, EXCLUDED.{a}_response_id) {b} (s.{a}_at, s.{a}_response_id)"


def merged(side: str, op: str) -> str:
    return ", ".join(
        f"{side}_{c} = CASE WHEN {newer(side, op)} THEN EXCLUDED.{side}_{c} ELSE s.{side}_{c} END"
        for c in ("total", "at", "response_id")
    )


PG_FORWARD = f"""
CREATE OR REPLACE FUNCTION outcome_summary_recount(p bigint, i text) RETURNS void AS $$
BEGIN
    {";".join(recount("p", "i"))};
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION outcome_summary_keep() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO reports_outcomesummary AS s ({COLUMNS}) VALUES (NEW.patient_id, NEW.instrument,
            NEW.total, NEW.administered_at, NEW.response_id, NEW.total, NEW.administered_at, NEW.response_id, 1)
        ON CONFLICT (patient_id, instrument) DO UPDATE SET count = s.count + 1,
            {merged("first", "<")}, {merged("latest", ">")};
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND (NEW.patient_id, NEW.instrument, NEW.total, NEW.administered_at, NEW.response_id)
            IS NOT DISTINCT FROM (OLD.patient_id, OLD.instrument, OLD.total, OLD.administered_at, OLD.response_id) THEN
        RETURN NULL;
    END IF;
    PERFORM outcome_summary_recount(OLD.patient_id, OLD.instrument);
    IF TG_OP = 'UPDATE' AND (NEW.patient_id, NEW.instrument) IS DISTINCT FROM (OLD.patient_id, OLD.instrument) THEN
        PERFORM outcome_summary_recount(NEW.patient_id, NEW.instrument);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER outcome_summary_keep AFTER INSERT OR UPDATE OR DELETE ON reports_outcomeresponse
    FOR EACH ROW EXECUTE FUNCTION outcome_summary_keep();
"""
PG_BACKWARD = """
DROP TRIGGER IF EXISTS outcome_summary_keep ON reports_outcomeresponse;
DROP FUNCTION IF EXISTS outcome_summary_keep();
DROP FUNCTION IF EXISTS outcome_summary_recount(bigint, text);
"""


def _sqlite_trigger(event: str, rows: tuple[str, ...]) -> str:
    body = "; ".join(s for row in rows for s in recount(f"{row}.patient_id", f"{row}.instrument"))
    return f"CREATE TRIGGER outcome_summary_{event.lower()} AFTER {event} ON reports_outcomeresponse BEGIN {body}; END"


SQLITE_TRIGGERS = {"INSERT": ("NEW",), "UPDATE": ("OLD", "NEW"), "DELETE": ("OLD",)}


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, None)  # no parameters: the "$$" body is plpgsql's
    elif vendor == "sqlite":
        for event, rows in SQLITE_TRIGGERS.items():
            schema_editor.execute(_sqlite_trigger(event, rows))
    schema_editor.execute(rebuild("TRUE" if vendor == "postgresql" else "1"))


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_BACKWARD, None)
    else:
        for event in SQLITE_TRIGGERS:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS outcome_summary_{event.lower()}")


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0007_measurement_based_care"),
        ("tracking", "0011_patient_fk_served_by_time_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="OutcomeSummary",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "instrument",
                    models.CharField(choices=[("phq9", "PHQ-9"), ("gad7", "GAD-7")], max_length=8),
                ),
                ("first_total", models.PositiveSmallIntegerField()),
                ("first_at", models.DateTimeField()),
                ("first_response_id", models.CharField(max_length=128)),
                ("latest_total", models.PositiveSmallIntegerField()),
                ("latest_at", models.DateTimeField()),
                ("latest_response_id", models.CharField(max_length=128)),
                ("count", models.PositiveIntegerField()),
                (
                    "patient",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="outcome_summaries",
                        to="tracking.patient",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("patient", "instrument"), name="outcome_summary_once")
                ],
            },
        ),
        migrations.RunPython(forward, backward),
    ]
