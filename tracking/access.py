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

from tracking import audit
from tracking.models import AuditAction, AuditOutcome, BreakGlassGrant, Clinic, IngestToken, Membership, Patient, Role
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


def caseload_patients(user: User, player_ids: Iterable[str]) -> list[Patient]:
    """The patients of the user's caseload with these player ids (to name a page's patients in an audit
    event when the page holds only their ids)."""
    wanted = set(player_ids)
    if not wanted:
        return []
    return list(caseload_for_user(user).filter(player_id__in=wanted).select_related("clinic").order_by("pk"))


def patient_for_user(user: User, player_id: str) -> Patient:
    """The patient with this player id if the user may see its clinical detail; else 404 or 403."""
    roles = roles_of(user)
    if external_id_error(player_id):  # no such id can exist (a NUL would not even reach the database)
        raise _denied(user, player_id, Http404("No such patient."))
    patient = Patient.objects.select_related("clinic").filter(clinic_id__in=roles, player_id=player_id).first()
    if patient is None:
        raise _denied(user, player_id, Http404("No such patient."))
    if roles[patient.clinic_id] not in CLINICAL_ROLES:
        raise _denied(user, player_id, PermissionDenied("Your role does not give access to clinical detail."), patient)
    if not patient.assignments.filter(therapist=user).exists():
        grant = active_break_glass(user, patient)
        if grant is None:
            raise _denied(user, player_id, Http404("No such patient."), patient)
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
        raise _denied(None, player_id, Http404("No such patient."), token=token)
    patient = Patient.objects.select_related("clinic").filter(clinic_id=token.clinic_id, player_id=player_id).first()
    if patient is None:
        raise _denied(None, player_id, Http404("No such patient."), token=token)
    return patient


def patient_for_request(request: Request, player_id: str) -> Patient:
    """For API views that accept either the clinic's ingest token or a logged-in user."""
    if isinstance(request.auth, IngestToken):
        return patient_for_token(request.auth, player_id)
    return patient_for_user(request.user, player_id)


# ----- the audit log of access (DESIGN §7) ----------------------------------------------------------
#
# A denied attempt to reach a patient is recorded here, where the 404 or 403 is decided: `access.denied`,
# naming the id asked for in `object`. It is appended in a transaction of its own (no view that calls
# these helpers runs in one, and ATOMIC_REQUESTS is off), so it commits although the request fails.
# Reads are recorded by `audit_read`, which the views call once per request with the patients whose data
# they return.


def _view_name() -> dict[str, str]:
    """The URL name of the current request's view (what was asked for, without any of its data)."""
    request = audit.current_request()
    match = getattr(request, "resolver_match", None)
    return {"view": match.url_name} if match is not None and match.url_name else {}


def _denied(
    user: AnyUser | None,
    player_id: str,
    error: Exception,
    patient: Patient | None = None,
    *,
    token: IngestToken | None = None,
) -> Exception:
    """Records `access.denied` and returns the error to raise. The chain is the patient's clinic when the
    patient is one of the user's clinics (a wrong role, not assigned), else the user's own (an unknown
    id, another clinic's patient: the answer and the event are the same for both); the token's clinic
    for the game server."""
    status = 403 if isinstance(error, PermissionDenied) else 404
    clinic: Clinic | int | None = patient.clinic if patient is not None else None
    if token is not None:
        clinic = token.clinic_id
    audit.audit_here(
        action=AuditAction.ACCESS_DENIED,
        clinic=clinic,
        user=user,
        actor=audit.token_actor(token.name) if token is not None else None,
        patients=[patient.player_id] if patient is not None else [],
        object=audit.patient_object(player_id),
        detail={"status": status, **_view_name()},
        outcome=AuditOutcome.DENIED,
    )
    return error


def audit_read(
    user: AnyUser,
    patients: Iterable[Patient],
    *,
    action: str = AuditAction.PATIENT_READ,
    clinic: Clinic | None = None,
    detail: dict[str, object] | None = None,
) -> None:
    """Records that the current request returned the data of these patients to `user` (a person, or the
    game server): one event (`patient.read`, `caseload.read` or `export`) naming exactly them. A request
    that returns patients of several clinics records one event in each clinic's chain, so that each
    clinic's log is complete and names only its own patients. With no patient at all (an empty caseload,
    an aggregate report) it records one event with an empty list, in `clinic`'s chain or the user's."""
    by_clinic: dict[int, list[Patient]] = {}
    for patient in patients:
        by_clinic.setdefault(patient.clinic_id, []).append(patient)
    described = {**(detail or {}), **_view_name()}
    if not by_clinic:
        audit.audit_here(action=action, clinic=clinic, user=user, detail=described)
        return
    clinic_field = Patient._meta.get_field("clinic")
    for clinic_id, group in sorted(by_clinic.items()):
        first = group[0]
        ids = [p.player_id for p in group]
        audit.audit_here(
            action=action,
            clinic=first.clinic if clinic_field.is_cached(first) else clinic_id,
            user=user,
            patients=ids,
            object=f"patient:{ids[0]}" if action == AuditAction.PATIENT_READ and len(ids) == 1 else "",
            detail=described,
        )
