"""Sessions aggregated per patient and local day (issue 14, item 2), kept by statement triggers on the
sessions table: after any sequence of writes the stored days equal the sessions grouped afresh, in the
patient's zone, across clock changes; a patient whose zone changed is read from the sessions until their
next session rebuilds the days; the recompute reads the stored days."""

import json
import random
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.factories import PatientFactory, TherapySessionFactory
from tracking import history
from tracking.models import Patient, PatientDay, TherapySession

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="the triggers are PostgreSQL's")

DAY_ZERO = date(2000, 1, 1).toordinal()
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE = datetime(2026, 3, 20, tzinfo=UTC)  # the month holds the spring clock changes of Europe and America


def grouped(patient: Patient) -> list[tuple]:
    """The patient's sessions grouped afresh in their zone now (the portable per-day query)."""
    days = history.active_days_per_row(patient.tz_name, [patient.pk]).get(patient.pk, ())
    return [
        (d.day.toordinal() - DAY_ZERO, d.sessions, d.minutes, (d.first_started_at - EPOCH) // timedelta(microseconds=1))
        for d in days
    ]


def stored(patient: Patient) -> list[tuple]:
    rows = PatientDay.objects.filter(patient=patient).order_by("day")
    assert {r.tz for r in rows} <= {patient.tz_name}
    return [(r.day, r.sessions, r.minutes, r.first_us) for r in rows]


def at(rng: random.Random) -> datetime:
    return BASE + timedelta(minutes=rng.randrange(60 * 24 * 30), microseconds=rng.randrange(10**6))


@pytest.mark.parametrize("zone", ["Europe/London", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"])
def test_the_stored_days_equal_the_sessions_grouped_afresh_after_any_writes(clinic, zone):
    rng = random.Random(zone)
    patients = [PatientFactory(clinic=clinic, player_id=f"pd-{n}", timezone=zone) for n in range(3)]
    made: list[int] = []
    for step in range(120):
        action = rng.random()
        if action < 0.5 or not made:
            made.append(TherapySessionFactory(patient=rng.choice(patients), started_at=at(rng)).pk)
        elif action < 0.65:  # a batch, as ingest writes them: one INSERT of many rows
            patient = rng.choice(patients)
            sessions = TherapySession.objects.bulk_create(
                TherapySession(
                    clinic=clinic,
                    patient=patient,
                    session_id=f"bulk-{step}-{n}",
                    started_at=at(rng),
                    status="completed",
                    duration_minutes=rng.choice([0, 7.5, 20]),
                )
                for n in range(rng.randrange(1, 6))
            )
            made.extend(s.pk for s in sessions)
        elif action < 0.85:  # moved in time, and a new duration: one UPDATE
            moved = rng.sample(made, min(len(made), 3))
            new_start = at(rng)
            TherapySession.objects.filter(pk__in=moved).update(
                started_at=new_start, ended_at=new_start + timedelta(minutes=20), duration_minutes=12.5
            )
        else:
            TherapySession.objects.filter(pk=made.pop(rng.randrange(len(made)))).delete()
        for patient in patients:
            assert stored(patient) == grouped(patient), f"step {step}"


def test_a_patient_whose_zone_changed_is_read_from_the_sessions_until_their_next_session(clinic):
    patient = PatientFactory(clinic=clinic, timezone="Europe/London")
    rng = random.Random(1)
    for _ in range(40):
        TherapySessionFactory(patient=patient, started_at=at(rng))
    Patient.objects.filter(pk=patient.pk).update(timezone="Pacific/Auckland")
    patient.refresh_from_db()
    assert set(PatientDay.objects.filter(patient=patient).values_list("tz", flat=True)) == {"Europe/London"}
    # The recompute's read: grouped from the sessions in the new zone, not from the stale days.
    assert history.active_days_by_patient("Pacific/Auckland", [patient.pk]) == history.active_days_per_row(
        "Pacific/Auckland", [patient.pk]
    )
    TherapySessionFactory(patient=patient, started_at=at(rng))  # the next session rebuilds every day
    assert stored(patient) == grouped(patient)
    assert history.active_days_by_patient("Pacific/Auckland", [patient.pk]) == history.active_days_per_row(
        "Pacific/Auckland", [patient.pk]
    )


def test_a_clinic_zone_change_is_followed_the_same_way(clinic):
    patient = PatientFactory(clinic=clinic)  # no zone of their own: the clinic's
    rng = random.Random(2)
    for _ in range(30):
        TherapySessionFactory(patient=patient, started_at=at(rng))
    clinic.timezone = "America/Los_Angeles"
    clinic.save()
    patient = Patient.objects.select_related("clinic").get(pk=patient.pk)
    assert history.active_days_by_patient(patient.tz_name, [patient.pk]) == history.active_days_per_row(
        patient.tz_name, [patient.pk]
    )
    TherapySessionFactory(patient=patient, started_at=at(rng))
    assert stored(patient) == grouped(patient)


def test_the_recompute_reads_the_stored_days(clinic):
    patient = PatientFactory(clinic=clinic)
    for n in range(5):
        TherapySessionFactory(patient=patient, started_at=BASE + timedelta(days=n))
    # Make the stored days say something the sessions do not: the read must come from them.
    PatientDay.objects.filter(patient=patient).update(sessions=7)
    days = history.active_days_by_patient(patient.tz_name, [patient.pk])[patient.pk]
    assert [d.sessions for d in days] == [7] * 5


def test_ingest_keeps_the_days_and_deleting_a_patient_removes_them(api, clinic):
    now = timezone.now().replace(microsecond=0)
    sessions = [
        {
            "session_id": f"ing-{n}",
            "player_id": "pd-ingest",
            "started_at": (now - timedelta(days=n // 2, hours=n)).isoformat(),
            "status": "completed",
            "duration_minutes": 10 + n,
        }
        for n in range(8)
    ]
    body = {"sessions": sessions, "markers": []}
    assert api.post("/api/v1/ingest", json.dumps(body), content_type="application/json").status_code == 201
    body["sessions"][0]["duration_minutes"] = 45  # posted again with one change: one UPDATE
    assert api.post("/api/v1/ingest", json.dumps(body), content_type="application/json").status_code == 200
    patient = Patient.objects.select_related("clinic").get(player_id="pd-ingest")
    assert stored(patient) == grouped(patient)
    assert sum(row[1] for row in stored(patient)) == 8
    patient.delete()
    assert not PatientDay.objects.exists()


def test_days_that_arrive_out_of_order_are_put_in_order():
    days = history._active_days({}, [9000, 8998, 8999], [1, 2, 3], [10.0, 20.0, 30.0], [3, 1, 2])
    assert [(d.day.toordinal() - DAY_ZERO, d.sessions, d.minutes) for d in days] == [
        (8998, 2, 20.0),
        (8999, 3, 30.0),
        (9000, 1, 10.0),
    ]
    assert [d.first_started_at for d in days] == [EPOCH + timedelta(microseconds=n) for n in (1, 2, 3)]
