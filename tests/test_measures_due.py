"""The measurement-based-care reads of DESIGN §8: `measures-due` (the game asks which questionnaires to
offer; the rules are pinned in tests/unit/test_cadence.py) and the `fhir` export (its shape is pinned in
tests/unit/test_fhir.py); here the endpoints' data, clock and access."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from tests.conftest import logged_in
from tests.factories import OutcomeResponseFactory, TherapySessionFactory
from tracking.models import AuditEvent

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def due(client, player_id):
    response = client.get(f"/api/v1/patients/{player_id}/measures-due")
    assert response.status_code == 200
    return response.json()["due"]


@time_machine.travel(NOW, tick=False)
def test_the_game_is_told_which_measures_are_due_for_an_active_patient(api, patient_a):
    TherapySessionFactory(patient=patient_a, started_at=NOW - timedelta(days=28))  # active, and tomorrow too
    OutcomeResponseFactory(patient=patient_a, instrument="phq9", total=16, administered_at=NOW - timedelta(days=13))
    assert due(api, patient_a.player_id) == [{"instrument": "gad7", "due_since": None, "last_administered_at": None}]
    OutcomeResponseFactory(patient=patient_a, instrument="gad7", total=9, administered_at=NOW - timedelta(days=20))
    [gad7] = due(api, patient_a.player_id)
    # The interval (14 days) ran out six local days ago; Europe/London is UTC+1 in June.
    assert gad7 == {
        "instrument": "gad7",
        "due_since": (NOW - timedelta(days=6)).date().isoformat(),
        "last_administered_at": "2026-05-26T12:00:00Z",
    }
    with time_machine.travel(NOW + timedelta(days=1), tick=False):
        assert [m["instrument"] for m in due(api, patient_a.player_id)] == ["phq9", "gad7"]


@time_machine.travel(NOW, tick=False)
def test_an_inactive_patient_has_nothing_due_and_the_clinics_interval_counts(api, patient_a):
    TherapySessionFactory(patient=patient_a, started_at=NOW - timedelta(days=30, hours=12))
    assert due(api, patient_a.player_id) == []
    TherapySessionFactory(patient=patient_a, started_at=NOW - timedelta(days=2))
    OutcomeResponseFactory(patient=patient_a, instrument="phq9", total=10, administered_at=NOW - timedelta(days=7))
    OutcomeResponseFactory(patient=patient_a, instrument="gad7", total=10, administered_at=NOW - timedelta(days=7))
    assert due(api, patient_a.player_id) == []
    patient_a.clinic.measure_interval_days = 7
    patient_a.clinic.save()
    assert [m["instrument"] for m in due(api, patient_a.player_id)] == ["phq9", "gad7"]


def test_the_read_is_audited_and_other_patients_are_404(therapist_a, patient_a, patient_b, foreign_patient):
    client = logged_in(therapist_a)
    assert client.get(f"/api/v1/patients/{patient_b.player_id}/measures-due").status_code == 404
    assert client.get(f"/api/v1/patients/{foreign_patient.player_id}/measures-due").status_code == 404
    assert due(client, patient_a.player_id) == []  # no session: inactive
    event = AuditEvent.objects.filter(action="patient.read").latest("id")
    assert event.patients == [patient_a.player_id] and event.actor == therapist_a.username


def test_the_fhir_export_carries_the_patients_responses(api, patient_a, settings):
    from fhir.resources.R4B.bundle import Bundle

    settings.SITE_URL = "https://progress.example.org"
    OutcomeResponseFactory(patient=patient_a, instrument="phq9", total=16, administered_at=NOW)
    response = api.get(f"/api/v1/patients/{patient_a.player_id}/fhir")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(response.json())
    kinds = [entry.resource.get_resource_type() for entry in bundle.entry]
    assert kinds == ["Patient", "QuestionnaireResponse", "Observation"]
    [identifier] = bundle.entry[0].resource.identifier
    assert (identifier.system, identifier.value) == (
        f"https://progress.example.org/clinics/{patient_a.clinic.slug}/players",
        patient_a.player_id,
    )
    assert bundle.entry[2].resource.valueInteger == 16
