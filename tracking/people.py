"""People of a clinic: invitations, roles, deactivation (DESIGN §6); every change audited with before and after.

The rules: a clinic keeps at least one active clinic admin, and an admin changes neither their own role
nor their own account here. A deactivated user cannot log in, and their sessions end with the change.
Creating the user is `tracking.services.user_create` (the interfaces call it); this module sends the
invitation, whose one-time link sets the first password within INVITATION_HOURS.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import QuerySet
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.encoding import force_bytes, force_str
from django.utils.http import base36_to_int, urlsafe_base64_decode, urlsafe_base64_encode

from tracking import audit
from tracking.models import AuditAction, Clinic, IngestToken, Membership, Role

INVITATION_HOURS = 72


class InvitationTokenGenerator(PasswordResetTokenGenerator):
    """Django's password-reset token with its own salt and a fixed lifetime of INVITATION_HOURS, whatever
    PASSWORD_RESET_TIMEOUT says. It hashes the password: setting one makes the link useless (one time)."""

    key_salt = "tracking.people.InvitationTokenGenerator"
    timeout = INVITATION_HOURS * 3600

    def check_token(self, user: Any, token: str | None) -> bool:
        if not (user and token):
            return False
        try:
            ts_b36, _ = token.split("-")
            ts = base36_to_int(ts_b36)
        except ValueError:
            return False
        if not any(
            constant_time_compare(self._make_token_with_timestamp(user, ts, secret), token)
            for secret in [self.secret, *self.secret_fallbacks]
        ):
            return False
        return 0 <= self._num_seconds(self._now()) - ts <= self.timeout

    def _now(self) -> datetime:
        return timezone.now().replace(tzinfo=None)  # follows a controlled clock (time_machine) too


invitation_tokens = InvitationTokenGenerator()


class PeopleError(ValidationError):
    """A change the rules refuse, naming the form field it is about."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__({field: [message]})
        self.field = field
        self.message_text = message


# ----- reads the console's pages need -------------------------------------------------------------


def clinic_tokens(clinics: QuerySet[Clinic]) -> QuerySet[IngestToken]:
    """The ingest tokens of these clinics, active first, newest first (no hash leaves this query)."""
    return (
        IngestToken.objects.filter(clinic__in=clinics)
        .select_related("clinic")
        .defer("token_hash")
        .order_by("revoked_at", "-created_at")  # NULLs (active) first on PostgreSQL and SQLite alike
    )


def clinic_token(clinics: QuerySet[Clinic], token_id: int) -> IngestToken | None:
    return IngestToken.objects.filter(clinic__in=clinics, pk=token_id).select_related("clinic").first()


def active_token_named(clinic: Clinic, name: str) -> bool:
    return IngestToken.objects.filter(clinic=clinic, name=name, revoked_at__isnull=True).exists()


def invitation_pending(user: Any) -> bool:
    """Invited and not yet set a password through the link."""
    return not user.has_usable_password() and user.last_login is None


# ----- invitations --------------------------------------------------------------------------------


def invitation_path_parts(user: Any) -> tuple[str, str]:
    """(uidb64, token) of a fresh one-time link for `user`."""
    return urlsafe_base64_encode(force_bytes(user.pk)), invitation_tokens.make_token(user)


