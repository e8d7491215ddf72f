"""The audit log's core (DESIGN §7): one hash chain per clinic plus `system`, append-only in the database,
and tamper evidence that names the first broken event, including a tail cut off after a head export."""

import csv
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from tracking import audit
from tracking.models import AuditChainHead, AuditEvent


@pytest.fixture(autouse=True)
def head_dir(settings, tmp_path):
    settings.AUDIT_HEAD_DIR = str(tmp_path / "heads")
    settings.AUDIT_SIGNING_KEY = "test-signing-key-not-secret-key"
    return tmp_path / "heads"


def record(chain="northside", n=1, **fields) -> list[AuditEvent]:
    defaults = {"actor": "therapist.a", "role": "therapist", "action": "patient.read", "patients": ["p-a1"]}
    return [audit.audit_record(chain=chain, **{**defaults, **fields, "detail": {"n": i}}) for i in range(n)]


def verify(*args) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("verify_audit_log", *args, stdout=out)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code)
    return code, out.getvalue().strip()


def tamper(sql: str, params=()) -> None:
    """As the database superuser would: with triggers switched off for this transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)
        cursor.execute("SET LOCAL session_replication_role = origin")


# ----- the chain ----------------------------------------------------------------------------------


def test_each_clinic_has_its_own_chain_starting_from_64_zeros(db):
    north = record("northside", 3)
    river = record("riverside", 2)
    assert [e.seq for e in north] == [1, 2, 3] and [e.seq for e in river] == [1, 2]
    assert north[0].prev_hash == river[0].prev_hash == "0" * 64
    assert north[1].prev_hash == north[0].hash and north[2].prev_hash == north[1].hash
    assert AuditChainHead.objects.get(chain="northside").seq == 3


def test_the_hash_is_sha256_of_prev_hash_and_the_canonical_json_as_exported(clinic):
    record("northside", 2)
    out = io.StringIO()
    call_command("export_audit_log", "--clinic", "northside", "--format", "jsonl", stdout=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2]
    assert set(lines[0]) == set(audit.EXPORT_FIELDS)
    for line in lines:
        hashed = {k: v for k, v in line.items() if k not in ("id", "hash")}
        canonical = json.dumps(hashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert hashlib.sha256(line["prev_hash"].encode() + canonical).hexdigest() == line["hash"]
    assert lines[0]["at"].endswith("Z")
    # The export is itself audited.
    assert AuditEvent.objects.filter(chain="northside", action="audit.export").count() == 1


def test_the_csv_export_has_the_same_fields_and_escapes_formulas(clinic):
    record("northside", 1, actor="=HYPERLINK(1)")
    out = io.StringIO()
    call_command("export_audit_log", "--clinic", "northside", "--format", "csv", stdout=out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == list(audit.EXPORT_FIELDS)
    assert rows[1][audit.EXPORT_FIELDS.index("actor")] == "'=HYPERLINK(1)"
    assert json.loads(rows[1][audit.EXPORT_FIELDS.index("patients")]) == ["p-a1"]


def test_export_dates_bound_the_events_and_system_is_a_chain(db):
    audit.audit_record(
        chain="system",
        actor="nobody",
        action="auth.login_failed",
        outcome="failed",
        at=datetime(2026, 1, 1, 12, tzinfo=UTC),
    )
    audit.audit_record(
        chain="system",
        actor="nobody",
        action="auth.login_failed",
        outcome="failed",
        at=datetime(2026, 1, 3, 12, tzinfo=UTC),
    )
    out = io.StringIO()
    call_command("export_audit_log", "--clinic", "system", "--from", "2026-01-02", "--format", "jsonl", stdout=out)
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == [2]


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ({"token": "pt_abc"}, {"token": "***"}),
        ({"webhook_secret": "s", "url": "https://x"}, {"webhook_secret": "***", "url": "https://x"}),
        (
            {"before": {"password": "p"}, "after": {"Password": "q"}},
            {"before": {"password": "***"}, "after": {"Password": "***"}},
        ),
        ({"changed": ["webhook_url"], "count": 3}, {"changed": ["webhook_url"], "count": 3}),
    ],
)
def test_secrets_in_a_detail_are_masked(db, detail, expected):
    event = audit.audit_record(chain="northside", actor="admin", action="config.change", detail=detail)
    event.refresh_from_db()
    assert event.detail == expected


# ----- append-only in the database ----------------------------------------------------------------


@pytest.mark.parametrize("statement", ["UPDATE audit_event SET actor = 'x'", "DELETE FROM audit_event"])
def test_the_applications_connection_cannot_update_or_delete_an_event(db, statement):
    record("northside", 2)
    with pytest.raises(DatabaseError, match="audit_event"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    assert AuditEvent.objects.filter(chain="northside", actor="therapist.a").count() == 2


def test_an_event_older_than_six_years_may_be_deleted_by_retention(db):
    old = audit.audit_record(
        chain="northside", actor="a", action="patient.read", at=datetime.now(UTC) - timedelta(days=2193)
    )
    young = audit.audit_record(
        chain="northside", actor="a", action="patient.read", at=datetime.now(UTC) - timedelta(days=2191)
    )
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_event WHERE id = %s", [old.pk])
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_event WHERE id = %s", [young.pk])


# ----- tamper drill (as the superuser, triggers off) ----------------------------------------------


def test_an_intact_log_verifies(db):
    record("northside", 3)
    record("riverside", 2)
    code, output = verify()
    assert (code, output) == (0, "audit log intact: 5 events in 2 chains")
    # Each verification is itself audited, and the console's chain status is stored.
    assert AuditEvent.objects.filter(action="audit.verify").count() == 2
    head = AuditChainHead.objects.get(chain="northside")
    assert head.verified_ok is True and head.verified_seq == 3


def test_an_edited_detail_is_named(clinic):
    events = record("northside", 4)
    tamper("UPDATE audit_event SET detail = %s WHERE id = %s", ['{"n": 99}', events[2].pk])
    code, output = verify("--clinic", "northside")
    assert code == 1
    reason = "hash does not match the event's content (edited)"
    assert output == f"audit log broken: event {events[2].pk} (chain northside, seq 3): {reason}"


def test_a_deleted_middle_event_is_named(db):
    events = record("northside", 4)
    tamper("DELETE FROM audit_event WHERE id = %s", [events[1].pk])
    code, output = verify()
    assert code == 1
    assert output.startswith(f"audit log broken: event {events[2].pk} (chain northside, seq 3): seq 3 follows seq 1")


def test_two_swapped_events_are_named(db):
    events = record("northside", 4)
    a, b = events[1], events[2]
    tamper("UPDATE audit_event SET seq = 1000000 WHERE id = %s", [a.pk])
    tamper("UPDATE audit_event SET seq = 2 WHERE id = %s", [b.pk])
    tamper("UPDATE audit_event SET seq = 3 WHERE id = %s", [a.pk])
    code, output = verify()
    assert code == 1
    assert output.startswith(f"audit log broken: event {b.pk} (chain northside, seq 2): ")


def test_a_tail_cut_off_after_a_head_export_is_named(db, head_dir):
    events = record("northside", 5)
    call_command("export_audit_head", stdout=io.StringIO())
    assert len(list(head_dir.glob("audit-heads-*.json"))) == 1
    tamper("DELETE FROM audit_event WHERE id IN (%s, %s)", [events[3].pk, events[4].pk])
    tamper("UPDATE audit_chain_head SET seq = 3, hash = %s WHERE chain = 'northside'", [events[2].hash])
    code, output = verify()
    assert code == 1
    assert output.startswith(f"audit log broken: event {events[2].pk} (chain northside, seq 3): the signed head")
    assert "names seq 5" in output and "tail was cut off" in output


def test_a_forged_head_file_is_not_trusted(db, head_dir):
    record("northside", 2)
    path = audit.export_heads()
    content = json.loads(path.read_text())
    content["heads"][0]["seq"] = 1
    path.write_text(json.dumps(content))
    code, output = verify()
    assert code == 1 and "has a wrong signature" in output


def test_heads_are_signed_with_the_audit_key_not_secret_key(db, head_dir, settings):
    record("northside", 1)
    path = audit.export_heads()
    head = json.loads(path.read_text())["heads"][0]
    assert {"chain", "seq", "hash", "at", "signature"} <= set(head)
    settings.AUDIT_SIGNING_KEY = "another-key"
    code, output = verify()
    assert code == 1 and "wrong signature" in output


def test_a_clinic_that_does_not_exist_is_a_clear_error(db):
    with pytest.raises(CommandError, match="No clinic with slug 'nowhere'"):
        call_command("verify_audit_log", "--clinic", "nowhere")
