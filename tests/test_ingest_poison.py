"""Poison input to the ingest API (DESIGN §6): whatever a game posts, the answer is a JSON 400 naming the
item and field (or the body), never a 5xx, and nothing of the batch is stored."""

import json

import pytest

from reports.models import Alert, OutcomeResponse
from tests.test_ingest import make_batch, post
from tracking.models import Patient, ProgressMarker, TherapySession
from tracking.validators import EXTERNAL_ID_RULE, INT32_MAX

MODELS = (Patient, TherapySession, ProgressMarker, OutcomeResponse, Alert)


def counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in MODELS}


@pytest.fixture
def stored(api):
    """One good batch already stored, so "unchanged" means more than "still empty"."""
    response = post(api, make_batch(player="already-here", prefix="old-"))
    assert response.status_code == 201, response.json()
    return counts()


def rejected(api, body, stored) -> dict:
    """Posts `body`, expects a JSON 400, checks the database is as `stored` left it; returns the body."""
    response = post(api, body)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    payload = response.json()
    assert payload["detail"]
    assert counts() == stored
    return payload


def item_errors(payload: dict, kind: str, index: int, field: str) -> list[dict]:
    return [e for e in payload["errors"] if (e.get("kind"), e.get("index"), e["field"]) == (kind, index, field)]


def with_value(kind: str, index: int, field: str, value) -> dict:
    batch = make_batch()
    batch[kind][index][field] = value
    return batch


OWN_ID = {"sessions": "session_id", "markers": "marker_id", "outcomes": "response_id", "alerts": "alert_id"}

# ----- ids ----------------------------------------------------------------------------------------

ID_FIELDS = [
    ("sessions", 0, "session_id"),
    ("sessions", 1, "player_id"),
    ("markers", 0, "marker_id"),
    ("markers", 1, "session_id"),
    ("markers", 0, "player_id"),
    ("outcomes", 0, "response_id"),
    ("outcomes", 1, "player_id"),
    ("alerts", 0, "alert_id"),
    ("alerts", 0, "player_id"),
]
BAD_IDS = {
    "slash": "player/1",
    "trailing newline": "player-1\n",
    "newline inside": "player\n1",
    "space": "player 1",
    "leading space": " player-1",
    "200 characters": "p" * 200,
    "129 characters": "p" * 129,
    "empty": "",
    "starts with a dot": ".player",
    "NUL": "player\x00",
    "lone surrogate": "player\ud800",
    "non-ASCII letter": "plåyer",
}


@pytest.mark.parametrize("kind, index, field", ID_FIELDS, ids=[f"{k}[{i}].{f}" for k, i, f in ID_FIELDS])
@pytest.mark.parametrize("value", BAD_IDS.values(), ids=list(BAD_IDS))
def test_a_bad_id_is_400_naming_the_field_and_stores_nothing(api, stored, kind, index, field, value):
    payload = rejected(api, with_value(kind, index, field, value), stored)
    errors = item_errors(payload, kind, index, field)
    assert errors, payload
    assert all(e["reason"] for e in errors)
    own_id = OWN_ID[kind]
    if field == own_id:  # the item's own id is invalid: it is not quoted back
        assert all("item_id" not in e for e in errors), errors
    else:
        assert all(e["item_id"] == make_batch()[kind][index][own_id] for e in errors), errors


def test_an_invalid_id_is_explained(api, stored):
    payload = rejected(api, with_value("sessions", 0, "player_id", "a/b"), stored)
    (error,) = payload["errors"]
    assert error == {
        "kind": "sessions",
        "index": 0,
        "item_id": "s1",  # the session's own id is valid, so it names the item
        "field": "player_id",
        "reason": f"Not a valid id: use {EXTERNAL_ID_RULE}.",
    }


GOOD_IDS = {
    "128 characters": "p" * 128,
    "one character": "7",
    "every allowed character": "Az09._:@-x",
    "an e-mail-like id": "player@studio.example:42",
}


