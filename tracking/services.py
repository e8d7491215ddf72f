"""Writes for patients, sessions, markers, tokens and the ingest of a batch."""

import hashlib
import secrets
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db import transaction
from django.shortcuts import get_object_or_404
from django.utils import timezone

from tracking import live
from tracking.models import (
    CareAssignment,
    Clinic,
    IngestToken,
    Membership,
    Patient,
    ProgressHighlight,
    ProgressMarker,
    Recommendation,
    TherapySession,
)

TOKEN_PREFIX = "pt_"  # noqa: S105 (a marker, not a secret)

SESSION_FIELDS = (
    "started_at",
    "ended_at",
    "status",
    "duration_minutes",
    "world",
    "character",
    "approaches",
    "interventions_count",
    "key_achievements",
)
MARKER_FIELDS = ("type", "description", "achieved_at", "therapeutic_value", "related_goal_id")


# ----- provisioning -------------------------------------------------------------------------------


def clinic_create(*, slug: str, name: str, timezone_name: str = "UTC") -> Clinic:
    clinic = Clinic(slug=slug, name=name, timezone=timezone_name)
    clinic.full_clean()
    clinic.save()
    return clinic


@transaction.atomic
def user_create(*, username: str, clinic: Clinic, role: str, password: str, email: str = ""):
    user = get_user_model().objects.create_user(username=username, password=password, email=email)
    Membership.objects.create(user=user, clinic=clinic, role=role)
    return user


def patient_assign(*, patient: Patient, therapist) -> CareAssignment:
    assignment, _ = CareAssignment.objects.get_or_create(patient=patient, therapist=therapist)
    return assignment


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def ingest_token_create(*, clinic: Clinic, name: str) -> tuple[IngestToken, str]:
    """Returns the stored token and the plaintext, which is shown once and never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = IngestToken.objects.create(clinic=clinic, name=name, token_hash=hash_token(raw), prefix=raw[:10])
    return token, raw


def ingest_token_revoke(*, token: IngestToken) -> None:
    IngestToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def ingest_token_lookup(raw: str) -> IngestToken | None:
    """The active token for this plaintext, with its use recorded; None when unknown or revoked."""
    token = IngestToken.objects.filter(token_hash=hash_token(raw), revoked_at__isnull=True).first()
    if token is None:
        return None
    now = timezone.now()
    # One write a minute at most: a busy game server should not queue on this row.
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        IngestToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


# ----- ingest -------------------------------------------------------------------------------------


@dataclass
class KindCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass
class IngestResult:
    counts: dict[str, KindCounts] = field(
        default_factory=lambda: {k: KindCounts() for k in ("sessions", "markers", "outcomes", "alerts")}
    )
    changed_patient_ids: set[int] = field(default_factory=set)
    new_alert_ids: list[int] = field(default_factory=list)

    @property
    def created_any(self) -> bool:
        return any(c.created for c in self.counts.values())

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {kind: vars(c) for kind, c in self.counts.items()}


class IngestRejected(Exception):
    """Items that are well-formed but contradict what is stored; nothing of the batch is kept."""

    def __init__(self, errors: list[dict]):
        super().__init__(f"{len(errors)} item(s) rejected")
        self.errors = errors


def item_error(kind: str, item: dict, id_field: str, field_name: str, reason: str) -> dict:
    return {"kind": kind, "index": item["_index"], "item_id": item[id_field], "field": field_name, "reason": reason}


def patients_get_or_create_locked(clinic: Clinic, player_ids: set[str]) -> dict[str, Patient]:
    """Creates patients on first sight, then locks their rows (in id order, so concurrent batches for the
    same players queue instead of deadlocking). The lock is what makes a concurrent identical batch see
    the first one's rows and count them as unchanged."""
    Patient.objects.bulk_create(
        [Patient(clinic=clinic, player_id=p) for p in sorted(player_ids)], ignore_conflicts=True
    )
    patients = Patient.objects.select_for_update().filter(clinic=clinic, player_id__in=player_ids).order_by("pk")
    return {p.player_id: p for p in patients}


def stored_by_external_id(
    model, clinic: Clinic, id_field: str, items: list[dict], item_field: str | None = None
) -> dict:
    """The clinic's stored rows whose `id_field` is one the items give (in `item_field`, default the same
    name), keyed by that id: one query per kind of item in a batch."""
    ids = {item[item_field or id_field] for item in items}
    return {getattr(row, id_field): row for row in model.objects.filter(clinic=clinic, **{f"{id_field}__in": ids})}


def _update_if_changed(stored, values: dict) -> bool:
    """Writes `values` onto a stored row when any of them differs; True when it did."""
    if all(getattr(stored, f) == v for f, v in values.items()):
        return False
    for f, v in values.items():
        setattr(stored, f, v)
    stored.save()
    return True


