"""The ingest API (DESIGN §6): exact storage, idempotency, all-or-nothing batches, clear errors."""

import copy
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from reports.models import Alert, AlertKind, OutcomeResponse
from tracking.models import IngestToken, Patient, ProgressMarker, TherapySession
from tracking.services import ingest_token_revoke

URL = "/api/v1/ingest"
T0 = datetime(2026, 11, 20, 18, 30, tzinfo=UTC)


def iso(dt: datetime) -> str:
    return dt.isoformat()


def make_batch(player="player-1", prefix="") -> dict:
    return {
        "sessions": [
            {
                "session_id": f"{prefix}s1",
                "player_id": player,
                "started_at": iso(T0),
                "ended_at": iso(T0 + timedelta(minutes=25)),
                "status": "completed",
                "duration_minutes": 24.5,
                "world": "Calm Coast",
                "character": "Wren",
                "approaches": ["mindfulness", "cbt"],
                "interventions_count": 3,
                "key_achievements": ["Finished breathing exercise"],
            },
            {
                "session_id": f"{prefix}s2",
                "player_id": player,
                "started_at": iso(T0 + timedelta(days=1)),
                "status": "active",
                "duration_minutes": 5,
            },
        ],
        "markers": [
            {
                "marker_id": f"{prefix}m1",
                "session_id": f"{prefix}s1",
                "player_id": player,
                "type": "skill_acquired",
                "description": "Box breathing",
                "achieved_at": iso(T0 + timedelta(minutes=10)),
                "therapeutic_value": 0.75,
                "related_goal_id": "goal-7",
            },
            {
                "marker_id": f"{prefix}m2",
                "session_id": f"{prefix}s2",
                "player_id": player,
                "type": "breakthrough",
                "achieved_at": iso(T0 + timedelta(days=1, minutes=2)),
                "therapeutic_value": 1,
            },
        ],
        "outcomes": [
            {
                "response_id": f"{prefix}r1",
                "player_id": player,
                "instrument": "phq9",
                "administered_at": iso(T0),
                "items": [2, 2, 1, 1, 2, 1, 1, 1, 0],
                "total": 11,
            },
            {
                "response_id": f"{prefix}r2",
                "player_id": player,
                "instrument": "gad7",
                "administered_at": iso(T0),
                "total": 9,
            },
        ],
        "alerts": [
            {
                "alert_id": f"{prefix}a1",
                "player_id": player,
                "level": "urgent",
                "reason": "Player typed a crisis phrase in chat",
                "occurred_at": iso(T0 + timedelta(minutes=15)),
            }
        ],
    }


