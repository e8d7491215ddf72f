"""`manage.py seed_demo`: what it creates, that it is deterministic, and that both writers agree."""

import hashlib
import io
from datetime import UTC, datetime, timedelta
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.db.models import Count, F

from reports.models import Alert, AlertKind, AlertSeverity, MeasureStatus, OutcomeResponse
from reports.selectors import measures_due
from tracking.models import (
    CareAssignment,
    Clinic,
    MarkerType,
    Membership,
    Patient,
    ProgressMarker,
    Role,
    TherapySession,
)

# A fixed clock, so that two runs cannot differ by an event falling between them ("today" is its date).
NOW = datetime(2026, 3, 18, 14, 30, 0, tzinfo=UTC)
SMALL = ["--patients", "12", "--days", "30"]


def seed(*args: str) -> str:
    out = io.StringIO()
    with mock.patch("django.utils.timezone.now", return_value=NOW):
        call_command("seed_demo", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def digest() -> str:
    """A hash of everything the generator decides (not database ids, not the time of insertion)."""
    h = hashlib.sha256()
    rows = [
        Patient.objects.order_by("clinic__slug", "player_id").values_list(
            "clinic__slug", "player_id", "timezone", "risk_flag", "risk_flag_raised_at",
            "assignments__therapist__username",
        ),
        TherapySession.objects.order_by("clinic__slug", "session_id").values_list(
            "patient__player_id", "session_id", "started_at", "ended_at", "status", "duration_minutes", "world",
            "character", "approaches", "interventions_count", "key_achievements",
        ),
        ProgressMarker.objects.order_by("clinic__slug", "marker_id").values_list(
            "marker_id", "session__session_id", "patient__player_id", "type", "description", "achieved_at",
            "therapeutic_value", "related_goal_id",
        ),
        OutcomeResponse.objects.order_by("clinic__slug", "response_id").values_list(
            "response_id", "patient__player_id", "instrument", "administered_at", "total",
            *[f"item_{n}" for n in range(1, 10)],
        ),
        Alert.objects.order_by("patient__player_id", "occurred_at", "kind").values_list(
            "patient__player_id", "kind", "severity", "reason", "alert_id", "source_response__response_id",
            "occurred_at",
        ),
    ]  # fmt: skip
    for queryset in rows:
        for row in queryset:
            h.update(repr(row).encode())
    return h.hexdigest()


@pytest.mark.django_db
def test_small_seed_creates_clinics_staff_and_patients():
    out = seed(*SMALL)

    clinics = {c.slug: c for c in Clinic.objects.all()}
    assert clinics["northside"].name == "Northside Wellbeing Clinic"
    assert clinics["northside"].timezone == "Europe/London"
    assert clinics["riverside"].name == "Riverside Counselling"
    assert clinics["riverside"].timezone == "America/New_York"
    for slug in ("northside", "riverside"):
        roles = sorted(Membership.objects.filter(clinic__slug=slug).values_list("role", flat=True))
        assert roles == sorted([Role.THERAPIST, Role.THERAPIST, Role.CLINIC_ADMIN, Role.AUDITOR])
    assert get_user_model().objects.get(username="therapist.anna").check_password("demo-password-2026")
    for username in ("therapist.anna", "admin.northside", "auditor.riverside", "therapist.dev"):
        assert username in out
    assert "demo-password-2026" in out

    patients = list(Patient.objects.select_related("clinic").annotate(n=Count("assignments")))
    assert len(patients) == 12
    assert {p.clinic.slug for p in patients} == {"northside", "riverside"}
    assert all(p.n == 1 for p in patients)
    # Each patient's therapist is a therapist of the patient's own clinic.
    for assignment in CareAssignment.objects.select_related("patient"):
        assert Membership.objects.filter(
            user_id=assignment.therapist_id, clinic_id=assignment.patient.clinic_id, role=Role.THERAPIST
        ).exists()
    assert any(p.timezone and p.timezone != p.clinic.timezone for p in patients)
    assert all(p.data_changed_at == NOW for p in patients)
    assert sorted(p.player_id for p in patients if p.clinic.slug == "northside")[0] == "nw-0001"


@pytest.mark.django_db
def test_small_seed_activity_is_plausible():
    seed(*SMALL)

    sessions = TherapySession.objects.all()
    assert sessions.count() > 100
    assert not sessions.filter(started_at__gt=NOW).exists()
    assert not sessions.exclude(patient__clinic_id=F("clinic_id")).exists()
    assert not sessions.filter(ended_at__lt=F("started_at")).exists()
    assert not sessions.filter(status="completed", duration_minutes__lt=5).exists()
    assert not sessions.filter(duration_minutes__gt=45).exists()
    assert set(sessions.values_list("status", flat=True)) >= {"completed", "abandoned", "paused"}

    markers = ProgressMarker.objects.all()
    assert set(markers.values_list("type", flat=True)) == set(MarkerType.values)
    counts = dict(markers.values_list("type").annotate(n=Count("pk")))
    assert max(counts, key=counts.get) == MarkerType.SKILL_ACQUIRED
    # Every marker belongs to its session's patient and lies within the session.
    assert not markers.exclude(session__patient_id=F("patient_id")).exists()
    assert not markers.exclude(clinic_id=F("session__clinic_id")).exists()
    assert not markers.filter(achieved_at__lt=F("session__started_at")).exists()
    assert not markers.filter(achieved_at__gt=NOW).exists()
    assert not markers.filter(therapeutic_value__lt=0).exists() and not markers.filter(therapeutic_value__gt=1).exists()

    # Someone is on a current streak of at least a week (active days in the patient's own time zone).
    def current_streak(patient: Patient) -> int:
        tz = ZoneInfo(patient.tz_name)
        days = {t.astimezone(tz).date() for t in patient.sessions.values_list("started_at", flat=True)}
        day = NOW.astimezone(tz).date()
        if day not in days:
            day -= timedelta(days=1)
        streak = 0
        while day in days:
            streak, day = streak + 1, day - timedelta(days=1)
        return streak

    patients = list(Patient.objects.select_related("clinic"))
    assert max(current_streak(p) for p in patients) >= 7
    # ...and someone has stopped playing 10 or more days ago.
    last = {p.pk: p.sessions.order_by("-started_at").values_list("started_at", flat=True).first() for p in patients}
    assert any(t is not None and NOW - t > timedelta(days=10) for t in last.values())


@pytest.mark.django_db
def test_small_seed_outcomes_and_alerts():
    seed(*SMALL)

    responses = list(OutcomeResponse.objects.all())
    assert {r.instrument for r in responses} == {"phq9", "gad7"}
    for response in responses:
        assert len(response.items) == (9 if response.instrument == "phq9" else 7)
        assert sum(response.items) == response.total
    assert not OutcomeResponse.objects.exclude(patient__clinic_id=F("clinic_id")).exists()

    item9 = [r for r in responses if r.instrument == "phq9" and r.items[8] > 0]
    assert item9
    for response in item9:
        alert = Alert.objects.get(source_response=response, kind=AlertKind.ITEM9)
        assert alert.severity == AlertSeverity.URGENT
        assert alert.occurred_at == response.administered_at
        assert alert.reason == f"PHQ-9 item 9 answered {response.items[8]}"
        assert alert.patient_id == response.patient_id
        patient = response.patient
        assert patient.risk_flag and patient.risk_flag_raised_at <= response.administered_at
    assert Alert.objects.filter(kind=AlertKind.ITEM9).count() == len(item9)

    crisis = Alert.objects.filter(kind=AlertKind.CRISIS_SIGNAL)
    assert crisis.count() >= 2
    assert all(a.alert_id and a.severity == AlertSeverity.URGENT for a in crisis)

    # Some patients have no questionnaire, some just one, most several.
    per_patient = [p.outcome_responses.filter(instrument="phq9").count() for p in Patient.objects.all()]
    assert 0 in per_patient and 1 in per_patient and max(per_patient) >= 2


@pytest.mark.django_db
def test_same_seed_gives_identical_data_and_another_seed_does_not():
    seed(*SMALL, "--seed", "7")
    first = digest()
    seed(*SMALL, "--seed", "7", "--reset")
    assert digest() == first
    assert Clinic.objects.count() == 2 and Patient.objects.count() == 12
    seed(*SMALL, "--seed", "8", "--reset")
    assert digest() != first


@pytest.mark.django_db
def test_rerun_without_reset_changes_nothing():
    seed(*SMALL)
    before = (digest(), TherapySession.objects.count())
    out = seed("--patients", "20")
    assert "already exist" in out and "therapist.anna" in out
    assert (digest(), TherapySession.objects.count()) == before


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL only")
def test_copy_and_bulk_create_writers_produce_the_same_data():
    seed(*SMALL, "--writer", "copy")
    copied = digest()
    seed(*SMALL, "--writer", "orm", "--reset")
    assert digest() == copied


@pytest.mark.django_db
def test_bad_arguments_are_refused():
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="--patients"):
        seed("--patients", "0")
    with pytest.raises(CommandError, match="--days"):
        seed("--days", "0")


@pytest.mark.django_db
def test_the_demo_shows_every_state_of_cadence_and_expected_recovery():
    """DESIGN §8 in the demo: measures due and not due; on track, and not on track on each basis."""
    seed()
    statuses = set(MeasureStatus.objects.values_list("not_on_track", "basis"))
    assert {(False, "clinic_reference"), (True, "clinic_reference")} <= statuses
    assert {(False, "no_reliable_improvement"), (True, "no_reliable_improvement"), (None, "")} <= statuses
    stalled = MeasureStatus.objects.get(not_on_track=True, basis="clinic_reference", patient__clinic__slug="northside")
    assert stalled.patient.assignments.get().therapist.username == "therapist.anna"  # the first demo login's
    alerts = Alert.objects.filter(patient=stalled.patient, kind=AlertKind.NOT_ON_TRACK)
    assert alerts.filter(notified_at__isnull=False).exists()  # seeded as history: nobody is e-mailed
    assert stalled.patient.clinical_notes.filter(author__username="therapist.anna").count() == 2
    due = {bool(measures_due(p, now=NOW)) for p in Patient.objects.select_related("clinic")}
    assert due == {True, False}
