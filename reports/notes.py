"""Clinical notes: a therapist's dated notes on a patient, encrypted at rest, audited, edited only by
their author with every earlier version kept.

Who may write: a therapist who may see the patient (assigned, or under break-glass); the caller checks
that with `tracking.access.patient_for_user`. Who may edit: the note's author only. Each write is
audited in its own transaction as `note.write`, with the operation and the names of the fields that
changed: never the text, which is clinical free text (DESIGN §7). Errors name the field and never quote
the text either.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from reports.models import ClinicalNote, ClinicalNoteRevision
from tracking import audit
from tracking.history import local_today
from tracking.models import AuditAction, AuditOutcome, Patient
from tracking.validators import text_error

if TYPE_CHECKING:
    from tracking.access import User

BODY_MAX = 10_000
EARLIEST = date(2000, 1, 1)
FIELDS = ("written_on", "body")


def _clean(*, patient: Patient, written_on: object, body: object) -> tuple[date, str]:
    """The note's date and text as they are stored, or a ValidationError naming each bad field."""
    errors: dict[str, str] = {}
    text = body.strip() if isinstance(body, str) else ""
    if not isinstance(body, str) or not text:
        errors["body"] = "Write the note before saving it."
    elif problem := text_error(text):
        errors["body"] = problem
    elif len(text) > BODY_MAX:
        errors["body"] = f"Keep the note to at most {BODY_MAX:,} characters (this one has {len(text):,})."
    if not isinstance(written_on, date):
        errors["written_on"] = "Give the date the note is about."
    else:
        today = local_today(patient.clinic.timezone)
        if written_on > today:
            errors["written_on"] = f"The date cannot be in the future (today is {today.isoformat()} at the clinic)."
        elif written_on < EARLIEST:
            errors["written_on"] = f"The date cannot be before {EARLIEST.isoformat()}."
    if errors:
        raise ValidationError(errors)
    assert isinstance(written_on, date)  # noqa: S101 (checked above; for the type checker)
    return written_on, text


def _audit(note: ClinicalNote, patient: Patient, user: User, *, op: str, changed: list[str]) -> None:
    audit.audit_here(
        action=AuditAction.NOTE_WRITE,
        clinic=patient.clinic_id,
        user=user,
        patients=[patient.player_id],
        object=f"note:{note.pk}",
        detail={"op": op, "model": "clinical_note", "changed": changed},
    )


@transaction.atomic
def note_create(*, patient: Patient, author: User, written_on: object, body: object) -> ClinicalNote:
    """A new note by `author` on `patient`, audited in the same transaction."""
    day, text = _clean(patient=patient, written_on=written_on, body=body)
    note = ClinicalNote.objects.create(patient=patient, author=author, written_on=day, body=text)
    _audit(note, patient, author, op="create", changed=list(FIELDS))
    return note


def note_edit(*, note: ClinicalNote, user: User, written_on: object, body: object) -> ClinicalNote:
    """The author changes their note. The version it replaces is kept as a ClinicalNoteRevision; an edit
    that changes nothing writes nothing. PermissionDenied for anyone but the author."""
    if note.author_id != user.pk:
        raise PermissionDenied("Only the author of a note can edit it.")
    patient = note.patient
    day, text = _clean(patient=patient, written_on=written_on, body=body)
    with transaction.atomic():
        # Locked, so two edits at once each keep the version they really replaced.
        current = ClinicalNote.objects.select_for_update().get(pk=note.pk)
        changed = [f for f, new in (("written_on", day), ("body", text)) if getattr(current, f) != new]
        if not changed:
            return current
        ClinicalNoteRevision.objects.create(
            note=current, written_on=current.written_on, body=current.body, replaced_at=timezone.now()
        )
        current.written_on, current.body = day, text
        current.save(update_fields=["written_on", "body", "updated_at"])
        _audit(current, patient, user, op="update", changed=changed)
    return current


def note_edit_refused(*, note: ClinicalNote, user: User) -> None:
    """A therapist who may see the patient tried to edit another author's note: recorded as a denied
    access (DESIGN §7) in a transaction of its own, so it stays although the request fails."""
    patient = note.patient
    with transaction.atomic():
        audit.audit_here(
            action=AuditAction.ACCESS_DENIED,
            clinic=patient.clinic_id,
            user=user,
            patients=[patient.player_id],
            object=f"note:{note.pk}",
            detail={"status": 403, "reason": "not the author"},
            outcome=AuditOutcome.DENIED,
        )