@pytest.mark.parametrize("value", GOOD_IDS.values(), ids=list(GOOD_IDS))
def test_ids_of_the_pattern_are_accepted(api, value):
    batch = make_batch(player=value, prefix="")
    batch["sessions"][0]["session_id"] = value
    batch["markers"][0]["session_id"] = value
    batch["markers"][0]["marker_id"] = value
    batch["outcomes"][0]["response_id"] = value
    batch["alerts"][0]["alert_id"] = value
    response = post(api, batch)
    assert response.status_code == 201, response.json()
    assert Patient.objects.filter(player_id=value).exists()
    assert TherapySession.objects.filter(session_id=value, patient__player_id=value).exists()
    assert ProgressMarker.objects.filter(marker_id=value, session__session_id=value).exists()
    assert OutcomeResponse.objects.filter(response_id=value).exists()
    assert Alert.objects.filter(alert_id=value).exists()


# ----- timestamps ---------------------------------------------------------------------------------

TIME_FIELDS = [
    ("sessions", 0, "started_at"),
    ("sessions", 0, "ended_at"),
    ("markers", 1, "achieved_at"),
    ("outcomes", 0, "administered_at"),
    ("alerts", 0, "occurred_at"),
]
BAD_TIMES = {
    "year 1, +05:00": ("0001-01-01T00:00:00+05:00", "before 2000-01-01"),
    "year 1, -05:00": ("0001-01-01T00:00:00-05:00", "before 2000-01-01"),
    "year 1, UTC": ("0001-01-01T00:00:00Z", "before 2000-01-01"),
    "year 1999": ("1999-06-15T12:00:00+00:00", "before 2000-01-01"),
    "one second before 2000": ("1999-12-31T23:59:59Z", "before 2000-01-01"),
    "2000-01-01 local, 1999 in UTC": ("2000-01-01T00:30:00+01:00", "before 2000-01-01"),
    "year 9999, -05:00": ("9999-12-31T23:59:59-05:00", "in the future"),
    "year 9999, +05:00": ("9999-12-31T23:59:59+05:00", "in the future"),
    "offset of 24 hours": ("2026-01-01T00:00:00+24:00", "ISO 8601"),
    "day 32": ("2026-01-32T00:00:00Z", "ISO 8601"),
}


@pytest.mark.parametrize("kind, index, field", TIME_FIELDS, ids=[f"{k}[{i}].{f}" for k, i, f in TIME_FIELDS])
@pytest.mark.parametrize("case", list(BAD_TIMES))
def test_a_timestamp_out_of_range_is_400_naming_the_field_and_stores_nothing(api, stored, kind, index, field, case):
    value, reason = BAD_TIMES[case]
    payload = rejected(api, with_value(kind, index, field, value), stored)
    errors = item_errors(payload, kind, index, field)
    assert errors, payload
    assert any(reason in e["reason"] for e in errors), errors


@pytest.mark.parametrize("value", ["2000-01-01T00:00:00Z", "2000-01-01T00:00:00+00:00", "1999-12-31T19:00:00-05:00"])
def test_the_first_instant_of_2000_is_accepted(api, value):
    batch = {"alerts": [{**make_batch()["alerts"][0], "occurred_at": value}]}
    response = post(api, batch)
    assert response.status_code == 201, response.json()
    assert Alert.objects.get(alert_id="a1").occurred_at.isoformat() == "2000-01-01T00:00:00+00:00"


# ----- integers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2**31, 2**63, 10**30, -1])
def test_interventions_count_beyond_the_column_is_400(api, stored, value):
    payload = rejected(api, with_value("sessions", 0, "interventions_count", value), stored)
    assert item_errors(payload, "sessions", 0, "interventions_count"), payload


def test_interventions_count_of_the_largest_int32_is_stored(api):
    response = post(api, with_value("sessions", 0, "interventions_count", INT32_MAX))
    assert response.status_code == 201, response.json()
    assert TherapySession.objects.get(session_id="s1").interventions_count == INT32_MAX


