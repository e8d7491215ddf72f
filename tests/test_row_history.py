"""Row history by database triggers (django-pghistory, DESIGN §7): writes that bypass the services — a
bulk `update()`, rows made by `bulk_create()` and changed later, raw SQL — still leave a trace of every
update and delete of patient data. PostgreSQL only: the triggers do not exist on SQLite (the demo)."""

from datetime import UTC, datetime

import pytest
from django.apps import apps
from django.db import connection

from reports.models import Alert, OutcomeResponse
from tests.factories import OutcomeResponseFactory, PatientFactory, TherapySessionFactory
from tracking.models import CareAssignment, Patient, ProgressMarker, TherapySession

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="pghistory's triggers are PostgreSQL's")

TRACKED = [Patient, TherapySession, ProgressMarker, OutcomeResponse, Alert, CareAssignment]


def events(model, label=None):
    event_model = apps.get_model(model._meta.app_label, f"{model.__name__}Event")
    rows = event_model.objects.all()
    return rows.filter(pgh_label=label) if label else rows


def test_every_table_of_patient_data_has_its_history_triggers(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE tgname LIKE 'pgtrigger_%%'")
        triggers = cursor.fetchall()
    for model in TRACKED:
        names = [name for table, name in triggers if table == model._meta.db_table]
        assert any(n.startswith("pgtrigger_update_update") for n in names), model
        assert any(n.startswith("pgtrigger_delete_delete") for n in names), model


def test_a_bulk_update_leaves_a_trace_of_every_row(clinic):
    patients = [PatientFactory(clinic=clinic, player_id=f"p-{n}") for n in range(3)]
    assert Patient.objects.filter(clinic=clinic).update(risk_flag=True) == 3
    traced = events(Patient, "update")
    assert sorted(traced.values_list("pgh_obj_id", flat=True)) == sorted(p.pk for p in patients)
    assert all(row.risk_flag for row in traced)


def test_rows_made_by_bulk_create_leave_a_trace_when_changed_later(clinic):
    patient = PatientFactory(clinic=clinic, player_id="p-bulk")
    made = TherapySession.objects.bulk_create(
        [
            TherapySession(
                clinic=clinic,
                patient=patient,
                session_id=f"s-{n}",
                started_at=datetime(2026, 1, n + 1, tzinfo=UTC),
                status="active",
            )
            for n in range(4)
        ]
    )
    assert events(TherapySession).count() == 0  # inserts are not history: the row itself is
    TherapySession.objects.filter(patient=patient).update(status="abandoned")
    traced = events(TherapySession, "update")
    assert sorted(traced.values_list("pgh_obj_id", flat=True)) == sorted(s.pk for s in made)
    assert set(traced.values_list("status", flat=True)) == {"abandoned"}


def test_a_raw_sql_update_of_patient_rows_leaves_a_trace(clinic):
    patient = PatientFactory(clinic=clinic, player_id="p-raw")
    response = OutcomeResponseFactory(patient=patient, total=12)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE tracking_patient SET timezone = %s WHERE id = %s", ["Asia/Tokyo", patient.pk])
        cursor.execute("UPDATE reports_outcomeresponse SET total = 3 WHERE id = %s", [response.pk])
    [row] = events(Patient, "update")
    assert (row.pgh_obj_id, row.timezone, row.player_id) == (patient.pk, "Asia/Tokyo", "p-raw")
    [answer] = events(OutcomeResponse, "update")
    assert (answer.pgh_obj_id, answer.total) == (response.pk, 3)


def test_deletes_keep_the_row_as_it_was(clinic, patient_a):
    session = TherapySessionFactory(patient=patient_a)
    alert = Alert.objects.create(
        clinic=clinic,
        patient=patient_a,
        kind="crisis_signal",
        severity="high",
        reason="r",
        occurred_at=session.started_at,
    )
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM reports_alert WHERE id = %s", [alert.pk])
    TherapySession.objects.filter(pk=session.pk).delete()
    CareAssignment.objects.filter(patient=patient_a).delete()
    assert list(events(Alert, "delete").values_list("pgh_obj_id", "severity")) == [(alert.pk, "high")]
    assert list(events(TherapySession, "delete").values_list("pgh_obj_id", flat=True)) == [session.pk]
    assert events(CareAssignment, "delete").count() == 1


def test_bookkeeping_alone_makes_no_history(clinic):
    """Freshness stamps of the analytics and the e-mail outbox's retries are not patient data."""
    patient = PatientFactory(clinic=clinic, player_id="p-book")
    Patient.objects.filter(pk=patient.pk).update(data_changed_at=datetime(2026, 1, 1, tzinfo=UTC), analytics_failures=2)
    assert events(Patient).count() == 0
    Patient.objects.filter(pk=patient.pk).update(risk_flag=True)
    assert events(Patient).count() == 1


def test_an_unchanged_update_makes_no_history(clinic):
    patient = PatientFactory(clinic=clinic, player_id="p-same", timezone="")
    Patient.objects.filter(pk=patient.pk).update(timezone="")
    assert events(Patient).count() == 0
