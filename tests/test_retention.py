"""Retention (DESIGN §7) under a controlled clock, on PostgreSQL: data spread over three years in every
category, one clinic with a policy per category and one without any."""

import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction

from reports.models import Alert, AlertEvent, AlertKind, AlertSeverity, OutcomeResponse, OutcomeResponseEvent
from tests.conftest import logged_in
from tests.factories import (
    CareAssignmentFactory,
    MembershipFactory,
    OutcomeResponseFactory,
    PatientFactory,
    ProgressMarkerFactory,
    TherapySessionFactory,
    UserFactory,
)
from tracking import audit, retention
from tracking.models import (
    AUDIT_RETENTION_MIN_DAYS,
    AuditAction,
    AuditChainHead,
    AuditEvent,
    CareAssignment,
    Milestone,
    Patient,
    PatientEvent,
    ProgressHighlight,
    ProgressMarker,
    ProgressMarkerEvent,
    Recommendation,
    RetentionPolicy,
    Role,
    TherapySession,
    TherapySessionEvent,
)
from tracking.tasks import enforce_retention

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the audit trigger and row history are PostgreSQL's"),
]

# Before the real clock: the audit trigger compares with the database's own now(), so an event older
# than the floor at NOW is older than it for the database too.
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
POLICIES = {"activity": 365, "outcomes": 500, "alerts": 180, "derived": 90, "inactive_patients": 700, "audit": 2192}
EXPECTED = {"activity": 4, "alerts": 3, "audit": 3, "derived": 4, "inactive_patients": 1, "outcomes": 2}
TABLES = {
    "sessions": TherapySession,
    "markers": ProgressMarker,
    "responses": OutcomeResponse,
    "alerts": Alert,
    "recommendations": Recommendation,
    "highlights": ProgressHighlight,
    "milestones": Milestone,
    "patients": Patient,
    "assignments": CareAssignment,
}


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def _alert(patient, *, occurred: float, acknowledged: float | None, by=None, response=None) -> Alert:
    return Alert.objects.create(
        clinic_id=patient.clinic_id,
        patient=patient,
        kind=AlertKind.CRISIS_SIGNAL,
        severity=AlertSeverity.HIGH,
        reason="words",
        occurred_at=ago(occurred),
        acknowledged_at=None if acknowledged is None else ago(acknowledged),
        acknowledged_by=by if acknowledged is not None else None,
        source_response=response,
    )


def _created(model, obj, days: float):
    model.objects.filter(pk=obj.pk).update(created_at=ago(days))
    return obj


def _recommendation(patient, kind: str, days: float) -> Recommendation:
    rec = Recommendation.objects.create(patient=patient, type=kind, title="t", priority=2, reasoning="r")
    return _created(Recommendation, rec, days)


def _highlight(patient, days: float, *, with_milestone: bool) -> ProgressHighlight:
    milestone = None
    if with_milestone:
        milestone = Milestone.objects.create(
            patient=patient, family="sessions", threshold=int(days), title="m", achieved_at=ago(days)
        )
    highlight = ProgressHighlight.objects.create(patient=patient, milestone=milestone, title="h", achieved_at=ago(days))
    return _created(ProgressHighlight, highlight, days)


def _patient_data(clinic, prefix: str, acker) -> dict:
    """An active patient with rows of every kind at 30 days to 3 years, and one inactive for 800 days."""
    active = _created(Patient, PatientFactory(clinic=clinic, player_id=f"{prefix}-active"), 1100)
    sessions = {d: TherapySessionFactory(patient=active, started_at=ago(d)) for d in (30, 200, 400, 800, 1000)}
    for session in sessions.values():
        ProgressMarkerFactory(session=session)
    responses = {d: OutcomeResponseFactory(patient=active, administered_at=ago(d)) for d in (30, 400, 800)}
    _alert(active, occurred=31, acknowledged=30, by=acker)
    _alert(active, occurred=201, acknowledged=200, by=acker)
    _alert(active, occurred=901, acknowledged=900, by=acker)
    open_alert = _alert(active, occurred=1000, acknowledged=None, response=responses[800])
    _recommendation(active, "a", 30)
    _recommendation(active, "b", 100)
    _highlight(active, 200, with_milestone=True)
    _highlight(active, 20, with_milestone=False)

    old = _created(Patient, PatientFactory(clinic=clinic, player_id=f"{prefix}-old"), 1000)
    CareAssignmentFactory(patient=old, therapist=acker)
    old_session = TherapySessionFactory(patient=old, started_at=ago(900))
    ProgressMarkerFactory(session=old_session)
    OutcomeResponseFactory(patient=old, administered_at=ago(800))
    _alert(old, occurred=851, acknowledged=850, by=acker)
    _recommendation(old, "a", 800)
    _highlight(old, 800, with_milestone=True)

    new = PatientFactory(clinic=clinic, player_id=f"{prefix}-new")  # known for a day: not inactive
    _created(Patient, new, 1)
    return {"active": active, "old": old, "new": new, "sessions": sessions, "open_alert": open_alert}


