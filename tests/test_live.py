"""Live updates: the event stream, and that an open page never keeps a login alive."""

from datetime import timedelta

from django.contrib.sessions.models import Session
from django.utils import timezone

from tests.conftest import logged_in
from tracking import live


def _expiry(client):
    return Session.objects.get(session_key=client.session.session_key).expire_date


def test_live_requests_do_not_extend_the_idle_timeout(therapist_a, patient_a):
    client = logged_in(therapist_a)
    soon = timezone.now() + timedelta(seconds=60)
    Session.objects.filter(session_key=client.session.session_key).update(expire_date=soon)
    assert client.get(f"/patients/{patient_a.player_id}/live.json").status_code == 200
    assert client.get("/live/inbox.json").status_code == 200
    assert client.get(f"/patients/{patient_a.player_id}/live").status_code == 200
    assert _expiry(client) == soon
    assert client.get("/").status_code == 200  # what a person does extends it
    assert _expiry(client) > soon + timedelta(minutes=10)


def test_the_stream_announces_a_change_of_its_patient_and_ends_with_the_session(db):
    stream = live.event_stream(patient_id=42, clinic_ids=[7], session_expires_at=timezone.now() + timedelta(minutes=5))
    assert next(stream) == "retry: 2000\n\n"
    live.bump(patient_ids=[42])
    assert next(stream) == "event: patient\ndata: {}\n\n"
    live.bump(alert_clinic_ids=[7])
    assert next(stream) == "event: alerts\ndata: {}\n\n"
    stream.close()

    expired = live.event_stream(patient_id=42, clinic_ids=[], session_expires_at=timezone.now())
    assert list(expired) == ["retry: 2000\n\n", 'event: bye\ndata: {"reason": "session"}\n\n']


def test_the_inbox_lists_open_alerts_of_the_caseload_only(therapist_a, patient_a, patient_b, api):
    batch = {
        "alerts": [
            {
                "alert_id": f"a-{p.player_id}",
                "player_id": p.player_id,
                "level": "urgent",
                "reason": "r",
                "occurred_at": timezone.now().isoformat(),
            }
            for p in (patient_a, patient_b)
        ]
    }
    api.post("/api/v1/ingest", batch, content_type="application/json")
    inbox = logged_in(therapist_a).get("/live/inbox.json").json()
    assert inbox["open"] == 1 and [a["player_id"] for a in inbox["latest"]] == [patient_a.player_id]