@pytest.mark.parametrize(
    "kind, index, field, value",
    [
        ("outcomes", 1, "total", 2**31),
        ("outcomes", 0, "items", [2**31, 0, 0, 0, 0, 0, 0, 0, 0]),
        ("sessions", 0, "duration_minutes", 10**400),
        ("markers", 0, "therapeutic_value", 2**64),
    ],
    ids=["total", "an item", "a float field given a huge int", "therapeutic_value"],
)
def test_other_huge_numbers_are_400(api, stored, kind, index, field, value):
    batch = with_value(kind, index, field, value)
    if field == "items":
        batch[kind][index]["total"] = None
    payload = rejected(api, batch, stored)
    assert item_errors(payload, kind, index, field), payload


# ----- text ---------------------------------------------------------------------------------------

TEXT_FIELDS = [
    ("sessions", 0, "world", None),
    ("sessions", 0, "character", None),
    ("sessions", 0, "approaches", 1),
    ("sessions", 0, "key_achievements", 0),
    ("markers", 0, "description", None),
    ("markers", 0, "related_goal_id", None),
    ("alerts", 0, "reason", None),
]
BAD_TEXT = {
    "NUL": ("Calm\x00Coast", "NUL"),
    "lone high surrogate": ("Calm \ud800 Coast", "unpaired surrogate"),
    "lone low surrogate": ("\udfff", "unpaired surrogate"),
}


@pytest.mark.parametrize(
    "kind, index, field, position", TEXT_FIELDS, ids=[f"{k}[{i}].{f}" for k, i, f, _ in TEXT_FIELDS]
)
@pytest.mark.parametrize("case", list(BAD_TEXT))
def test_unstorable_text_is_400_naming_the_field_and_stores_nothing(api, stored, kind, index, field, position, case):
    value, reason = BAD_TEXT[case]
    batch = make_batch()
    if position is None:
        batch[kind][index][field] = value
        where = field
    else:
        batch[kind][index][field] = ["fine", "also fine"]
        batch[kind][index][field][position] = value
        where = f"{field}[{position}]"
    payload = rejected(api, batch, stored)
    errors = item_errors(payload, kind, index, where)
    assert errors, payload
    assert any(reason in e["reason"] for e in errors), errors
    assert all(e["item_id"] == batch[kind][index][OWN_ID[kind]] for e in errors)


@pytest.mark.parametrize(
    "mutate, kind, field",
    [
        (lambda b: b["sessions"][0].update(status="\ud800"), "sessions", "status"),
        (lambda b: b["markers"][0].update(type="break\x00through"), "markers", "type"),
        (lambda b: b["outcomes"][0].update(instrument="phq9\udc00"), "outcomes", "instrument"),
        (lambda b: b["alerts"][0].update({"\ud800": 1}), "alerts", "\\ud800"),
        (lambda b: b["sessions"][1].update({"mood\x00": "sunny"}), "sessions", "mood\x00"),
    ],
    ids=["choice with a surrogate", "choice with a NUL", "instrument with a surrogate", "unknown field", "NUL key"],
)
def test_poison_quoted_back_in_an_error_is_still_a_json_400(api, stored, mutate, kind, field):
    batch = make_batch()
    mutate(batch)
    payload = rejected(api, batch, stored)
    assert [e for e in payload["errors"] if (e.get("kind"), e["field"]) == (kind, field)], payload


def test_an_unknown_top_level_key_with_a_surrogate_is_a_json_400(api, stored):
    payload = rejected(api, {**make_batch(), "\udead": []}, stored)
    assert payload["errors"] == [
        {"field": "\\udead", "reason": "Unknown key; expected one of sessions, markers, outcomes, alerts."}
    ]


# ----- the body -----------------------------------------------------------------------------------


def nested(depth: int) -> str:
    """A batch whose body nests `depth` levels of arrays and objects in all."""
    return '{"sessions": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