def _counts(clinic) -> dict[str, int]:
    by_clinic = {
        Patient: {"clinic": clinic},
        CareAssignment: {"patient__clinic": clinic},
        Milestone: {"patient__clinic": clinic},
        ProgressHighlight: {"patient__clinic": clinic},
        Recommendation: {"patient__clinic": clinic},
    }
    return {
        name: model.objects.filter(**by_clinic.get(model, {"clinic": clinic})).count() for name, model in TABLES.items()
    }


@pytest.fixture
def world(clock, clinic, other_clinic, tmp_path, settings):
    settings.AUDIT_HEAD_DIR = str(tmp_path / "heads")
    # The oldest audit events first (a chain's events are in time order): three past the floor, one not.
    for days in (2300, 2250, 2200, 2100):
        audit.audit_record(chain=clinic.slug, actor="system", action=AuditAction.CONFIG_CHANGE, at=ago(days))
    acker = MembershipFactory(clinic=clinic, role=Role.THERAPIST, user__username="t.north").user
    other_acker = MembershipFactory(clinic=other_clinic, role=Role.THERAPIST, user__username="t.river").user
    data = _patient_data(clinic, "n", acker)
    _patient_data(other_clinic, "r", other_acker)
    for category, days in POLICIES.items():
        retention.policy_set(clinic=clinic, category=category, days=days)
    return data


def _enforce(*args: str) -> str:
    out = io.StringIO()
    call_command("enforce_retention", *args, stdout=out)
    return out.getvalue()


def _lines(counts: dict[str, int], verb: str, slug: str = "northside") -> list[str]:
    return [f"{slug} {category}: {n} rows {verb}" for category, n in sorted(counts.items())]


def test_enforce_removes_exactly_what_is_past_each_policy(world, clinic, other_clinic):
    before, other_before = _counts(clinic), _counts(other_clinic)
    audit_before = AuditEvent.objects.filter(chain=clinic.slug).count()

    output = _enforce()

    assert output.splitlines() == _lines(EXPECTED, "removed")
    after = _counts(clinic)
    removed = {name: before[name] - after[name] for name in TABLES}
    assert removed == {
        "sessions": 4,
        "markers": 4,
        "responses": 2,
        "alerts": 3,
        "recommendations": 2,
        "highlights": 2,
        "milestones": 1,  # the removed patient's; the active patient's milestone stays
        "patients": 1,
        "assignments": 1,
    }
    assert _counts(other_clinic) == other_before  # a clinic without policies keeps everything
    # What stayed is exactly what is younger than its policy.
    active = world["active"]
    assert sorted(TherapySession.objects.filter(patient=active).values_list("started_at", flat=True)) == [
        ago(200),
        ago(30),
    ]
    assert not Patient.objects.filter(pk=world["old"].pk).exists()
    assert Patient.objects.filter(pk=world["new"].pk).exists()
    assert Milestone.objects.filter(patient=active).count() == 1
    # Three old events removed, the retention.run event added.
    assert AuditEvent.objects.filter(chain=clinic.slug).count() == audit_before - 3 + 1


def test_open_alerts_survive_and_lose_only_the_link_to_a_removed_response(world):
    _enforce()
    alert = Alert.objects.get(pk=world["open_alert"].pk)
    assert alert.acknowledged_at is None
    assert alert.source_response_id is None  # its response (800 days old) is gone
    assert Alert.objects.filter(patient=world["active"], acknowledged_at__isnull=False).count() == 1  # the 30-day one


def test_audit_prefix_goes_with_a_checkpoint_and_verification_passes(world, clinic):
    first_kept = AuditEvent.objects.get(chain=clinic.slug, seq=4)
    removed_last = AuditEvent.objects.get(chain=clinic.slug, seq=3)
    _enforce()
    head = AuditChainHead.objects.get(chain=clinic.slug)
    assert (head.checkpoint_seq, head.checkpoint_hash) == (3, removed_last.hash)
    assert AuditEvent.objects.filter(chain=clinic.slug).order_by("seq").first().pk == first_kept.pk
    out = io.StringIO()
    call_command("verify_audit_log", stdout=out)
    assert out.getvalue().startswith("audit log intact:")
    # A second run removes nothing more: the event at 2,100 days is younger than the policy.
    assert "northside audit: 0 rows removed" in _enforce()


