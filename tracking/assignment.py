"""Patients' assignment to therapists and their clinic-side details (DESIGN §6); audited.

The writes of the console's patients section and of `unassign_patient`, and the few reads its pages need.
A clinic admin sees a patient's identifiers (player id, display name), time zone, assignment and when
they were first seen and last active: never clinical detail. Every change is audited in the patient's
clinic's chain, in the write's transaction, with before and after; a display name is patient data, so
its event records only that it changed, never the value.
"""

from __future__ import annotations

import unicodedata
import zoneinfo
from functools import cache
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.db.models.functions import Greatest

from reports.models import OutcomeResponse
from tracking import audit, services
from tracking.access import clinics_with_role, roles_of
from tracking.models import (
    AuditAction,
    AuditOutcome,
    CareAssignment,
    Clinic,
    Membership,
    Patient,
    Role,
    TherapySession,
    validate_timezone,
)
from tracking.selectors import _first_data_at
from tracking.validators import text_error

if TYPE_CHECKING:
    from tracking.access import AnyUser, User

DISPLAY_NAME_MAX = 100
SEARCH_MAX = 128

# ----- reads -----------------------------------------------------------------------------------------


def _last_activity_at() -> Greatest:
    """When the patient last did something: the latest session start or end, or questionnaire (None
    when they have no data yet)."""
    sessions = TherapySession.objects.filter(patient=OuterRef("pk"))
    started = Subquery(sessions.order_by("-started_at").values("started_at")[:1])
    ended = Subquery(sessions.filter(ended_at__isnull=False).order_by("-ended_at").values("ended_at")[:1])
    answered = Subquery(
        OutcomeResponse.objects.filter(patient=OuterRef("pk"))
        .order_by("-administered_at")
        .values("administered_at")[:1]
    )
    return Greatest(started, ended, answered)  # PostgreSQL's GREATEST ignores NULLs


def clinic_patients(admin: AnyUser, *, search: str = "", unassigned: bool = False) -> QuerySet[Patient]:
    """The patients of the clinics `admin` runs, by player id: identifiers, assignment, first seen and
    last active. `search` matches part of the player id (not the display name: it is encrypted, so the
    database cannot compare it); `unassigned` keeps the patients with no therapist."""
    patients = Patient.objects.filter(clinic__in=clinics_with_role(admin, Role.CLINIC_ADMIN))
    if search:
        patients = patients.filter(player_id__icontains=search)
    if unassigned:
        patients = patients.filter(assignments__isnull=True)
    return (
        patients.annotate(first_seen_at=_first_data_at(), last_activity_at=_last_activity_at())
        .select_related("clinic")
        .prefetch_related("assignments__therapist")
        .order_by("clinic__name", "player_id", "pk")
    )


def clinic_patient(admin: AnyUser, patient_id: int) -> Patient | None:
    """Patient `patient_id` if it belongs to a clinic `admin` runs (None for another clinic's patient and
    for no patient alike)."""
    return clinic_patients(admin).filter(pk=patient_id).first()


def clinic_therapists(clinic: Clinic | int) -> list[User]:
    """The active therapists of the clinic: the only people its patients can be assigned to."""
    return list(
        get_user_model()
        .objects.filter(
            memberships__clinic=clinic,
            memberships__role=Role.THERAPIST,
            is_active=True,
        )
        .order_by("username")
    )


def assigned_therapists(patient: Patient) -> list[User]:
    return [a.therapist for a in patient.assignments.select_related("therapist").order_by("therapist__username")]


def therapist_choice(candidates: list[User], user_id: object) -> tuple[User | None, str | None]:
    """The therapist a form chose among `candidates` by user id, or why that choice cannot be made."""
    try:
        wanted = int(str(user_id))
    except ValueError:
        return None, "Choose a therapist."
    for therapist in candidates:
        if therapist.pk == wanted:
            return therapist, None
    return None, "Choose one of the therapists listed."


@cache
def time_zones() -> list[str]:
    return sorted(zoneinfo.available_timezones())


def display_name_error(value: str) -> str | None:
    """Why `value` cannot be a display name: at most 100 characters of text without control characters."""
    problem = text_error(value)
    if problem:
        return problem
    if len(value) > DISPLAY_NAME_MAX:
        return f"At most {DISPLAY_NAME_MAX} characters (this one has {len(value)})."
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        return "Contains a control character (such as a tab or a line break); use plain text."
    return None


def timezone_error(value: str) -> str | None:
    try:
        validate_timezone(value)
    except ValidationError:
        return "Unknown time zone; choose one from the list, such as Europe/London."
    return None


def details_errors(*, display_name: str, timezone_name: str) -> dict[str, str]:
    """field name → what is wrong with it (empty when the details can be saved)."""
    errors = {}
    if problem := display_name_error(display_name):
        errors["display_name"] = problem
    if problem := timezone_error(timezone_name):
        errors["timezone"] = problem
    return errors


def search_error(term: str) -> str | None:
    return text_error(term)


# ----- writes ----------------------------------------------------------------------------------------


def _object(patient: Patient) -> str:
    return f"patient:{patient.player_id}"


