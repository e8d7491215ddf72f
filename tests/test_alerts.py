"""Therapists acknowledge alerts and clear risk flags (only with a note)."""

from django.utils import timezone

from reports.models import Alert
from tests.conftest import logged_in
from tests.factories import TherapySessionFactory
from tracking import recompute
from tracking.models import Patient


def crisis_batch(player_id: str, alert_id: str = "c1", level: str = "urgent", reason: str = "Crisis phrase") -> dict:
    """An ingest batch with one crisis signal from the game."""
    return {
        "alerts": [
            {
                "alert_id": alert_id,
                "player_id": player_id,
                "level": level,
                "reason": reason,
                "occurred_at": timezone.now().isoformat(),
            }
        ]
    }


def crisis(api, player_id: str, alert_id: str = "c1", **fields) -> Alert:
    """Posts a crisis signal through the ingest API; returns the alert it raised."""
    response = api.post("/api/v1/ingest", crisis_batch(player_id, alert_id, **fields), content_type="application/json")
    assert response.status_code == 201
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


def phq9(api, player_id: str, response_id: str, total: int, days_ago: int, instrument: str = "phq9"):
    batch = {
        "outcomes": [
            {
                "response_id": response_id,
                "player_id": player_id,
                "instrument": instrument,
                "total": total,
                "administered_at": (timezone.now() - timezone.timedelta(days=days_ago)).isoformat(),
            }
        ]
    }
    assert api.post("/api/v1/ingest", batch, content_type="application/json").status_code == 201


def deterioration_alerts(patient):
    return list(Alert.objects.filter(patient=patient, kind="reliable_deterioration").order_by("pk"))


def test_a_rise_of_5_on_phq9_is_not_reliable_but_6_raises_a_high_alert(api, patient_a, patient_b):
    phq9(api, patient_a.player_id, "a1", 8, 30)
    phq9(api, patient_a.player_id, "a2", 13, 1)
    assert deterioration_alerts(patient_a) == []
    phq9(api, patient_b.player_id, "b1", 8, 30)
    phq9(api, patient_b.player_id, "b2", 14, 1)
    [alert] = deterioration_alerts(patient_b)
    assert alert.severity == "high" and alert.reason.startswith("PHQ-9 rose from 8 to 14")
    assert Patient.objects.get(pk=patient_b.pk).risk_flag is True


def test_gad7_rise_of_4_is_reliable_and_an_open_alert_is_not_repeated(api, therapist_a, patient_a):
    phq9(api, patient_a.player_id, "g1", 5, 30, instrument="gad7")
    phq9(api, patient_a.player_id, "g2", 8, 20, instrument="gad7")
    assert deterioration_alerts(patient_a) == []
    phq9(api, patient_a.player_id, "g3", 9, 10, instrument="gad7")
    assert len(deterioration_alerts(patient_a)) == 1
    phq9(api, patient_a.player_id, "g4", 10, 5, instrument="gad7")  # still open: no second alert
    assert len(deterioration_alerts(patient_a)) == 1
    alert = deterioration_alerts(patient_a)[0]
    logged_in(therapist_a).post(f"/patients/{patient_a.player_id}/alerts/{alert.pk}/acknowledge")
    phq9(api, patient_a.player_id, "g5", 11, 1, instrument="gad7")  # acknowledged, still worse: alert again
    assert len(deterioration_alerts(patient_a)) == 2


def _sessions_days_ago(patient, days):

    for d in days:
        TherapySessionFactory(patient=patient, started_at=timezone.now() - timezone.timedelta(days=d))


def test_disengagement_after_3_active_days_and_14_without_raises_a_moderate_alert_once(patient_a, patient_b):
    _sessions_days_ago(patient_a, [20, 19, 18])  # three active days, none for 18 days
    _sessions_days_ago(patient_b, [20, 19])  # only two active days
    recompute.patients_recompute([patient_a.pk, patient_b.pk])
    recompute.patients_recompute([patient_a.pk, patient_b.pk])
    alerts = list(Alert.objects.filter(kind="disengagement"))
    assert [(a.patient_id, a.severity) for a in alerts] == [(patient_a.pk, "moderate")]
    assert "14 days or more without an active day" in alerts[0].reason
    assert Patient.objects.get(pk=patient_a.pk).risk_flag is False  # moderate alerts do not flag risk