def test_row_history_of_removed_rows_is_gone(world):
    doomed = world["sessions"][1000]
    TherapySession.objects.filter(pk=doomed.pk).update(duration_minutes=33)  # an update copy
    kept = world["sessions"][30]
    TherapySession.objects.filter(pk=kept.pk).update(duration_minutes=44)
    removed_sessions = list(
        TherapySession.objects.filter(started_at__lt=ago(365), clinic=doomed.clinic).values_list("pk", flat=True)
    )
    removed_markers = list(ProgressMarker.objects.filter(session_id__in=removed_sessions).values_list("pk", flat=True))
    removed_responses = list(
        OutcomeResponse.objects.filter(clinic=doomed.clinic, administered_at__lt=ago(500)).values_list("pk", flat=True)
    )
    removed_alerts = list(
        Alert.objects.filter(clinic=doomed.clinic, acknowledged_at__lt=ago(180)).values_list("pk", flat=True)
    )
    assert TherapySessionEvent.objects.filter(pgh_obj_id=doomed.pk).exists()

    _enforce()

    assert not TherapySessionEvent.objects.filter(pgh_obj_id__in=removed_sessions).exists()
    assert not ProgressMarkerEvent.objects.filter(pgh_obj_id__in=removed_markers).exists()
    assert not OutcomeResponseEvent.objects.filter(pgh_obj_id__in=removed_responses).exists()
    assert not AlertEvent.objects.filter(pgh_obj_id__in=removed_alerts).exists()
    assert not PatientEvent.objects.filter(pgh_obj_id=world["old"].pk).exists()
    assert TherapySessionEvent.objects.filter(pgh_obj_id=kept.pk).exists()  # a kept row keeps its history


def test_the_run_is_audited_with_counts_and_touched_patients_are_stale(world, clinic, other_clinic):
    _enforce()
    event = AuditEvent.objects.filter(chain=clinic.slug, action=AuditAction.RETENTION_RUN).get()
    assert event.detail == {"counts": EXPECTED, "dry_run": False}
    assert event.actor == "system" and event.patients == []
    assert not AuditEvent.objects.filter(chain=other_clinic.slug, action=AuditAction.RETENTION_RUN).exists()
    active = Patient.objects.get(pk=world["active"].pk)
    assert active.data_changed_at == NOW  # its analytics are recomputed (signal, or the reconciler)
    assert Patient.objects.stale_analytics().filter(pk=active.pk).exists()


def test_dry_run_removes_nothing_and_prints_the_same_counts(world, clinic, other_clinic):
    before, audit_before = _counts(clinic), AuditEvent.objects.filter(chain=clinic.slug).count()
    assert retention.preview(clinic) == EXPECTED

    dry = _enforce("--dry-run", "--clinic", clinic.slug)

    assert dry.splitlines() == _lines(EXPECTED, "would be removed")
    assert _counts(clinic) == before
    assert AuditEvent.objects.filter(chain=clinic.slug, seq__lte=3).count() == 3
    event = AuditEvent.objects.filter(chain=clinic.slug).order_by("-seq").first()
    assert (event.action, event.detail) == (AuditAction.RETENTION_RUN, {"counts": EXPECTED, "dry_run": True})
    assert AuditEvent.objects.filter(chain=clinic.slug).count() == audit_before + 1
    assert _enforce().splitlines() == _lines(EXPECTED, "removed")


def test_batches_hold_at_most_the_batch_size(world, clinic, monkeypatch):
    monkeypatch.setattr(retention, "BATCH_SIZE", 2)
    sizes = []
    real = retention._delete_batch

    def spy(queryset, limit=retention.BATCH_SIZE):
        rows = real(queryset, limit=min(limit, 2))
        sizes.append(len(rows))
        return rows

    monkeypatch.setattr(retention, "_delete_batch", spy)
    assert _enforce().splitlines() == _lines(EXPECTED, "removed")
    assert max(sizes) == 2 and len(sizes) > len(EXPECTED)


def test_the_task_runs_every_clinic_with_a_policy(world, clinic):
    assert enforce_retention() == sum(EXPECTED.values())
    assert _counts(clinic)["sessions"] == 2


