"""Accounts (DESIGN §7): the second factor, the sessions of a user, password changes. Writes, each audited.

The second factor is django-otp's: a user holds at most one authenticator app (TOTP) and one set of
backup codes (tracking.models). A session is "verified" once `django_otp.login` has put the device that
accepted a code into it; `tracking.middleware.SecondFactorMiddleware` lets an unverified session reach
nothing but the second step (or enrolment, under REQUIRE_MFA).
"""

import secrets
from datetime import datetime, timedelta
from importlib import import_module
from typing import Any

import django_otp
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from tracking import audit
from tracking.models import (
    AuditAction,
    AuditOutcome,
    AuthenticatorDevice,
    BackupCode,
    BackupCodeDevice,
    Clinic,
    UserSession,
)

# Session keys: when the login began (the absolute limit) and whether a second step is still owed.
SESSION_STARTED_KEY = "auth_started_at"
SESSION_NEEDS_CODE_KEY = "auth_needs_code"
BACKUP_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread
BACKUP_CODE_LENGTH = 16  # 16 of 31 symbols: 79 bits, so an unsalted digest is safe to keep


def has_device(user: Any) -> bool:
    return AuthenticatorDevice.objects.filter(user=user, confirmed=True).exists()


def enrolled_user_ids(user_ids: list[int]) -> set[int]:
    return set(
        AuthenticatorDevice.objects.filter(user_id__in=user_ids, confirmed=True).values_list("user_id", flat=True)
    )


# ----- sessions ------------------------------------------------------------------------------------


def on_user_logged_in(sender: Any, request: HttpRequest | None = None, user: Any = None, **kwargs: Any) -> None:
    """Django's user_logged_in: note when this login began and whether it owes a code, and remember the
    session as the user's (dropping records of sessions past the absolute limit)."""
    session = getattr(request, "session", None)
    if session is None or user is None:
        return
    now = timezone.now()
    session[SESSION_STARTED_KEY] = now.timestamp()
    session[SESSION_NEEDS_CODE_KEY] = has_device(user)
    if session.session_key is None:
        session.save()
    limit = now - timedelta(hours=settings.SESSION_ABSOLUTE_HOURS)
    UserSession.objects.filter(user=user, started_at__lt=limit).delete()
    UserSession.objects.update_or_create(session_key=session.session_key, defaults={"user": user, "started_at": now})


def session_started_at(session: Any) -> datetime | None:
    started = session.get(SESSION_STARTED_KEY)
    if not isinstance(started, int | float):
        return None
    return datetime.fromtimestamp(started, tz=timezone.get_current_timezone())


def session_expired(session: Any, now: datetime | None = None) -> bool:
    """True when the login of this session began SESSION_ABSOLUTE_HOURS ago or more (or its start is
    unknown: a session from before the limit existed)."""
    started = session_started_at(session)
    now = now or timezone.now()
    return started is None or now - started >= timedelta(hours=settings.SESSION_ABSOLUTE_HOURS)


def end_sessions(user: Any, *, keep: str | None = None) -> int:
    """Ends every session of `user` except `keep` (a session key). Returns how many were ended."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    keys = list(
        UserSession.objects.filter(user=user).exclude(session_key=keep or "").values_list("session_key", flat=True)
    )
    for key in keys:
        store(session_key=key).delete()
    UserSession.objects.filter(session_key__in=keys).delete()
    return len(keys)


def on_user_logged_out(sender: Any, request: HttpRequest | None = None, user: Any = None, **kwargs: Any) -> None:
    """Logging out ends every session of that user, on every device."""
    if user is not None:
        end_sessions(user)


def password_changed(request: HttpRequest, user: User, *, old_session_key: str | None) -> None:
    """After a password change (Django gave the current session a new key and the new hash): every other
    session ends, this one is remembered under its new key, and the change is audited (no value, of
    course)."""
    session = request.session
    UserSession.objects.filter(session_key=old_session_key or "").delete()
    ended = end_sessions(user, keep=session.session_key)
    UserSession.objects.update_or_create(
        session_key=session.session_key,
        defaults={"user": user, "started_at": session_started_at(session) or timezone.now()},
    )
    audit.audit_here(
        action=AuditAction.USER_CHANGE,
        user=user,
        object=f"user:{user.get_username()}",
        detail={"changed": ["password"], "other_sessions_ended": ended},
    )


# ----- the second factor ---------------------------------------------------------------------------


def enrolment_device(user: User) -> AuthenticatorDevice:
    """The user's authenticator app waiting to be confirmed (a new secret, if there is none yet)."""
    device = AuthenticatorDevice.objects.filter(user=user, confirmed=False).order_by("-pk").first()
    return device or AuthenticatorDevice.objects.create(user=user, name="Authenticator app", confirmed=False)


