"""Ingest's cost does not grow with the batch (one query per kind of row, not one per item), and its token
lookup is cached for at most TOKEN_CACHE_SECONDS: a revocation takes effect within that time, at once
when it goes through the service, and the token's `last_used_at` is still written at most once a minute."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from tracking.models import IngestToken, Patient, ProgressMarker, TherapySession
from tracking.services import TOKEN_CACHE_SECONDS, ingest_token_revoke

URL = "/api/v1/ingest"
T0 = datetime(2026, 11, 20, 18, 30, tzinfo=UTC)
NOW = T0 + timedelta(days=3)


def batch(sessions: int, markers_per_session: int, *, prefix: str = "", player: str = "player-1") -> dict:
    return {
        "sessions": [
            {
                "session_id": f"{prefix}s{n}",
                "player_id": player,
                "started_at": (T0 + timedelta(minutes=30 * n)).isoformat(),
                "status": "completed",
                "duration_minutes": 20,
                "approaches": ["cbt"],
            }
            for n in range(sessions)
        ],
        "markers": [
            {
                "marker_id": f"{prefix}m{n}-{k}",
                "session_id": f"{prefix}s{n}",
                "player_id": player,
                "type": "skill_acquired",
                "achieved_at": (T0 + timedelta(minutes=30 * n + k)).isoformat(),
                "therapeutic_value": 0.5,
            }
            for n in range(sessions)
            for k in range(markers_per_session)
        ],
    }


def post(client, body):
    return client.post(URL, data=json.dumps(body), content_type="application/json")


def ended(session: dict) -> str:
    return (datetime.fromisoformat(session["started_at"]) + timedelta(minutes=25)).isoformat()


def changed(body: dict) -> dict:
    """The same batch with every session ended and every marker worth more: all rows updated."""
    return {
        "sessions": [{**s, "ended_at": ended(s)} for s in body["sessions"]],
        "markers": [{**m, "therapeutic_value": 0.9} for m in body["markers"]],
    }


@pytest.fixture
def warm_api(api):
    """The API client after one request: its token is cached and its use was just recorded."""
    with time_machine.travel(NOW, tick=False):
        assert post(api, batch(1, 0, prefix="warm-")).status_code == 201
        yield api


# Per request, with the token cached and the players known: the patients (locked), the sessions the
# batch names (once, for its sessions and its markers alike), the session INSERT and UPDATE, the markers,
# their INSERT and UPDATE, the data_changed_at stamp, and the audit event (chain head, event). Under
# pytest-django the transaction is a savepoint and its release.
@pytest.mark.parametrize(
    ("sessions", "markers_per_session", "created", "unchanged", "updated"),
    [
        (1, 1, 10, 7, 10),  # 2 items
        (20, 4, 10, 7, 10),  # 100 items
        (100, 0, 8, 6, 8),  # 100 sessions: no marker query at all
    ],
)
def test_query_count_does_not_grow_with_the_batch(
    warm_api, django_assert_num_queries, sessions, markers_per_session, created, unchanged, updated
):
    body = batch(sessions, markers_per_session)
    with django_assert_num_queries(created):
        assert post(warm_api, body).status_code == 201
    with django_assert_num_queries(unchanged):
        response = post(warm_api, body)
    assert response.status_code == 200
    assert response.json()["sessions"] == {"created": 0, "updated": 0, "unchanged": sessions}
    with django_assert_num_queries(updated):
        response = post(warm_api, changed(body))
    assert response.json()["sessions"] == {"created": 0, "updated": sessions, "unchanged": 0}
    assert response.json()["markers"] == {"created": 0, "updated": sessions * markers_per_session, "unchanged": 0}
    stored = TherapySession.objects.filter(session_id__in=[s["session_id"] for s in body["sessions"]])
    assert all(s.ended_at == s.started_at + timedelta(minutes=25) for s in stored)
    values = ProgressMarker.objects.filter(session__in=stored).values_list("therapeutic_value", flat=True)
    assert set(values) == ({0.9} if markers_per_session else set())


def test_a_single_item_batch_costs_two_queries_more_with_a_cold_token_cache(api, django_assert_num_queries):
    # The token (with its clinic) and its last_used_at, written at most once a minute. The player is new
    # too: 10 queries, where a known player's would be 8.
    with time_machine.travel(NOW, tick=False), django_assert_num_queries(10 + 2):
        assert post(api, batch(1, 0)).status_code == 201


def test_a_new_player_costs_two_queries_more_than_a_known_one(warm_api, django_assert_num_queries):
    # Known players are locked in one query; new ones are then created and locked.
    with django_assert_num_queries(8):
        assert post(warm_api, batch(1, 0, prefix="known-")).status_code == 201
    with django_assert_num_queries(8 + 2):
        assert post(warm_api, batch(1, 0, prefix="new-", player="player-2")).status_code == 201


def test_a_revocation_outside_the_service_takes_effect_within_the_cache_time(api, clinic):
    with time_machine.travel(NOW, tick=False) as clock:
        assert post(api, batch(1, 0, prefix="a-")).status_code == 201
        # As the admin's form does: the row changes, nothing forgets the cached token.
        IngestToken.objects.filter(clinic=clinic).update(revoked_at=NOW)
        clock.shift(timedelta(seconds=TOKEN_CACHE_SECONDS - 1))
        assert post(api, batch(1, 0, prefix="b-")).status_code == 201  # still cached: the lookup is skipped
        clock.shift(timedelta(seconds=1.001))
        response = post(api, batch(1, 0, prefix="c-"))
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid or revoked token."}
    assert not TherapySession.objects.filter(session_id="c-s0").exists()


def test_a_revocation_through_the_service_takes_effect_at_once(api, clinic):
    with time_machine.travel(NOW, tick=False):
        assert post(api, batch(1, 0, prefix="a-")).status_code == 201
        ingest_token_revoke(token=IngestToken.objects.get(clinic=clinic))
        assert post(api, batch(1, 0, prefix="b-")).status_code == 401


def test_last_used_at_is_still_written_at_most_once_a_minute(api, clinic):
    token = IngestToken.objects.get(clinic=clinic)
    with time_machine.travel(NOW, tick=False) as clock:
        assert post(api, batch(1, 0, prefix="a-")).status_code == 201
        token.refresh_from_db()
        assert token.last_used_at == NOW
        clock.shift(timedelta(seconds=30))  # past the cache time: read again, not written
        assert post(api, batch(1, 0, prefix="b-")).status_code == 201
        token.refresh_from_db()
        assert token.last_used_at == NOW
        clock.shift(timedelta(seconds=31))
        assert post(api, batch(1, 0, prefix="c-")).status_code == 201
        token.refresh_from_db()
        assert token.last_used_at == NOW + timedelta(seconds=61)


def test_the_cache_key_is_a_hash_of_the_token_never_the_token(api, token):
    from django.core.cache import cache

    from tracking.services import _token_cache_key, hash_token

    with time_machine.travel(NOW, tick=False):
        assert post(api, batch(1, 0)).status_code == 201
        assert token not in _token_cache_key(hash_token(token))
        assert cache.get(_token_cache_key(hash_token(token))) is not None


def test_a_batch_with_a_rejected_marker_stores_nothing_and_counts_nothing(api):
    body = batch(3, 2)
    with time_machine.travel(NOW, tick=False):
        assert post(api, body).status_code == 201
        other = batch(1, 0, prefix="o-", player="player-2")
        other["markers"] = [{**body["markers"][0], "marker_id": "new-m", "player_id": "player-2"}]
        other["sessions"] += [{**body["sessions"][0], "session_id": "fresh", "player_id": "player-2"}]
        response = post(api, other)
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "kind": "markers",
            "index": 0,
            "item_id": "new-m",
            "field": "player_id",
            "reason": "The session belongs to another player.",
        }
    ]
    assert not TherapySession.objects.filter(session_id__in=["o-s0", "fresh"]).exists()
    assert not Patient.objects.filter(player_id="player-2").exists()


# ----- the compiled schema accepts exactly what the serializers accept ---------------------------------

VALID = {
    "sessions": {
        "session_id": "s1",
        "player_id": "p1",
        "started_at": "2026-01-01T10:00:00+00:00",
        "ended_at": "2026-01-01T10:30:00+01:00",
        "status": "completed",
        "duration_minutes": 30,
        "world": " w ",
        "character": "c",
        "approaches": ["a", " b "],
        "interventions_count": 2,
        "key_achievements": [],
    },
    "markers": {
        "marker_id": "m1",
        "session_id": "s1",
        "player_id": "p1",
        "type": "insight",
        "description": "d",
        "achieved_at": "2026-01-01T10:10:00Z",
        "therapeutic_value": 0.5,
        "related_goal_id": None,
    },
    "outcomes": {
        "response_id": "r1",
        "player_id": "p1",
        "instrument": "phq9",
        "administered_at": "2026-01-01T10:10:00+00:00",
        "items": [1, 0, 0, 0, 0, 0, 0, 0, 0],
    },
    "alerts": {
        "alert_id": "a1",
        "player_id": "p1",
        "level": "urgent",
        "reason": "r",
        "occurred_at": "2026-01-01T10:10:00+00:00",
    },
}
# Values at and past every edge the serializers check: types, lengths, blanks, ranges, choices, the
# timestamp window and formats, text PostgreSQL cannot store, whitespace that is trimmed.
ODD = [
    None, True, False, 0, 1, -1, 1.5, 2**31 - 1, 2**31, 1e300, "", " ", "x", "a\x00", "\ud800", "a" * 128,
    "a" * 129, " " + "a" * 128 + " ", "a" * 2001, [], ["x"], [""], [" "], ["a"] * 100, ["a"] * 101, {},
    "2026-01-01T10:00:00", "2026-01-01T10:00:00+00:00", "2026-01-01 10:00:00+0000", "1999-12-31T23:59:59Z",
    "2000-01-01T00:00:00Z", "2099-01-01T00:00:00Z", "0001-01-01T00:00+05:00", "2026-13-01T00:00Z", "completed",
    "insight", "urgent", "phq9", "gad7", [0] * 9, [3] * 9, [4] * 9, [True] * 9, [0] * 7, [0.0] * 9, 5, 27, 28,
    "p1\n", "a/b", 1440, 1440.01, "\x1c", "a\x1c", "\u2003x\u2003",
]  # fmt: skip


@pytest.mark.parametrize("kind", list(VALID))
def test_the_compiled_schema_accepts_what_the_serializer_accepts_with_the_same_values(kind):
    import random

    from tracking.ingest import ITEM_SERIALIZERS, schema_context, schema_validate

    rng = random.Random(kind)
    keys = list(VALID[kind])
    for _ in range(3000):
        item = dict(VALID[kind])
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(keys)
            if rng.random() < 0.1:
                item.pop(key, None)
            else:
                item[key] = rng.choice(ODD)
        fast = schema_validate(kind, item, schema_context())
        serializer = ITEM_SERIALIZERS[kind](data=item)
        slow = dict(serializer.validated_data) if serializer.is_valid() else None
        # The schema may refuse more (the serializer then decides), never accept more or differently.
        assert fast is None or fast == slow, item
        assert (fast is None) == (slow is None), item  # and today it refuses exactly the same items


def test_a_valid_batch_builds_no_serializer(api, monkeypatch):
    from tracking import ingest

    def refuse(**kwargs):
        raise AssertionError("a serializer was built for a valid item")

    monkeypatch.setattr(ingest, "ITEM_SERIALIZERS", dict.fromkeys(ingest.ITEM_SERIALIZERS, refuse))
    with time_machine.travel(NOW, tick=False):
        assert post(api, batch(20, 4)).status_code == 201


def test_the_cached_token_holds_no_secret_of_its_clinic_in_clear(api, token, clinic):
    import pickle

    from django.core.cache import cache

    from tracking.services import _token_cache_key, hash_token

    clinic.webhook_secret = "s3cret-of-the-clinic"
    clinic.save()
    with time_machine.travel(NOW, tick=False):
        assert post(api, batch(1, 0)).status_code == 201
        cached = cache.get(_token_cache_key(hash_token(token)))
    assert cached is not None
    assert b"s3cret-of-the-clinic" not in pickle.dumps(cached)
    assert cached[0].clinic.webhook_secret == "s3cret-of-the-clinic"  # read from the database when asked