def _upsert_sessions(clinic, items, patients, result, errors) -> None:
    existing = stored_by_external_id(TherapySession, clinic, "session_id", items)
    counts, to_create = result.counts["sessions"], []
    for item in items:
        patient = patients[item["player_id"]]
        values = {f: item[f] for f in SESSION_FIELDS}
        stored = existing.get(item["session_id"])
        if stored is None:
            to_create.append(TherapySession(clinic=clinic, patient=patient, session_id=item["session_id"], **values))
            counts.created += 1
        elif stored.patient_id != patient.pk:
            errors.append(
                item_error("sessions", item, "session_id", "player_id", "This session belongs to another player.")
            )
        elif _update_if_changed(stored, values):
            counts.updated += 1
        else:
            counts.unchanged += 1
            continue
        result.changed_patient_ids.add(patient.pk)
    TherapySession.objects.bulk_create(to_create)


def _upsert_markers(clinic, items, patients, result, errors) -> None:
    sessions = stored_by_external_id(TherapySession, clinic, "session_id", items)
    existing = stored_by_external_id(ProgressMarker, clinic, "marker_id", items)
    counts, to_create = result.counts["markers"], []
    for item in items:
        patient = patients[item["player_id"]]
        session = sessions.get(item["session_id"])
        if session is None:
            errors.append(
                item_error(
                    "markers", item, "marker_id", "session_id", "Unknown session: post it first or in this batch."
                )
            )
            continue
        if session.patient_id != patient.pk:
            errors.append(
                item_error("markers", item, "marker_id", "player_id", "The session belongs to another player.")
            )
            continue
        values = {f: item[f] for f in MARKER_FIELDS}
        stored = existing.get(item["marker_id"])
        if stored is None:
            to_create.append(
                ProgressMarker(clinic=clinic, patient=patient, session=session, marker_id=item["marker_id"], **values)
            )
            counts.created += 1
        elif stored.session_id != session.pk:
            errors.append(
                item_error("markers", item, "marker_id", "session_id", "This marker was recorded for another session.")
            )
            continue
        elif _update_if_changed(stored, values):
            counts.updated += 1
        else:
            counts.unchanged += 1
            continue
        result.changed_patient_ids.add(patient.pk)
    ProgressMarker.objects.bulk_create(to_create)


@transaction.atomic
def ingest_batch(*, clinic: Clinic, items: dict[str, list[dict]]) -> IngestResult:
    """Stores a validated batch all-or-nothing and idempotently (DESIGN §6). Raises IngestRejected, with
    the transaction rolled back, when an item contradicts what is stored."""
    from reports.services import alerts_ingest, outcomes_ingest
    from tracking.tasks import notify_alerts, schedule_recompute

    result, errors = IngestResult(), []
    player_ids = {item["player_id"] for kind_items in items.values() for item in kind_items}
    patients = patients_get_or_create_locked(clinic, player_ids)

    _upsert_sessions(clinic, items["sessions"], patients, result, errors)
    _upsert_markers(clinic, items["markers"], patients, result, errors)
    outcomes_ingest(clinic=clinic, items=items["outcomes"], patients=patients, result=result, errors=errors)
    alerts_ingest(clinic=clinic, items=items["alerts"], patients=patients, result=result, errors=errors)
    if errors:
        raise IngestRejected(errors)

    if result.changed_patient_ids:
        # Marks the analytics stale in this same transaction, so a lost task is found again later.
        Patient.objects.filter(pk__in=result.changed_patient_ids).update(data_changed_at=timezone.now())
        changed = sorted(result.changed_patient_ids)
        alert_clinics = [clinic.pk] if result.new_alert_ids else []
        transaction.on_commit(lambda: live.bump(patient_ids=changed, alert_clinic_ids=alert_clinics))
        transaction.on_commit(lambda: schedule_recompute(changed))
    if result.new_alert_ids:
        alert_ids = list(result.new_alert_ids)
        transaction.on_commit(lambda: notify_alerts(alert_ids))
    return result


def highlight_mark_celebrated(*, patient: Patient, highlight_id: int) -> ProgressHighlight:
    """The game showed the celebration. Idempotent; 404 for another patient's highlight."""
    from tracking.progress import forget_read_model

    highlight = get_object_or_404(ProgressHighlight, pk=highlight_id, patient=patient)
    if not highlight.celebration_shown:
        highlight.celebration_shown = True
        highlight.celebrated_at = timezone.now()
        highlight.save(update_fields=["celebration_shown", "celebrated_at"])
        forget_read_model(patient)
    return highlight


def recommendation_dismiss(*, recommendation: Recommendation, user) -> Recommendation:
    """A therapist dismisses a recommendation; it stays dismissed while its condition holds."""
    from tracking.progress import forget_read_model

    if not recommendation.dismissed:
        recommendation.dismissed = True
        recommendation.dismissed_at = timezone.now()
        recommendation.dismissed_by = user
        recommendation.save(update_fields=["dismissed", "dismissed_at", "dismissed_by", "updated_at"])
        forget_read_model(recommendation.patient)
    return recommendation


def recommendation_restore(*, recommendation: Recommendation) -> Recommendation:
    """Undoes a dismissal: the recommendation is shown again while its condition holds."""
    from tracking.progress import forget_read_model

    if recommendation.dismissed:
        recommendation.dismissed = False
        recommendation.dismissed_at = None
        recommendation.dismissed_by = None
        recommendation.save(update_fields=["dismissed", "dismissed_at", "dismissed_by", "updated_at"])
        forget_read_model(recommendation.patient)
    return recommendation
