"""Writes of provisioning (clinics, users, assignment, ingest tokens) and of what therapists and the game
do on a patient's page (dismissing and restoring a recommendation, a celebration shown), emergency access
(break-glass) and the auditor's reviews and exports. The ingest of game data is `tracking.ingest`; alerts
are `reports.alerts`."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import unicodedata
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import transaction
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone

from tracking import audit
from tracking.fields import encrypted_columns
from tracking.models import (
    AuditAction,
    AuditEvent,
    AuditOutcome,
    AuditReview,
    BreakGlassGrant,
    CareAssignment,
    Clinic,
    IngestToken,
    Membership,
    Patient,
    ProgressHighlight,
    Recommendation,
    Role,
)
from tracking.read_cache import forget_read_model
from tracking.validators import external_id_error, text_error

if TYPE_CHECKING:
    from tracking.access import User

TOKEN_PREFIX = "pt_"  # noqa: S105 (a marker, not a secret)
logger = logging.getLogger(__name__)

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
    # Forgotten now and again after the commit, so a request in between cannot cache the token anew.
    _token_cache_forget(token.token_hash)
    transaction.on_commit(lambda: _token_cache_forget(token.token_hash))
    if revoked:
        audit.audit_here(
            action=AuditAction.TOKEN_CHANGE,
            clinic=token.clinic_id,
            object=f"ingest_token:{token.pk}",
            detail={"op": "revoke", "name": token.name},
        )


# A token is looked up in the cache for at most this long after it was read from the database, so a
# revocation takes effect within these seconds everywhere (at once where the cache is shared: revoking
# forgets the entry). Every ingest request would otherwise begin with this query.
TOKEN_CACHE_SECONDS = 5


_CLINIC_SECRETS = encrypted_columns(Clinic, "clinic__")


def _token_cache_key(token_hash: str) -> str:
    # The SHA-256 of the token, as stored in the table: never the token itself.
    return f"ingest-token:{token_hash}"


def ingest_token_lookup(raw: str) -> IngestToken | None:
    """The active token for this plaintext (with its clinic), with its use recorded; None when unknown or
    revoked. Read from the cache when the database gave it less than TOKEN_CACHE_SECONDS ago; the cache
    only speeds this up (an unreachable cache means a database read)."""
    token_hash = hash_token(raw)
    key = _token_cache_key(token_hash)
    now = timezone.now()
    token, read_at = _token_cached(key, now)
    if token is None:
        active = IngestToken.objects.filter(token_hash=token_hash, revoked_at__isnull=True)
        # The clinic's encrypted columns are left out: the cached entry must not hold a secret in clear.
        token = active.select_related("clinic").defer(*_CLINIC_SECRETS).first()
        if token is None:
            return None
        read_at = now
        _token_cache_set(key, token, read_at, now)
    # One write a minute at most: a busy game server should not queue on this row.
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        IngestToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
        _token_cache_set(key, token, read_at, now)  # so the next requests do not write again
    return token


def _token_cached(key: str, now: datetime) -> tuple[IngestToken | None, datetime]:
    try:
        entry = cache.get(key)
    except Exception:  # noqa: BLE001 - an unreachable cache: read the database
        return None, now
    if entry is None:
        return None, now
    token, read_at = entry
    if (now - read_at).total_seconds() > TOKEN_CACHE_SECONDS or now < read_at:  # too old, or a clock step back
        return None, now
    return token, read_at


def _token_cache_set(key: str, token: IngestToken, read_at: datetime, now: datetime) -> None:
    remaining = TOKEN_CACHE_SECONDS - (now - read_at).total_seconds()
    if remaining <= 0:
        return
    with contextlib.suppress(Exception):  # the cache only speeds the lookup up
        cache.set(key, (token, read_at), timeout=remaining)


def _token_cache_forget(token_hash: str) -> None:
    with contextlib.suppress(Exception):  # entries expire within TOKEN_CACHE_SECONDS anyway
        cache.delete(_token_cache_key(token_hash))


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


# ----- break-glass and the auditor's reviews (DESIGN §7) ---------------------------------------------

BREAK_GLASS_REASON_MIN = 20
BREAK_GLASS_REASON_MAX = 500
REVIEW_NOTE_MAX = 1000


def break_glass_reason_error(reason: str) -> str | None:
    """Why `reason` cannot be the reason of an emergency access, or None when it can."""
    problem = text_error(reason)
    if problem:
        return f"Reason: {problem}"
    length = len(reason.strip())
    if length < BREAK_GLASS_REASON_MIN:
        return (
            f"Give the reason for emergency access in at least {BREAK_GLASS_REASON_MIN} characters "
            f"(this one has {length})."
        )
    if length > BREAK_GLASS_REASON_MAX:
        return f"Keep the reason to at most {BREAK_GLASS_REASON_MAX} characters (this one has {length})."
    return None


@transaction.atomic
def break_glass_grant(
    *, user: User, patient: Patient, reason: str, now: datetime | None = None, ip: str | None = None
) -> BreakGlassGrant:
    """Emergency access of a therapist to an unassigned patient of their clinic, for
    `BREAK_GLASS_MINUTES` from `now`. Audited in the clinic's chain with the reason, and e-mailed to the
    clinic admins once committed (ids only: not the reason). The access helper honours the grant until
    `expires_at`; nothing has to end it."""
    reason = reason.strip()
    problem = break_glass_reason_error(reason)
    if problem:
        raise ValueError(problem)
    now = now or timezone.now()
    minutes = settings.BREAK_GLASS_MINUTES
    grant = BreakGlassGrant.objects.create(
        clinic_id=patient.clinic_id,
        user=user,
        patient=patient,
        reason=reason,
        granted_at=now,
        expires_at=now + timedelta(minutes=minutes),
    )
    audit.audit_record(
        chain=patient.clinic.slug,
        actor=user.get_username(),
        role=Role.THERAPIST,
        action=AuditAction.BREAK_GLASS,
        patients=[patient.player_id],
        object=f"break_glass:{grant.pk}",
        detail={"reason": reason, "minutes": minutes, "expires_at": audit.format_at(grant.expires_at)},
        ip=ip,
    )
    transaction.on_commit(partial(_break_glass_mail, grant.pk))
    return grant


def break_glass_refused(*, user: User, clinic: Clinic, player_id: str, ip: str | None = None) -> None:
    """A break-glass request for an id that is no patient of the therapist's clinic (unknown, or of
    another clinic: the same record for both). The id tried is kept only when it is a valid id."""
    audit.audit_record(
        chain=clinic.slug,
        actor=user.get_username(),
        role=Role.THERAPIST,
        action=AuditAction.BREAK_GLASS,
        detail={
            "refused": "no such patient in the clinic",
            "tried": player_id if not external_id_error(player_id) else "?",
        },
        ip=ip,
        outcome=AuditOutcome.DENIED,
    )


def _mail_text(text: str) -> str:
    """Text safe in a mail header: control and line-breaking characters replaced."""
    return "".join("\ufffd" if unicodedata.category(ch)[0] == "C" or ch in "\u2028\u2029" else ch for ch in text)


def _break_glass_mail(grant_id: int) -> None:
    """Tells the clinic admins: who, which patient, until when, and a link; never the reason (it stays in
    the audit log, for the auditor). A failure is logged and does not undo the grant."""
    try:
        grant = BreakGlassGrant.objects.select_related("user", "patient", "clinic").filter(pk=grant_id).first()
        if grant is None:
            return
        admins = sorted(
            {
                e
                for e in Membership.objects.filter(clinic_id=grant.clinic_id, role=Role.CLINIC_ADMIN).values_list(
                    "user__email", flat=True
                )
                if e
            }
        )
        if not admins:
            return
        until = grant.expires_at.astimezone(ZoneInfo(grant.clinic.timezone))
        who, player = _mail_text(grant.user.get_username()), _mail_text(grant.patient.player_id)
        link = settings.SITE_URL.rstrip("/") + reverse("caseload")
        send_mail(
            f"Emergency access: {who} opened patient {player} (break-glass)",
            f"{who} used emergency access (break-glass) to open patient {player} of {grant.clinic.name}, who is "
            f"not assigned to them.\nThe access lasts until {until:%H:%M} ({grant.clinic.timezone}). It is recorded "
            "in the audit log with the reason given, for the auditor's review.\n\n"
            f"Dashboard: {link}\n",
            settings.DEFAULT_FROM_EMAIL,
            admins,
        )
    except Exception as error:
        logger.warning("break-glass e-mail failed grant_id=%s error=%s", grant_id, type(error).__name__[:100])


@transaction.atomic
def audit_review(*, event: AuditEvent, user: User, note: str = "", ip: str | None = None) -> tuple[AuditReview, bool]:
    """An auditor marks a break-glass or lockout event reviewed, once (the first review stands). Audited
    as `audit.verify` with object `review:EVENT_ID`, the note not in the detail. Returns the review and
    whether it is new."""
    note = note.strip()
    problem = text_error(note)
    if problem:
        raise ValueError(f"Note: {problem}")
    if len(note) > REVIEW_NOTE_MAX:
        raise ValueError(f"Note: keep it to at most {REVIEW_NOTE_MAX} characters.")
    review, created = AuditReview.objects.get_or_create(
        event_id=event.pk,
        defaults={"chain": event.chain, "reviewed_by": user, "reviewed_at": timezone.now(), "note": note},
    )
    if created:
        audit.audit_record(
            chain=event.chain,
            actor=user.get_username(),
            role=Role.AUDITOR,
            action=AuditAction.AUDIT_VERIFY,
            patients=event.patients or [],
            object=f"review:{event.pk}",
            detail={"reviewed": event.action, "seq": event.seq, "with_note": bool(note)},
            ip=ip,
        )
    return review, created


def audit_export_record(
    *, user: User, chain: str, filters: dict[str, Any], patients: list[str], count: int, ip: str | None = None
) -> AuditEvent:
    """The auditor's CSV export of the console, itself audited: the filters and how many events."""
    return audit.audit_record(
        chain=chain,
        actor=user.get_username(),
        role=Role.AUDITOR,
        action=AuditAction.AUDIT_EXPORT,
        patients=patients,
        detail={"via": "console", "format": "csv", "filters": filters, "events": count},
        ip=ip,
    )