def post(client: Client, body, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(URL, data=data, content_type="application/json", **extra)


def snapshot() -> dict:
    """Everything ingest can write, to prove a rejected batch changed nothing."""
    return {
        "patients": sorted(Patient.objects.values_list("clinic_id", "player_id", "data_changed_at", "risk_flag")),
        "sessions": sorted(
            TherapySession.objects.values_list(
                "session_id", "started_at", "ended_at", "status", "duration_minutes", "updated_at"
            )
        ),
        "markers": sorted(ProgressMarker.objects.values_list("marker_id", "type", "therapeutic_value", "achieved_at")),
        "outcomes": sorted(OutcomeResponse.objects.values_list("response_id", "total")),
        "alerts": sorted(Alert.objects.values_list("kind", "reason")),
    }


def test_tests_run_on_postgresql(db):
    assert connection.vendor == "postgresql"


def test_batch_is_stored_with_exactly_the_posted_values(api, clinic):
    response = post(api, make_batch())
    assert response.status_code == 201, response.json()
    assert response.json() == {
        "sessions": {"created": 2, "updated": 0, "unchanged": 0},
        "markers": {"created": 2, "updated": 0, "unchanged": 0},
        "outcomes": {"created": 2, "updated": 0, "unchanged": 0},
        "alerts": {"created": 1, "updated": 0, "unchanged": 0},
    }
    patient = Patient.objects.get(clinic=clinic, player_id="player-1")
    s1 = TherapySession.objects.get(session_id="s1")
    assert (s1.patient, s1.clinic) == (patient, clinic)
    assert s1.started_at == T0 and s1.ended_at == T0 + timedelta(minutes=25)
    assert (s1.status, s1.duration_minutes, s1.world, s1.character) == ("completed", 24.5, "Calm Coast", "Wren")
    assert (s1.approaches, s1.interventions_count, s1.key_achievements) == (
        ["mindfulness", "cbt"],
        3,
        ["Finished breathing exercise"],
    )
    s2 = TherapySession.objects.get(session_id="s2")
    assert (s2.ended_at, s2.status, s2.duration_minutes, s2.approaches) == (None, "active", 5.0, [])
    m1 = ProgressMarker.objects.get(marker_id="m1")
    assert (m1.session, m1.patient, m1.type, m1.description) == (s1, patient, "skill_acquired", "Box breathing")
    assert (m1.achieved_at, m1.therapeutic_value, m1.related_goal_id) == (T0 + timedelta(minutes=10), 0.75, "goal-7")
    assert ProgressMarker.objects.get(marker_id="m2").therapeutic_value == 1.0
    r1 = OutcomeResponse.objects.get(response_id="r1")
    assert (r1.instrument, r1.total, r1.items, r1.administered_at) == ("phq9", 11, [2, 2, 1, 1, 2, 1, 1, 1, 0], T0)
    r2 = OutcomeResponse.objects.get(response_id="r2")
    assert (r2.instrument, r2.total, r2.items) == ("gad7", 9, None)
    alert = Alert.objects.get(alert_id="a1")
    assert (alert.kind, alert.severity, alert.patient, alert.occurred_at) == (
        AlertKind.CRISIS_SIGNAL,
        "urgent",
        patient,
        T0 + timedelta(minutes=15),
    )
    patient.refresh_from_db()
    assert patient.risk_flag and patient.data_changed_at is not None


def test_the_same_batch_again_changes_nothing(api):
    assert post(api, make_batch()).status_code == 201
    before = snapshot()
    response = post(api, make_batch())
    assert response.status_code == 200
    assert all(
        c == {"created": 0, "updated": 0, "unchanged": n}
        for c, n in zip(response.json().values(), [2, 2, 2, 1], strict=True)
    )
    assert snapshot() == before


def test_a_changed_session_is_updated(api):
    batch = make_batch()
    post(api, batch)
    batch["sessions"][1].update(
        status="completed", ended_at=iso(T0 + timedelta(days=1, minutes=30)), duration_minutes=30
    )
    response = post(api, batch)
    assert response.status_code == 200
    assert response.json()["sessions"] == {"created": 0, "updated": 1, "unchanged": 1}
    s2 = TherapySession.objects.get(session_id="s2")
    assert (s2.status, s2.duration_minutes, s2.ended_at) == ("completed", 30.0, T0 + timedelta(days=1, minutes=30))
    assert TherapySession.objects.count() == 2


def test_phq9_item9_above_zero_raises_an_urgent_alert_once(api, clinic):
    batch = {
        "outcomes": [
            {
                "response_id": "r9",
                "player_id": "p9",
                "instrument": "phq9",
                "administered_at": iso(T0),
                "items": [0, 0, 0, 0, 0, 0, 0, 0, 1],
            }
        ]
    }
    assert post(api, batch).status_code == 201
    post(api, batch)
    alert = Alert.objects.get(kind=AlertKind.ITEM9)
    assert alert.severity == "urgent" and alert.source_response.response_id == "r9"
    assert "item 9 answered 1" in alert.reason
    assert Patient.objects.get(player_id="p9").risk_flag is True


def _bad(mutate):
    def build():
        batch = make_batch()
        mutate(batch)
        return batch

    return build


BAD_INPUTS = {
    "missing field": (_bad(lambda b: b["sessions"][1].pop("started_at")), "sessions", 1, "started_at"),
    "wrong type": (_bad(lambda b: b["sessions"][0].update(duration_minutes="long")), "sessions", 0, "duration_minutes"),
    "id not a string": (_bad(lambda b: b["markers"][0].update(marker_id=17)), "markers", 0, "marker_id"),
    "unknown marker type": (_bad(lambda b: b["markers"][1].update(type="epiphany")), "markers", 1, "type"),
    "therapeutic_value 1.5": (
        _bad(lambda b: b["markers"][0].update(therapeutic_value=1.5)),
        "markers",
        0,
        "therapeutic_value",
    ),
    "negative duration": (
        _bad(lambda b: b["sessions"][0].update(duration_minutes=-1)),
        "sessions",
        0,
        "duration_minutes",
    ),
    "wrong number of items": (
        _bad(lambda b: b["outcomes"][0].update(items=[1, 1, 1], total=None)),
        "outcomes",
        0,
        "items",
    ),
    "item out of range": (
        _bad(lambda b: b["outcomes"][0].update(items=[4, 2, 1, 1, 2, 1, 0, 0, 0], total=None)),
        "outcomes",
        0,
        "items",
    ),
    "total out of range": (_bad(lambda b: b["outcomes"][1].update(total=22)), "outcomes", 1, "total"),
    "total disagrees with items": (_bad(lambda b: b["outcomes"][0].update(total=12)), "outcomes", 0, "total"),
    "unknown instrument": (_bad(lambda b: b["outcomes"][1].update(instrument="bdi")), "outcomes", 1, "instrument"),
    "future timestamp": (
        _bad(lambda b: b["alerts"][0].update(occurred_at=iso(timezone.now() + timedelta(minutes=6)))),
        "alerts",
        0,
        "occurred_at",
    ),
    "timestamp without offset": (
        _bad(lambda b: b["sessions"][0].update(started_at="2026-11-20T18:30:00")),
        "sessions",
        0,
        "started_at",
    ),
    "ends before it starts": (
        _bad(lambda b: b["sessions"][0].update(ended_at=iso(T0 - timedelta(minutes=1)))),
        "sessions",
        0,
        "ended_at",
    ),
    "marker for an unknown session": (
        _bad(lambda b: b["markers"][1].update(session_id="nope")),
        "markers",
        1,
        "session_id",
    ),
    "marker of another player's session": (
        _bad(lambda b: b["markers"][0].update(player_id="someone-else")),
        "markers",
        0,
        "player_id",
    ),
    "unknown field": (_bad(lambda b: b["sessions"][0].update(mood="sunny")), "sessions", 0, "mood"),
    "unknown alert level": (_bad(lambda b: b["alerts"][0].update(level="meh")), "alerts", 0, "level"),
    "duplicate id in batch": (
        _bad(lambda b: b["sessions"].append(copy.deepcopy(b["sessions"][0]))),
        "sessions",
        2,
        "session_id",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_rejected_naming_item_and_field_and_stores_nothing(api, case):
    build, kind, index, field = BAD_INPUTS[case]
    post(
        api,
        {
            "sessions": [
                {
                    "session_id": "existing",
                    "player_id": "p0",
                    "started_at": iso(T0),
                    "status": "completed",
                    "duration_minutes": 1,
                }
            ]
        },
    )
    before = snapshot()
    response = post(api, build())
    assert response.status_code == 400
    body = response.json()
    assert body["detail"].startswith("The batch was rejected")
    assert any(e.get("kind") == kind and e.get("index") == index and e["field"] == field for e in body["errors"]), body
    assert all(e["reason"] for e in body["errors"])
    assert snapshot() == before


def test_contradicting_stored_items_rejects_the_whole_batch(api):
    post(api, make_batch())
    before = snapshot()
    batch = make_batch(prefix="new-")  # all new items ...
    batch["outcomes"].append({**make_batch()["outcomes"][1], "total": 3})  # ... and one changed stored answer
    response = post(api, batch)
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "kind": "outcomes",
            "index": 2,
            "item_id": "r2",
            "field": "response_id",
            "reason": "Already recorded with different values; a stored response cannot be changed.",
        }
    ]
    assert snapshot() == before


@pytest.mark.parametrize(
    "body, field",
    [
        ("{not json", "detail"),
        ("[1, 2]", "body"),
        ('{"sessions": {}}', "sessions"),
        ("{}", "body"),
        ('{"visits": []}', "visits"),
    ],
)
def test_malformed_bodies_are_400_with_a_message(api, body, field):
    response = post(api, body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["detail"]
    if field != "detail":
        assert payload["errors"][0]["field"] == field
    assert Patient.objects.count() == 0


def test_body_over_the_cap_is_413_and_stores_nothing(api, settings):
    settings.INGEST_MAX_BODY_BYTES = 2000
    batch = make_batch()
    batch["sessions"][0]["key_achievements"] = ["x" * 150] * 20
    response = post(api, batch)
    assert response.status_code == 413
    assert "larger than 2000 bytes" in response.json()["detail"]
    assert TherapySession.objects.count() == 0


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic dXNlcjpwYXNz", "Bearer"])
def test_missing_or_wrong_token_is_401(db, header):
    client = Client(headers={"Authorization": header} if header else {})
    response = post(client, make_batch())
    assert response.status_code in (401, 403)
    assert response.json()["detail"]
    assert TherapySession.objects.count() == 0


def test_revoked_token_is_401_and_use_is_recorded(api, clinic):
    token = IngestToken.objects.get(clinic=clinic)
    assert token.last_used_at is None
    assert post(api, make_batch()).status_code == 201
    token.refresh_from_db()
    assert token.last_used_at is not None
    ingest_token_revoke(token=token)
    response = post(api, make_batch(prefix="x-"))
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid or revoked token."}
    assert not TherapySession.objects.filter(session_id__startswith="x-").exists()


def test_token_of_one_clinic_neither_reads_nor_writes_another_clinics_patients(api, foreign_patient, other_token):
    assert (
        Client(headers={"Authorization": f"Bearer {other_token}"})
        .get(f"/api/v1/patients/{foreign_patient.player_id}/alerts")
        .status_code
        == 200
    )
    assert api.get(f"/api/v1/patients/{foreign_patient.player_id}/alerts").status_code == 404
    # Writing with the same player id creates a separate patient in the token's own clinic.
    post(api, make_batch(player=foreign_patient.player_id))
    assert not TherapySession.objects.filter(patient=foreign_patient).exists()
    assert Patient.objects.filter(player_id=foreign_patient.player_id).count() == 2
    # Ids are per clinic: the other clinic may use the same session ids without touching ours.
    other = Client(headers={"Authorization": f"Bearer {other_token}"})
    assert post(other, make_batch(player=foreign_patient.player_id)).status_code == 201
    assert TherapySession.objects.filter(session_id="s1").count() == 2


def test_schema_documents_ingest_and_its_errors(client, db):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    responses = schema["paths"]["/api/v1/ingest"]["post"]["responses"]
    assert {"200", "201", "400", "401", "403", "409", "413"} <= set(responses)