def invitation_expires_at(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(hours=INVITATION_HOURS)


@transaction.atomic
def user_invite(
    *, user: Any, clinic: Clinic, role: str, first_name: str, last_name: str, link: Callable[[Any], str]
) -> None:
    """Completes a user just created by `services.user_create` (no usable password) as an invitation:
    their name, and an e-mail with the one-time link (`link(user)` builds its absolute URL), sent when
    the transaction commits. Audited with before (nobody) and after."""
    user.first_name, user.last_name = first_name, last_name
    user.set_unusable_password()
    user.save(update_fields=["first_name", "last_name", "password"])
    expires = invitation_expires_at()
    after = {
        "username": user.get_username(),
        "name": user.get_full_name(),
        "email": user.email,
        "role": role,
        "active": True,
    }
    audit.audit_here(
        action=AuditAction.USER_CHANGE,
        clinic=clinic,
        object=f"user:{user.get_username()}",
        detail={"op": "invite", "before": None, "after": after, "link_expires_at": expires.isoformat()},
    )
    _send_invitation(user, clinic, link(user), expires)


def _send_invitation(user: Any, clinic: Clinic, url: str, expires: datetime) -> None:
    """The invitation e-mail, sent when the transaction commits (never for a change that rolled back)."""
    context = {"user": user, "clinic": clinic, "url": url, "hours": INVITATION_HOURS, "expires_at": expires}
    subject = f"You are invited to {clinic.name} on the Progress Dashboard"
    body = render_to_string("tracking/email/invitation.txt", context)
    transaction.on_commit(lambda: send_mail(subject, body, None, [user.email]))


@transaction.atomic
def invitation_resend(*, user: Any, clinic: Clinic, link: Callable[[Any], str], by: Any = None) -> None:
    """A new link for an invitee who has not set a password yet (the first expired, or the e-mail was
    lost). Refused once they have one, when deactivated, and without an e-mail address."""
    if not invitation_pending(user):
        raise PeopleError("user", f"{user.get_username()} has set a password already; nothing to resend.")
    if not user.is_active:
        raise PeopleError("user", f"{user.get_username()} is deactivated; reactivate them first.")
    if not user.email:
        raise PeopleError("email", f"{user.get_username()} has no e-mail address to send the link to.")
    expires = invitation_expires_at()
    audit.audit_here(
        action=AuditAction.USER_CHANGE,
        clinic=clinic,
        user=by,
        object=f"user:{user.get_username()}",
        detail={"op": "invite_resent", "email": user.email, "link_expires_at": expires.isoformat()},
    )
    _send_invitation(user, clinic, link(user), expires)


def invitation_user(uidb64: str, token: str) -> Any | None:
    """The active user this link was made for, while it is valid (unused, not expired); else None."""
    try:
        pk = int(force_str(urlsafe_base64_decode(uidb64)))
    except (TypeError, ValueError, OverflowError):
        return None
    user = get_user_model().objects.filter(pk=pk, is_active=True).first()
    if user is None or not invitation_tokens.check_token(user, token):
        return None
    return user


@transaction.atomic
def invitation_accept(*, user: Any, password: str) -> None:
    """The invited user set their first password through the link (validated by the form): the link
    stops working, since the token hashes the password. Audited in each of their clinics' chains."""
    user.set_password(password)
    user.save(update_fields=["password"])
    for membership in Membership.objects.filter(user=user).select_related("clinic"):
        audit.audit_here(
            action=AuditAction.USER_CHANGE,
            clinic=membership.clinic,
            user=user,
            object=f"user:{user.get_username()}",
            detail={"op": "invitation_accepted", "changed": ["password"]},
        )


# ----- roles and deactivation ---------------------------------------------------------------------


def _other_active_admins(clinic: Clinic, user: Any) -> bool:
    return (
        Membership.objects.filter(clinic=clinic, role=Role.CLINIC_ADMIN, user__is_active=True)
        .exclude(user=user)
        .exists()
    )


def _state(user: Any, role: str | None) -> dict[str, Any]:
    return {"role": role, "active": user.is_active}


@transaction.atomic
def role_set(*, clinic: Clinic, user: Any, role: str, by: Any = None) -> Membership:
    """Gives `user` the role `role` in `clinic` (a membership is created if they had none there). `by`,
    the admin doing it from the console (None: an operator's command). Refused: an unknown role, one's
    own role, and taking the role of the clinic's last active admin away."""
    if role not in Role.values:
        raise PeopleError("role", f"Choose one of the roles: {', '.join(Role.values)}.")
    membership = Membership.objects.select_for_update().filter(clinic=clinic, user=user).first()
    if membership is not None and membership.role == role:
        return membership
    before = membership.role if membership else None
    if by is not None and by.pk == user.pk:
        raise PeopleError("role", "You cannot change your own role; another clinic admin can.")
    if before == Role.CLINIC_ADMIN and user.is_active and not _other_active_admins_locked(clinic, user):
        raise PeopleError(
            "role",
            f"{user.get_username()} is the last active clinic admin of {clinic.name}; "
            "make someone else an admin first.",
        )
    if membership is None:
        membership = Membership.objects.create(clinic=clinic, user=user, role=role)
    else:
        membership.role = role
        membership.save(update_fields=["role"])
    audit.audit_here(
        action=AuditAction.USER_CHANGE,
        clinic=clinic,
        user=by,
        object=f"user:{user.get_username()}",
        detail={"op": "role", "before": _state(user, before), "after": _state(user, role)},
    )
    return membership


def _other_active_admins_locked(clinic: Clinic, user: Any) -> bool:
    """Like `_other_active_admins`, with the clinic's admin memberships locked, so that two admins
    demoting each other at the same moment cannot leave the clinic with none."""
    list(Membership.objects.select_for_update().filter(clinic=clinic, role=Role.CLINIC_ADMIN).values_list("pk"))
    return _other_active_admins(clinic, user)


@transaction.atomic
def user_deactivate(*, user: Any, by: Any = None, end_sessions: Callable[[Any], int]) -> int:
    """Deactivates `user` everywhere: they cannot log in, and `end_sessions` (tracking.accounts's) ends
    their sessions now. Refused for oneself and for the last active admin of any of their clinics.
    Audited in each of their clinics' chains. Returns how many sessions ended."""
    if by is not None and by.pk == user.pk:
        raise PeopleError("user", "You cannot deactivate your own account; another clinic admin can.")
    memberships = list(Membership.objects.filter(user=user).select_related("clinic").order_by("clinic__slug"))
    _require_scope(user, memberships, by)
    if not user.is_active:
        return 0
    for membership in memberships:
        if membership.role == Role.CLINIC_ADMIN and not _other_active_admins_locked(membership.clinic, user):
            raise PeopleError(
                "user",
                f"{user.get_username()} is the last active clinic admin of {membership.clinic.name}; "
                "make someone else an admin first.",
            )
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    user.is_active = False
    ended = end_sessions(user)
    _audit_activity(user, memberships, by, before=True, after=False, extra={"sessions_ended": ended})
    return ended


@transaction.atomic
def user_reactivate(*, user: Any, by: Any = None) -> bool:
    """Lets a deactivated user log in again (with their password). Returns whether anything changed."""
    memberships = list(Membership.objects.filter(user=user).select_related("clinic").order_by("clinic__slug"))
    _require_scope(user, memberships, by)
    if user.is_active:
        return False
    type(user).objects.filter(pk=user.pk).update(is_active=True)
    user.is_active = True
    _audit_activity(user, memberships, by, before=False, after=True)
    return True


def _require_scope(user: Any, memberships: list[Membership], by: Any) -> None:
    """An account is one for every clinic: a clinic admin (`by`) switches it off or on only when each of
    the user's clinics is one they run. An operator's command (`by` None) may always."""
    if by is None:
        return
    run = set(Membership.objects.filter(user=by, role=Role.CLINIC_ADMIN).values_list("clinic_id", flat=True))
    if any(m.clinic_id not in run for m in memberships):
        raise PeopleError(
            "user",
            f"{user.get_username()} also works in a clinic you do not run; an operator can change their "
            "account (manage.py deactivate_user).",
        )


def _audit_activity(
    user: Any, memberships: list[Membership], by: Any, *, before: bool, after: bool, extra: dict | None = None
) -> None:
    op = "reactivate" if after else "deactivate"
    rows: list[Membership | None] = [*memberships] or [None]  # a user of no clinic: the system chain
    for membership in rows:
        audit.audit_here(
            action=AuditAction.USER_CHANGE,
            clinic=membership.clinic if membership else None,
            user=by,
            object=f"user:{user.get_username()}",
            detail={
                "op": op,
                "before": {"active": before, "role": membership.role if membership else None},
                "after": {"active": after, "role": membership.role if membership else None},
                **(extra or {}),
            },
        )
