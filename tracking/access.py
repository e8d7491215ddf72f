"""Who may reach what: the one place access to patients is decided (DESIGN §7).

A therapist reaches only the patients assigned to them. A patient of a clinic the user is not a member
of, or an unassigned patient, answers 404 — the same answer as a patient that does not exist, so
nothing reveals whether another clinic's patient exists. A member of the clinic whose role does not
give access to clinical detail (clinic admin, auditor) gets 403.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, cast

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone

from tracking.models import BreakGlassGrant, Clinic, IngestToken, Membership, Patient, Role
from tracking.validators import external_id_error

if TYPE_CHECKING:
    # django-stubs' aliases for settings.AUTH_USER_MODEL (`User`) and for `request.user`, that model or an
    # AnonymousUser (`AnyUser`). For annotations only: neither alias exists at run time.
    from django.contrib.auth.models import _AnyUser as AnyUser
    from django.contrib.auth.models import _User as User
    from rest_framework.request import Request

CLINICAL_ROLES = frozenset({Role.THERAPIST})


def roles_of(user: AnyUser) -> dict[int, str]:
    """clinic id → role, for a logged-in user (cached on the user object for the request)."""
    if not getattr(user, "is_authenticated", False):
        return {}
    cached: dict[int, str] | None = getattr(user, "_clinic_roles", None)
    if cached is None:
        member = cast("User", user)  # authenticated, so the user model's, not an AnonymousUser
        cached = dict(Membership.objects.filter(user=member).values_list("clinic_id", "role"))
        setattr(user, "_clinic_roles", cached)  # noqa: B010 (an attribute the user model does not declare)
    return cached


def has_role(user: AnyUser, roles: Iterable[str]) -> bool:
    wanted = set(roles)
    return any(role in wanted for role in roles_of(user).values())


def require_role(user: AnyUser, roles: Iterable[str]) -> None:
    if not has_role(user, roles):
        raise PermissionDenied("Your role does not give access to this page.")


def clinics_with_role(user: AnyUser, role: str) -> QuerySet[Clinic]:
    return Clinic.objects.filter(pk__in=[c for c, r in roles_of(user).items() if r == role])


def caseload_for_user(user: User) -> QuerySet[Patient]:
    """The patients a therapist may see: those assigned to them, in clinics where they are a therapist."""
    therapist_clinics = [c for c, r in roles_of(user).items() if r == Role.THERAPIST]
    return Patient.objects.filter(clinic_id__in=therapist_clinics, assignments__therapist=user)


def patient_for_user(user: User, player_id: str) -> Patient:
    """The patient with this player id if the user may see its clinical detail; else 404 or 403."""
    roles = roles_of(user)
    if external_id_error(player_id):  # no such id can exist (a NUL would not even reach the database)
        raise Http404("No such patient.")
    patient = Patient.objects.select_related("clinic").filter(clinic_id__in=roles, player_id=player_id).first()
    if patient is None:
        raise Http404("No such patient.")
    if roles[patient.clinic_id] not in CLINICAL_ROLES:
        raise PermissionDenied("Your role does not give access to clinical detail.")
    if not patient.assignments.filter(therapist=user).exists():
        grant = active_break_glass(user, patient)
        if grant is None:
            raise Http404("No such patient.")
        patient.break_glass_until = grant.expires_at  # the page carries a banner while it lasts
    return patient


def active_break_glass(user: User, patient: Patient, now: datetime | None = None) -> BreakGlassGrant | None:
    """The user's emergency grant to this patient that has not expired yet (DESIGN §7), if any."""
    return (
        BreakGlassGrant.objects.filter(user=user, patient=patient, expires_at__gt=now or timezone.now())
        .order_by("-expires_at")
        .first()
    )


def break_glass_candidate(user: User, player_id: str) -> Patient | None:
    """The patient a therapist may ask emergency access to: one of a clinic where they are a therapist.
    None for an unknown id and for another clinic's patient alike, so the answer reveals nothing."""
    if external_id_error(player_id):
        return None
    clinics = [c for c, r in roles_of(user).items() if r in CLINICAL_ROLES]
    return Patient.objects.select_related("clinic").filter(clinic_id__in=clinics, player_id=player_id).first()


def patient_for_token(token: IngestToken, player_id: str) -> Patient:
    """A game server reaches the players of its own clinic only."""
    if external_id_error(player_id):
        raise Http404("No such patient.")
    patient = Patient.objects.select_related("clinic").filter(clinic_id=token.clinic_id, player_id=player_id).first()
    if patient is None:
        raise Http404("No such patient.")
    return patient


def patient_for_request(request: Request, player_id: str) -> Patient:
    """For API views that accept either the clinic's ingest token or a logged-in user."""
    if isinstance(request.auth, IngestToken):
        return patient_for_token(request.auth, player_id)
    return patient_for_user(request.user, player_id)