# ----- the six-year floor, everywhere ----------------------------------------------------------------


def test_the_floor_is_refused_by_the_model_and_the_database(clinic):
    with pytest.raises(ValidationError) as raised:
        RetentionPolicy(clinic=clinic, category="audit", days=2191).full_clean()
    assert "2192 days" in str(raised.value.message_dict["days"])
    with pytest.raises(IntegrityError), transaction.atomic():
        RetentionPolicy.objects.create(clinic=clinic, category="audit", days=365)


def test_the_floor_is_refused_by_the_command(clinic):
    with pytest.raises(CommandError, match="2192 days"):
        call_command("set_retention", "--clinic", clinic.slug, "--category", "audit", "--days", "2191")
    assert not RetentionPolicy.objects.exists()
    with pytest.raises(CommandError, match="Unknown category"):
        call_command("set_retention", "--clinic", clinic.slug, "--category", "games", "--days", "30")
    with pytest.raises(CommandError, match="No clinic"):
        call_command("set_retention", "--clinic", "nowhere", "--category", "audit", "--days", "3000")
    with pytest.raises(CommandError, match="at least 1 day"):
        call_command("set_retention", "--clinic", clinic.slug, "--category", "activity", "--days", "0")


def test_set_and_clear_by_command_are_audited_with_before_and_after(clinic):
    out = io.StringIO()
    call_command("set_retention", "--clinic", clinic.slug, "--category", "activity", "--days", "30", stdout=out)
    call_command("set_retention", "--clinic", clinic.slug, "--category", "activity", "--days", "60", stdout=out)
    call_command("set_retention", "--clinic", clinic.slug, "--category", "activity", "--clear", stdout=out)
    assert not RetentionPolicy.objects.exists()
    changes = [
        e.detail["changes"]["days"]
        for e in AuditEvent.objects.filter(
            chain=clinic.slug, action=AuditAction.CONFIG_CHANGE, object="retention:activity"
        )
    ]
    assert changes == [{"before": None, "after": 30}, {"before": 30, "after": 60}, {"before": 60, "after": None}]


def test_the_task_refuses_a_policy_under_the_floor_and_applies_the_rest(world, clinic, monkeypatch):
    # A policy written past every check (a superuser's raw SQL with the constraint dropped, say).
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE tracking_retentionpolicy DROP CONSTRAINT retention_audit_floor")
        cursor.execute("UPDATE tracking_retentionpolicy SET days = 30 WHERE category = 'audit'")
    with pytest.raises(CommandError, match="refused"):
        _enforce()
    assert AuditEvent.objects.filter(chain=clinic.slug, seq__lte=3).count() == 3  # nothing of the audit removed
    assert _counts(clinic)["sessions"] == 2  # the other policies still applied
    event = AuditEvent.objects.filter(chain=clinic.slug, action=AuditAction.RETENTION_RUN).get()
    assert event.detail["refused"] == ["audit"] and "audit" not in event.detail["counts"]
    logged = []
    monkeypatch.setattr("tracking.tasks.logger.error", lambda message, *args: logged.append(message % args))
    assert enforce_retention() == 0  # the task: the audit policy refused again, nothing else left to remove
    assert logged == [f"retention policy refused: clinic {clinic.pk} category audit (under the floor)"]


# ----- the console ----------------------------------------------------------------------------------


def test_console_shows_each_category_with_its_preview(world, clinic, clinic_admin):
    response = logged_in(clinic_admin).get("/clinic/retention/")
    assert response.status_code == 200
    page = response.content.decode()
    for category, n in EXPECTED.items():
        assert f'id="retention-{category}"' in page
        assert f'data-preview="{n}"' in page
    assert "would remove <strong>4</strong> sessions (with their markers)." in page
    assert "would remove <strong>1</strong> patient, with all their data." in page


def test_console_refuses_the_floor_naming_the_field(clinic, clinic_admin):
    response = logged_in(clinic_admin).post("/clinic/retention/northside/audit", {"days": "365"})
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="days-audit-error"' in page and "at least 2192 days (6 years)" in page
    assert 'aria-invalid="true"' in page
    assert not RetentionPolicy.objects.exists()
    response = logged_in(clinic_admin).post("/clinic/retention/northside/activity", {"days": "soon"})
    assert response.status_code == 400 and "whole number of days" in response.content.decode()


