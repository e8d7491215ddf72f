"""The operator commands (DESIGN §6): they work, and bad input is a clear error with a non-zero exit."""

import csv
import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from reports.exports import safe_text
from tests.conftest import logged_in
from tests.factories import CareAssignmentFactory, OutcomeResponseFactory, PatientFactory, TherapySessionFactory
from tracking.models import CareAssignment, Clinic, IngestToken, Membership, Patient, ProgressSummary
from tracking.services import hash_token


def run(*args, **kwargs) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **kwargs)
    return out.getvalue()


def test_provisioning_a_clinic_end_to_end(db, monkeypatch):
    assert "Created clinic north" in run("create_clinic", "north", name="North Clinic", timezone="Europe/London")
    monkeypatch.setenv("NEW_USER_PASSWORD", "a-long-enough-passphrase")
    run("create_user", "anna", clinic="north", role="therapist")
    user = get_user_model().objects.get(username="anna")
    assert user.check_password("a-long-enough-passphrase")
    assert Membership.objects.get(user=user).role == "therapist"
    patient = PatientFactory(clinic=Clinic.objects.get(slug="north"), player_id="player-7")
    run("assign_patient", "player-7", "anna", clinic="north")
    assert CareAssignment.objects.filter(patient=patient, therapist=user).exists()
    token = run("create_ingest_token", clinic="north", name="game").strip()
    stored = IngestToken.objects.get(name="game")
    assert stored.token_hash == hash_token(token) and token not in (stored.token_hash, stored.prefix)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("create_clinic", "north"), {"name": "Again"}, "already exists"),
        (("create_clinic", "south"), {"name": "South", "timezone": "Mars/Olympus"}, "Unknown time zone"),
        (("create_user", "bob"), {"clinic": "nowhere", "role": "therapist"}, "No clinic with slug 'nowhere'"),
        (("create_user", "anna"), {"clinic": "north", "role": "therapist"}, "already exists"),
        (("assign_patient", "ghost", "anna"), {"clinic": "north"}, "No patient 'ghost'"),
        (("assign_patient", "p-1", "nobody"), {"clinic": "north"}, "not a member"),
        (("assign_patient", "p-1", "audrey"), {"clinic": "north"}, "only therapists"),
        (("create_ingest_token",), {"clinic": "nowhere", "name": "x"}, "No clinic"),
        (("recompute_analytics",), {"clinic": "north", "patient": "ghost"}, "No patient 'ghost'"),
        (("recompute_analytics",), {"patient": "p-1"}, "needs --clinic"),
    ],
)
def test_bad_input_is_a_clear_error(db, monkeypatch, args, kwargs, message):
    call_command("create_clinic", "north", name="North", stdout=io.StringIO())
    monkeypatch.setenv("NEW_USER_PASSWORD", "a-long-enough-passphrase")
    call_command("create_user", "anna", clinic="north", role="therapist", stdout=io.StringIO())
    call_command("create_user", "audrey", clinic="north", role="auditor", stdout=io.StringIO())
    PatientFactory(clinic=Clinic.objects.get(slug="north"), player_id="p-1")
    with pytest.raises(CommandError, match=message):
        call_command(*args, **kwargs, stdout=io.StringIO(), stderr=io.StringIO())


def test_create_user_rejects_a_weak_password(db, monkeypatch):
    call_command("create_clinic", "north", name="North", stdout=io.StringIO())
    monkeypatch.setenv("NEW_USER_PASSWORD", "short")
    with pytest.raises(CommandError, match="Password rejected"):
        call_command("create_user", "anna", clinic="north", role="therapist", stdout=io.StringIO())
    assert not get_user_model().objects.filter(username="anna").exists()


def test_recompute_analytics_only_stale_patients_unless_all(clinic):
    fresh, stale = PatientFactory(clinic=clinic), PatientFactory(clinic=clinic)
    for patient in (fresh, stale):
        TherapySessionFactory(patient=patient)
    Patient.objects.update(data_changed_at="2026-01-01T00:00:00Z")
    assert "of 2 patient(s)" in run("recompute_analytics", clinic=clinic.slug)
    assert ProgressSummary.objects.count() == 2
    assert "of 0 patient(s)" in run("recompute_analytics")
    Patient.objects.filter(pk=stale.pk).update(data_changed_at="2999-01-01T00:00:00Z")
    assert "of 1 patient(s)" in run("recompute_analytics")
    assert "of 2 patient(s)" in run("recompute_analytics", all=True)


