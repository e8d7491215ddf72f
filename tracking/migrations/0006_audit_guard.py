"""The audit log is append-only in the database itself (DESIGN §7): a trigger refuses every UPDATE of
`audit_event`, and every DELETE of an event younger than 2,192 days (6 years), whoever asks. On
PostgreSQL also a GIN index, so "events naming this patient" stays fast on millions of events."""

from django.db import migrations

PG_FORWARD = """
CREATE OR REPLACE FUNCTION audit_event_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'audit_event is append-only: UPDATE of event % refused', OLD.id;
    END IF;
    IF OLD.at > now() - interval '2192 days' THEN
        RAISE EXCEPTION 'audit_event: DELETE of event % refused (younger than 2192 days)', OLD.id;
    END IF;
    RETURN OLD;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_event_guard BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH ROW EXECUTE FUNCTION audit_event_guard();
CREATE INDEX audit_event_patients ON audit_event USING gin (patients jsonb_path_ops);
"""
PG_BACKWARD = """
DROP INDEX IF EXISTS audit_event_patients;
DROP TRIGGER IF EXISTS audit_event_guard ON audit_event;
DROP FUNCTION IF EXISTS audit_event_guard();
"""
SQLITE_FORWARD = [
    """CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event
       BEGIN SELECT RAISE(ABORT, 'audit_event is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_event_no_recent_delete BEFORE DELETE ON audit_event
       WHEN OLD.at > datetime('now', '-2192 days')
       BEGIN SELECT RAISE(ABORT, 'audit_event: DELETE of an event younger than 2192 days refused'); END""",
]
SQLITE_BACKWARD = ["DROP TRIGGER IF EXISTS audit_event_no_update", "DROP TRIGGER IF EXISTS audit_event_no_recent_delete"]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, None)  # no parameters: the "%" are plpgsql's
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)


def backward(apps, schema_editor):
    statements = PG_BACKWARD if schema_editor.connection.vendor == "postgresql" else SQLITE_BACKWARD
    for statement in [statements] if isinstance(statements, str) else statements:
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("tracking", "0005_audit")]

    operations = [migrations.RunPython(forward, backward)]