def test_console_sets_and_clears_a_policy_audited(clinic, clinic_admin):
    client = logged_in(clinic_admin)
    response = client.post("/clinic/retention/northside/audit", {"days": str(AUDIT_RETENTION_MIN_DAYS)})
    assert response.status_code == 302
    assert RetentionPolicy.objects.get(clinic=clinic, category="audit").days == AUDIT_RETENTION_MIN_DAYS
    assert client.post("/clinic/retention/northside/audit", {"keep": "forever"}).status_code == 302
    assert not RetentionPolicy.objects.exists()
    events = AuditEvent.objects.filter(chain=clinic.slug, action=AuditAction.CONFIG_CHANGE, object="retention:audit")
    assert [(e.actor, e.role, e.detail["changes"]["days"]) for e in events] == [
        ("admin.north", Role.CLINIC_ADMIN, {"before": None, "after": 2192}),
        ("admin.north", Role.CLINIC_ADMIN, {"before": 2192, "after": None}),
    ]


def test_another_clinics_admin_gets_404_and_other_roles_403(clinic, other_clinic, therapist_a, auditor):
    foreign_admin = MembershipFactory(clinic=other_clinic, role=Role.CLINIC_ADMIN, user__username="admin.river").user
    client = logged_in(foreign_admin)
    assert client.get("/clinic/retention/northside/").status_code == 404
    assert client.post("/clinic/retention/northside/activity", {"days": "1"}).status_code == 404
    assert client.get("/clinic/retention/").status_code == 200  # their own clinic
    assert not RetentionPolicy.objects.filter(clinic=clinic).exists()
    for user in (therapist_a, auditor, UserFactory()):
        assert logged_in(user).get("/clinic/retention/").status_code == 403
        assert logged_in(user).post("/clinic/retention/northside/activity", {"days": "1"}).status_code == 403
    assert not RetentionPolicy.objects.exists()


def test_batches_shrink_while_they_are_slow_and_still_remove_everything(world, clinic, monkeypatch):
    monkeypatch.setattr(retention, "BATCH_SIZE", 4)
    monkeypatch.setattr(retention, "MIN_BATCH", 1)
    monkeypatch.setattr(retention, "TARGET_BATCH_SECONDS", 0.0)  # every batch counts as slow
    limits = []
    real = retention._delete_batch

    def spy(queryset, limit=4):
        limits.append(limit)
        return real(queryset, limit=limit)

    monkeypatch.setattr(retention, "_delete_batch", spy)
    assert _enforce().splitlines() == _lines(EXPECTED, "removed")
    # markers: 4 expired fill a batch, the next (halved) finds none; then the sessions, the same
    assert limits[:4] == [4, 2, 4, 2]
    assert _counts(clinic)["sessions"] == 2


def test_the_nightly_beat_entry_runs_the_task():
    from progress_site.celery import _beat_schedule, app

    entry = _beat_schedule()["retention-nightly"]
    assert entry["task"] == "tracking.tasks.enforce_retention" == enforce_retention.name
    assert entry["task"] in app.tasks


def test_signed_heads_of_events_retention_removed_still_verify(clock, clinic, tmp_path, settings):
    """Nightly exports name heads that a later retention run removes with the prefix: the checkpoint's own
    head, and heads older than the six-year floor, are accepted; the tail after them is still checked."""
    settings.AUDIT_HEAD_DIR = str(tmp_path / "heads")
    for days in (2300, 2250):
        audit.audit_record(chain=clinic.slug, actor="system", action=AuditAction.CONFIG_CHANGE, at=ago(days))
    audit.export_heads(now=ago(2249))  # names seq 2, removed below
    audit.audit_record(chain=clinic.slug, actor="system", action=AuditAction.CONFIG_CHANGE, at=ago(2200))
    audit.export_heads(now=ago(2199))  # names seq 3, which becomes the checkpoint
    audit.audit_record(chain=clinic.slug, actor="system", action=AuditAction.CONFIG_CHANGE, at=ago(2100))
    audit.export_heads(now=ago(2099))  # names seq 4, kept
    retention.policy_set(clinic=clinic, category="audit", days=2192)
    assert "northside audit: 3 rows removed" in _enforce()
    assert AuditChainHead.objects.get(chain=clinic.slug).checkpoint_seq == 3
    out = io.StringIO()
    call_command("verify_audit_log", stdout=out)
    assert out.getvalue().startswith("audit log intact:")
    # A forged checkpoint hash no longer matches its signed head.
    AuditChainHead.objects.filter(chain=clinic.slug).update(checkpoint_hash="f" * 64)
    [result] = [r for r in audit.verify_chains() if r.chain == clinic.slug]
    assert result.broken is not None