def test_revoke_ingest_token(clinic):
    token = run("create_ingest_token", clinic=clinic.slug, name="game").strip()
    run("create_ingest_token", clinic=clinic.slug, name="game")  # a second one of the same name
    with pytest.raises(CommandError, match="2 active tokens match"):
        call_command("revoke_ingest_token", clinic=clinic.slug, name="game", stdout=io.StringIO())
    assert "Revoked token 'game'" in run("revoke_ingest_token", clinic=clinic.slug, prefix=token[:10])
    assert IngestToken.objects.get(token_hash=hash_token(token)).revoked_at is not None
    with pytest.raises(CommandError, match="No active token"):
        call_command("revoke_ingest_token", clinic=clinic.slug, prefix=token[:10], stdout=io.StringIO())


# ----- effectiveness_report --format csv escapes spreadsheet formulas as the web export does -------


@pytest.mark.parametrize("player_id", ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "\tx", "\rx", "plain-1"])
def test_effectiveness_csv_guards_player_ids_like_the_web_export(clinic, therapist_a, player_id):
    """Ids stored before the §6 id rule (or by any path that skipped it) may start with a formula."""
    patient = CareAssignmentFactory(patient=PatientFactory(clinic=clinic, player_id=player_id), therapist=therapist_a)
    OutcomeResponseFactory(patient=patient.patient, instrument="phq9", total=12)
    command_rows = list(csv.DictReader(io.StringIO(run("effectiveness_report", clinic=clinic.slug, format="csv"))))
    web = logged_in(therapist_a).get("/outcomes/export.csv")
    assert web.status_code == 200
    web_rows = list(csv.DictReader(io.StringIO(web.content.decode("utf-8-sig"))))
    assert [r["player_id"] for r in command_rows] == [r["player_id"] for r in web_rows] == [safe_text(player_id)]
    assert not command_rows[0]["player_id"].startswith(("=", "+", "-", "@", "\t", "\r"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the hand-written limit is PostgreSQL SQL")
def test_benchmark_analytics_runs_end_to_end_on_a_small_cohort(clinic):
    """The benchmark itself works (it was broken once by the connection pool, unnoticed): its operations,
    the vacuum of what the recompute writes (outside any transaction) and the two processes' recompute of
    every patient."""
    for i in range(6):
        TherapySessionFactory.create_batch(3, patient=PatientFactory(clinic=clinic, player_id=f"bench-{i}"))
    out = run("benchmark_analytics", iterations=3, processes=2, rounds=2)
    assert "compute_progress_summary / limit:" in out
    assert "round 1: full-cohort recompute: 6 patients in" in out
    assert "round 2: full-cohort recompute: 6 patients in" in out
    assert ProgressSummary.objects.count() == 6


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the hand-written limit is PostgreSQL SQL")
def test_benchmark_analytics_makes_and_measures_the_long_patient_once(clinic, monkeypatch):
    from tracking.management.commands import benchmark_analytics

    monkeypatch.setattr(benchmark_analytics, "LONG_SESSIONS", 40)  # the shape of the 20,000, smaller
    for _ in range(2):
        out = run("benchmark_analytics", iterations=2, processes=1, rounds=1, long_patient=True, cohort=1)
        assert "patient bench-20k: 40 sessions, 10 markers" in out
    assert Patient.objects.filter(player_id="bench-20k").count() == 1


def test_benchmark_pages_gives_both_caseloads_exactly_their_size(clinic):
    TherapySessionFactory.create_batch(3, patient=PatientFactory(clinic=clinic, player_id="busiest"))
    for i in range(12):
        PatientFactory(clinic=clinic, player_id=f"page-{i}")
    for _ in range(2):  # a second run leaves no extra assignment behind
        out = run("benchmark_pages", iterations=2, caseload=2)
        assert "caseload of 2 (filter: deteriorating)" in out and "caseload of 10 (filter: deteriorating)" in out
    assert CareAssignment.objects.filter(therapist__username="bench.therapist").count() == 2
    assert CareAssignment.objects.filter(therapist__username="bench.therapist.5x").count() == 10