def _usernames(patient: Patient) -> list[str]:
    return sorted(CareAssignment.objects.filter(patient=patient).values_list("therapist__username", flat=True))


def _locked(patient: Patient) -> Patient:
    """The patient's row, locked until the end of the transaction, so concurrent changes of the same
    patient's assignment are serialised and their before/after follow each other."""
    return Patient.objects.select_for_update().select_related("clinic").get(pk=patient.pk)


@transaction.atomic
def patient_details_update(*, patient: Patient, display_name: str, timezone_name: str) -> list[str]:
    """Sets the display name and the time zone (blank: the clinic's). Returns the names of the fields that
    changed. Raises ValidationError (by field) on bad input."""
    errors = details_errors(display_name=display_name, timezone_name=timezone_name)
    if errors:
        raise ValidationError(errors)
    row = _locked(patient)
    changed = []
    if row.display_name != display_name:
        changed.append("display_name")
    if row.timezone != timezone_name:
        changed.append("timezone")
    if not changed:
        return []
    before_tz = row.timezone
    row.display_name = display_name
    row.timezone = timezone_name
    row.save(update_fields=changed)
    patient.display_name, patient.timezone = display_name, timezone_name
    # The display name is patient data: its change is recorded by name only.
    before: dict[str, object] = {}
    after: dict[str, object] = {}
    if "timezone" in changed:
        before["timezone"], after["timezone"] = before_tz, timezone_name
    audit.audit_here(
        action=AuditAction.CONFIG_CHANGE,
        clinic=row.clinic,
        patients=[row.player_id],
        object=_object(row),
        detail={"op": "update", "model": "patient", "fields": changed, "before": before, "after": after},
    )
    return changed


@transaction.atomic
def patient_assign(*, patient: Patient, therapist: User) -> bool:
    """Assigns one more therapist (of the patient's clinic) to the patient. False when they already were.
    The assignment and its `assignment.change` event (`op: assign`, the therapist) are
    `services.patient_assign`'s; this adds the check that the therapist is one of the clinic's."""
    row = _locked(patient)
    _require_therapist(row, therapist)
    before = _usernames(row)
    if therapist.get_username() in before:
        return False
    services.patient_assign(patient=row, therapist=therapist)
    return True


@transaction.atomic
def patient_unassign(*, patient: Patient, therapist: User) -> bool:
    """Ends the therapist's assignment to the patient: the patient leaves their caseload and is a 404 for
    them. False when they were not assigned."""
    row = _locked(patient)
    before = _usernames(row)
    deleted, _ = CareAssignment.objects.filter(patient=row, therapist=therapist).delete()
    if not deleted:
        return False
    audit.audit_here(
        action=AuditAction.ASSIGNMENT_CHANGE,
        clinic=row.clinic,
        patients=[row.player_id],
        object=_object(row),
        detail={"op": "unassign", "therapist": therapist.get_username(), "before": before, "after": _usernames(row)},
    )
    return True


@transaction.atomic
def patient_reassign(*, patient: Patient, from_therapist: User, to_therapist: User) -> bool:
    """Moves the patient from one therapist to another of the same clinic, in one transaction and one
    event with before and after. False when `from_therapist` was not assigned, or nothing would change."""
    row = _locked(patient)
    _require_therapist(row, to_therapist)
    before = _usernames(row)
    if from_therapist.get_username() not in before or from_therapist.pk == to_therapist.pk:
        return False
    CareAssignment.objects.filter(patient=row, therapist=from_therapist).delete()
    CareAssignment.objects.get_or_create(patient=row, therapist=to_therapist)
    audit.audit_here(
        action=AuditAction.ASSIGNMENT_CHANGE,
        clinic=row.clinic,
        patients=[row.player_id],
        object=_object(row),
        detail={
            "op": "reassign",
            "from": from_therapist.get_username(),
            "to": to_therapist.get_username(),
            "before": before,
            "after": _usernames(row),
        },
    )
    return True


def _require_therapist(patient: Patient, therapist: User) -> None:
    if not Membership.objects.filter(user=therapist, clinic_id=patient.clinic_id, role=Role.THERAPIST).exists():
        raise ValidationError({"therapist": "Only a therapist of this patient's clinic can be assigned."})


def patient_denied(user: AnyUser, patient_id: object, *, status: int) -> None:
    """Records a refused attempt to reach a patient's console record (`access.denied`): 403 for a role
    other than clinic admin, 404 for a record id that is none of the admin's clinics'. A patient of one
    of the user's clinics is named, in that clinic's chain; otherwise the event goes to the user's chain
    and names no patient. Committed although the request fails (views run outside a transaction)."""
    patient = None
    if isinstance(patient_id, int):
        patient = Patient.objects.filter(pk=patient_id, clinic_id__in=roles_of(user)).first()
    audit.audit_here(
        action=AuditAction.ACCESS_DENIED,
        clinic=patient.clinic_id if patient is not None else None,
        user=user,
        patients=[patient.player_id] if patient is not None else [],
        object=_object(patient) if patient is not None else f"patient-record:{patient_id}",
        detail={"status": status, "view": "clinic-patient"},
        outcome=AuditOutcome.DENIED,
    )