@pytest.mark.parametrize("depth", [33, 1_000, 100_000])
def test_a_body_nested_too_deeply_is_400(api, stored, depth):
    payload = rejected(api, nested(depth), stored)
    assert payload["detail"] == "JSON parse error - nested more than 32 levels deep."


def test_a_body_nested_32_deep_is_parsed_and_judged_as_a_batch(api, stored):
    payload = rejected(api, nested(32), stored)
    assert payload["detail"].startswith("The batch was rejected")
    assert payload["errors"][0] == {
        "kind": "sessions",
        "index": 0,
        "field": "sessions",
        "reason": "Expected a JSON object.",
    }


DUPLICATES = {  # case: (raw body, how the detail names the key)
    "in an item": (
        '{"alerts": [{"alert_id": "a1", "player_id": "p1", "player_id": "p2", "level": "urgent",'
        ' "reason": "x", "occurred_at": "2026-01-01T00:00:00Z"}]}',
        "'player_id'",
    ),
    "at the top": ('{"alerts": [], "alerts": []}', "'alerts'"),
    "with a NUL": ('{"a\\u0000b": 1, "a\\u0000b": 2}', "'a\\x00b'"),
    "with a surrogate": ('{"\\ud800": 1, "\\ud800": 2}', "'\\ud800'"),
}


@pytest.mark.parametrize("case", list(DUPLICATES))
def test_a_key_given_twice_is_400_naming_the_key(api, stored, case):
    body, named = DUPLICATES[case]
    payload = rejected(api, body, stored)
    assert named in payload["detail"], payload
    assert "appears twice in one object" in payload["detail"]


@pytest.mark.parametrize(
    "body",
    ['{"alerts": NaN}', '{"alerts": [Infinity]}', '{"sessions": [{"duration_minutes": 1e400}]}', "1" * 5000],
    ids=["NaN", "Infinity", "1e400", "an integer of 5000 digits"],
)
def test_numbers_json_cannot_carry_are_400(api, stored, body):
    payload = rejected(api, body, stored)
    assert payload["detail"].startswith("JSON parse error")


@pytest.mark.parametrize("body", [b"\xff\xfe{}", b'{"alerts": "\xed\xa0\x80"}'], ids=["not UTF-8", "CESU surrogate"])
def test_bytes_that_are_not_utf8_are_400(api, stored, body):
    rejected(api, body, stored)


# ----- all or nothing -----------------------------------------------------------------------------


def test_a_good_batch_beside_a_poisoned_item_is_not_stored(api, stored):
    good = make_batch(player="good-player", prefix="good-")
    bad = make_batch(player="bad-player", prefix="bad-")
    body = {kind: good[kind] + bad[kind] for kind in good}
    body["sessions"][-1]["started_at"] = "0001-01-01T00:00:00+05:00"
    body["markers"][-1]["description"] = "\x00"
    payload = rejected(api, body, stored)
    assert {(e["kind"], e["index"], e["field"]) for e in payload["errors"]} == {
        ("sessions", 3, "started_at"),
        ("markers", 3, "description"),
    }
    assert not Patient.objects.filter(player_id="good-player").exists()


def test_the_same_good_batch_without_the_poison_is_stored(api, stored):
    """The control for the test above: the good half on its own is accepted."""
    response = post(api, make_batch(player="good-player", prefix="good-"))
    assert response.status_code == 201, response.json()
    assert TherapySession.objects.filter(session_id__startswith="good-").count() == 2


def test_the_schema_documents_the_id_pattern_and_the_integer_bound(client, db):
    schema = json.loads(client.get("/api/schema/", HTTP_ACCEPT="application/json").content)
    session = schema["components"]["schemas"]["SessionIn"]["properties"]
    assert session["player_id"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
    assert session["player_id"]["maxLength"] == 128
    assert session["interventions_count"]["maximum"] == INT32_MAX