def _new_backup_codes(user: User) -> list[str]:
    BackupCodeDevice.objects.filter(user=user).delete()
    device = BackupCodeDevice.objects.create(user=user, name="Backup codes", confirmed=True)
    codes = [
        "".join(secrets.choice(BACKUP_CODE_ALPHABET) for _ in range(BACKUP_CODE_LENGTH))
        for _ in range(settings.MFA_BACKUP_CODES)
    ]
    BackupCode.objects.bulk_create(BackupCode(device=device, digest=BackupCode.digest_of(code)) for code in codes)
    return [format_backup_code(code) for code in codes]


def format_backup_code(code: str) -> str:
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def confirm_enrolment(request: HttpRequest, device: AuthenticatorDevice, code: str) -> list[str] | None:
    """Confirms the device with a first code from the app: it replaces any earlier one, the session is
    verified with it, every other session of the user ends, and a fresh set of backup codes is issued
    (returned once, stored only as digests). None when the code is wrong (audited as a failed
    enrolment)."""
    user = request.user
    with transaction.atomic():
        locked = AuthenticatorDevice.objects.select_for_update().get(pk=device.pk, user_id=user.pk)
        if not locked.verify_token(code):
            audit.audit_here(
                action=AuditAction.MFA, user=user, detail={"event": "enrol_failed"}, outcome=AuditOutcome.FAILED
            )
            return None
        AuthenticatorDevice.objects.filter(user_id=user.pk).exclude(pk=locked.pk).delete()
        locked.confirmed = True
        locked.save(update_fields=["confirmed"])
        codes = _new_backup_codes(user)  # type: ignore[arg-type]
        # A session that logged in without this device (or with the one it replaces) ends.
        ended = end_sessions(user, keep=request.session.session_key)
        detail = {"event": "enrolled", "backups": len(codes), "other_sessions_ended": ended}
        audit.audit_here(action=AuditAction.MFA, user=user, detail=detail)
    django_otp.login(request, locked)
    request.session[SESSION_NEEDS_CODE_KEY] = False
    return codes


def regenerate_backup_codes(request: HttpRequest) -> list[str]:
    """A new set of backup codes for the logged-in (verified) user; the old ones stop working."""
    user = request.user
    with transaction.atomic():
        codes = _new_backup_codes(user)  # type: ignore[arg-type]
        audit.audit_here(action=AuditAction.MFA, user=user, detail={"event": "backups_renewed", "backups": len(codes)})
    # The session was verified by a device that no longer exists when it was the old backup codes.
    device = AuthenticatorDevice.objects.filter(user_id=user.pk, confirmed=True).first()
    if device is not None:
        django_otp.login(request, device)
    return codes


def backup_codes_left(user: Any) -> int:
    return BackupCode.objects.filter(device__user=user).count()


def verify_second_factor(request: HttpRequest, code: str) -> bool:
    """The second step of a login: a code from the authenticator app or one backup code (used up).
    Audited either way; django-otp's throttling slows repeated failures on each device."""
    user = request.user
    code = (code or "").strip()
    with transaction.atomic():
        device = django_otp.match_token(user, code) if code else None
        if device is None:
            audit.audit_here(
                action=AuditAction.MFA, user=user, detail={"event": "code_refused"}, outcome=AuditOutcome.FAILED
            )
            return False
        method = "backup_code" if isinstance(device, BackupCodeDevice) else "authenticator"
        detail: dict[str, Any] = {"event": "verified", "method": method}
        if method == "backup_code":
            detail["backups_left"] = backup_codes_left(user)
        audit.audit_here(action=AuditAction.MFA, user=user, detail=detail)
    django_otp.login(request, device)
    request.session[SESSION_NEEDS_CODE_KEY] = False
    return True


def reset_second_factor(*, user: User, by: Any, clinic: Clinic | None = None) -> int:
    """Removes every device of `user` (a lost phone) and ends their sessions: at their next login they
    enrol again (REQUIRE_MFA) or log in with the password alone. Audited in `clinic`'s chain (the console)
    or the user's own (Django admin). Returns how many devices were removed."""
    with transaction.atomic():
        removed = AuthenticatorDevice.objects.filter(user=user).delete()[1].get("tracking.AuthenticatorDevice", 0)
        BackupCodeDevice.objects.filter(user=user).delete()
        ended = end_sessions(user)
        audit.audit_here(
            action=AuditAction.MFA,
            clinic=clinic,
            user=by,
            object=f"user:{user.get_username()}",
            detail={"event": "reset", "devices_removed": removed, "sessions_ended": ended},
        )
    return removed
