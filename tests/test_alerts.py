"""Therapists acknowledge alerts and clear risk flags (only with a note)."""

from django.utils import timezone

from reports.models import Alert
from tests.conftest import logged_in
from tracking.models import Patient


def crisis(api, player_id: str, alert_id: str = "c1"):
    batch = {
        "alerts": [
            {
                "alert_id": alert_id,
                "player_id": player_id,
                "level": "urgent",
                "reason": "Crisis phrase",
                "occurred_at": timezone.now().isoformat(),
            }
        ]
    }
    assert api.post("/api/v1/ingest", batch, content_type="application/json").status_code == 201
    return Alert.objects.get(alert_id=alert_id)


def test_acknowledging_an_alert_records_who_when_and_the_note(api, therapist_a, patient_a):
    alert = crisis(api, patient_a.player_id)
    client = logged_in(therapist_a)
    assert client.get("/live/inbox.json").json()["open"] == 1
    response = client.post(
        f"/patients/{patient_a.player_id}/alerts/{alert.pk}/acknowledge", {"note": "Called the patient"}
    )
    assert response.status_code == 302 and response["Location"].endswith("#alerts")
    alert.refresh_from_db()
    assert (alert.acknowledged_by, alert.note) == (therapist_a, "Called the patient") and alert.acknowledged_at
    assert client.get("/live/inbox.json").json()["open"] == 0
    page = client.get(f"/patients/{patient_a.player_id}/").content.decode()
    assert "acknowledged by therapist.a" in page and "Called the patient" in page


def test_another_therapist_cannot_acknowledge(api, therapist_b, patient_a):
    alert = crisis(api, patient_a.player_id)
    assert (
        logged_in(therapist_b).post(f"/patients/{patient_a.player_id}/alerts/{alert.pk}/acknowledge").status_code == 404
    )
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


def test_the_risk_flag_is_cleared_only_with_a_note(api, therapist_a, patient_a):
    crisis(api, patient_a.player_id)
    client = logged_in(therapist_a)
    url = f"/patients/{patient_a.player_id}/risk-flag/clear"
    client.post(url, {"note": "   "})
    assert Patient.objects.get(pk=patient_a.pk).risk_flag is True
    assert "Say why the risk flag can be cleared." in client.get(f"/patients/{patient_a.player_id}/").content.decode()
    client.post(url, {"note": "Safety plan reviewed in session"})
    patient = Patient.objects.get(pk=patient_a.pk)
    assert (patient.risk_flag, patient.risk_flag_cleared_by, patient.risk_flag_clear_note) == (
        False,
        therapist_a,
        "Safety plan reviewed in session",
    )
    crisis(api, patient_a.player_id, alert_id="c2")  # a new urgent alert raises it again
    assert Patient.objects.get(pk=patient_a.pk).risk_flag is True
