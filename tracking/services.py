"""Writes of provisioning (clinics, users, assignment, ingest tokens) and of what therapists and the game
do on a patient's page (dismissing and restoring a recommendation, a celebration shown). The ingest of
game data is `tracking.ingest`; alerts are `reports.alerts`."""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.db import transaction
from django.shortcuts import get_object_or_404
from django.utils import timezone

from tracking import audit
from tracking.models import (
    AuditAction,
    CareAssignment,
    Clinic,
    IngestToken,
    Membership,
    Patient,
    ProgressHighlight,
    Recommendation,
)
from tracking.read_cache import forget_read_model

if TYPE_CHECKING:
    from tracking.access import User

TOKEN_PREFIX = "pt_"  # noqa: S105 (a marker, not a secret)

# ----- provisioning -------------------------------------------------------------------------------


# Provisioning is audited here, in the write's transaction, by whoever the current request is (the
# console, Django admin) or `system` (the commands): `config.change`, `user.change`, `assignment.change`,
# `token.change`, with what changed and never a password or a token.


@transaction.atomic
def clinic_create(*, slug: str, name: str, timezone_name: str = "UTC") -> Clinic:
    clinic = Clinic(slug=slug, name=name, timezone=timezone_name)
    clinic.full_clean()
    clinic.save()
    audit.audit_here(
        action=AuditAction.CONFIG_CHANGE,
        clinic=clinic,
        object=f"clinic:{clinic.slug}",
        detail={
            "op": "create",
            "model": "clinic",
            "changes": {f: {"before": None, "after": getattr(clinic, f)} for f in ("slug", "name", "timezone")},
        },
    )
    return clinic


@transaction.atomic
def user_create(*, username: str, clinic: Clinic, role: str, password: str, email: str = "") -> User:
    user = get_user_model().objects.create_user(username=username, password=password, email=email)
    Membership.objects.create(user=user, clinic=clinic, role=role)
    audit.audit_here(
        action=AuditAction.USER_CHANGE,
        clinic=clinic,
        object=f"user:{user.get_username()}",
        detail={"op": "create", "username": user.get_username(), "role": role, "with_email": bool(email)},
    )
    return user


@transaction.atomic
def patient_assign(*, patient: Patient, therapist: User) -> CareAssignment:
    assignment, created = CareAssignment.objects.get_or_create(patient=patient, therapist=therapist)
    if created:
        audit.audit_here(
            action=AuditAction.ASSIGNMENT_CHANGE,
            clinic=patient.clinic_id,
            patients=[patient.player_id],
            object=f"assignment:{assignment.pk}",
            detail={"op": "assign", "therapist": therapist.get_username()},
        )
    return assignment


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def ingest_token_create(*, clinic: Clinic, name: str) -> tuple[IngestToken, str]:
    """Returns the stored token and the plaintext, which is shown once and never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = IngestToken.objects.create(clinic=clinic, name=name, token_hash=hash_token(raw), prefix=raw[:10])
        audit.audit_here(
            action=AuditAction.TOKEN_CHANGE,
            clinic=clinic,
            object=f"ingest_token:{token.pk}",
            detail={"op": "create", "name": name},  # never the token, nor its hash or prefix
        )
    return token, raw


@transaction.atomic
def ingest_token_revoke(*, token: IngestToken) -> None:
    revoked = IngestToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    if revoked:
        audit.audit_here(
            action=AuditAction.TOKEN_CHANGE,
            clinic=token.clinic_id,
            object=f"ingest_token:{token.pk}",
            detail={"op": "revoke", "name": token.name},
        )


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


# ----- the patient page ---------------------------------------------------------------------------


def highlight_mark_celebrated(*, patient: Patient, highlight_id: int) -> ProgressHighlight:
    """The game showed the celebration. Idempotent; 404 for another patient's highlight."""
    highlight = get_object_or_404(ProgressHighlight, pk=highlight_id, patient=patient)
    if not highlight.celebration_shown:
        with transaction.atomic():
            highlight.celebration_shown = True
            highlight.celebrated_at = timezone.now()
            highlight.save(update_fields=["celebration_shown", "celebrated_at"])
            # By the current request's caller: the game's token (token:NAME), or a person.
            audit.audit_here(
                action=AuditAction.HIGHLIGHT_CELEBRATED,
                clinic=patient.clinic_id,
                patients=[patient.player_id],
                object=f"highlight:{highlight.pk}",
            )
        forget_read_model(patient)
    return highlight


def recommendation_dismiss(*, recommendation: Recommendation, user: User) -> Recommendation:
    """A therapist dismisses a recommendation; it stays dismissed while its condition holds."""
    if not recommendation.dismissed:
        with transaction.atomic():
            recommendation.dismissed = True
            recommendation.dismissed_at = timezone.now()
            recommendation.dismissed_by = user
            recommendation.save(update_fields=["dismissed", "dismissed_at", "dismissed_by", "updated_at"])
            _audit_recommendation(recommendation, user, undo=False)
        forget_read_model(recommendation.patient)
    return recommendation


def recommendation_restore(*, recommendation: Recommendation, user: User | None = None) -> Recommendation:
    """Undoes a dismissal: the recommendation is shown again while its condition holds."""
    if recommendation.dismissed:
        with transaction.atomic():
            recommendation.dismissed = False
            recommendation.dismissed_at = None
            recommendation.dismissed_by = None
            recommendation.save(update_fields=["dismissed", "dismissed_at", "dismissed_by", "updated_at"])
            _audit_recommendation(recommendation, user, undo=True)
        forget_read_model(recommendation.patient)
    return recommendation


def _audit_recommendation(recommendation: Recommendation, user: User | None, *, undo: bool) -> None:
    """`recommendation.dismiss`, and its Undo as the same action with {"undo": true}."""
    patient = recommendation.patient
    audit.audit_here(
        action=AuditAction.RECOMMENDATION_DISMISS,
        clinic=patient.clinic_id,
        user=user,
        patients=[patient.player_id],
        object=f"recommendation:{recommendation.pk}",
        detail={"type": recommendation.type, "undo": undo},
    )
