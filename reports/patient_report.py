"""The patient report (one printable page per patient, and its PDF): what it shows, read in a fixed
number of queries. And the reads of clinical notes, for the patient page and the report.

The callers check access first (`tracking.access.patient_for_user`: the patient's therapists, and a
therapist under break-glass) and audit the read; nothing here decides who may see what.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from django.db.models import Count
from django.utils import timezone

from reports import report_svg
from reports.models import ClinicalNote
from reports.selectors import alerts_for_patient, patient_outcome_series
from tracking.models import Milestone, Patient

if TYPE_CHECKING:
    from tracking.access import AnyUser

CONFIDENTIAL = "Confidential — contains clinical information"


def _note_fields(note: ClinicalNote) -> dict[str, Any]:
    return {
        "id": note.pk,
        "written_on": note.written_on,
        "author": note.author.get_username(),
        "body": note.body,
        "created_at": note.created_at,
        "updated_at": note.updated_at,
    }


def _note_row(note: ClinicalNote, viewer: AnyUser | None) -> dict[str, Any]:
    revisions = getattr(note, "n_revisions", 0)
    return {
        **_note_fields(note),
        "revisions": revisions,
        "edited": revisions > 0,
        "can_edit": viewer is not None and note.author_id == getattr(viewer, "pk", None),
    }


def patient_notes(patient: Patient, viewer: AnyUser | None = None) -> list[dict[str, Any]]:
    """The patient's notes, newest first (by the date they are about, then by when written), each with
    its author, whether it was edited (how many earlier versions are kept) and whether `viewer` may
    edit it (its author only). One query."""
    notes = (
        ClinicalNote.objects.filter(patient=patient)
        .select_related("author")
        .annotate(n_revisions=Count("revisions"))
        .order_by("-written_on", "-created_at", "-pk")
    )
    return [_note_row(note, viewer) for note in notes]


def note_of_patient(patient: Patient, note_id: int) -> ClinicalNote | None:
    """The note with this id if it is one of `patient`'s, else None (the caller answers 404)."""
    note = ClinicalNote.objects.select_related("author").filter(pk=note_id, patient=patient).first()
    if note is not None:
        note.patient = patient  # loaded already, with its clinic
    return note


def note_history(note: ClinicalNote) -> dict[str, Any]:
    """A note as it is now and each earlier version, newest first. One query."""
    revisions = [
        {"written_on": r.written_on, "body": r.body, "replaced_at": r.replaced_at} for r in note.revisions.all()
    ]
    return {**_note_fields(note), "revisions": revisions}


def _open_alerts(patient: Patient) -> list[dict[str, Any]]:
    return [
        {
            "kind": alert.get_kind_display(),
            "severity": alert.severity,
            "occurred_at": alert.occurred_at,
            "escalated": alert.escalated_at is not None,
        }
        for alert in alerts_for_patient(patient).filter(acknowledged_at__isnull=True)
    ]


def _milestones(patient: Patient) -> list[dict[str, Any]]:
    rows = Milestone.objects.filter(patient=patient).order_by("achieved_at", "pk").values("title", "achieved_at")
    return [{"title": m["title"], "achieved_at": m["achieved_at"]} for m in rows]


def _span(series: dict[str, Any], notes: list[dict[str, Any]]) -> dict[str, str | None]:
    """The dates the report's records cover: its first and latest score or note (local dates)."""
    days = [p["administered_at"][:10] for i in series["instruments"] for p in i["points"]]
    days += [n["written_on"].isoformat() for n in notes]
    return {"first": min(days) if days else None, "last": max(days) if days else None}


def patient_report(
    patient: Patient,
    *,
    viewer: AnyUser | None,
    engagement: dict[str, Any] | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything the patient report shows, over all of the patient's records:

    - the confidential header: clinic, player id, the span of the records, the generated-at time in the
      clinic's time zone;
    - per instrument the outcome series (`reports.selectors.patient_outcome_series`) with its chart as an
      inline SVG (`reports.report_svg`, so the PDF needs no script), and the classification with reliable
      change, recovery and not on track (the series' `classification`, as `patient_effectiveness` gives it);
    - the engagement summary and milestones (`engagement`: the patient page's read model, passed in by
      the caller so a stale summary is recomputed the same way), the open alerts and the notes.
    `patient.clinic` should be loaded (access.patient_for_user does)."""
    now = now or timezone.now()
    clinic_tz = patient.clinic.timezone
    series = patient_outcome_series(patient)
    effectiveness = series["classification"]  # patient_effectiveness's, from the scores already read
    notes = patient_notes(patient, viewer)
    instruments = []
    for instrument in series["instruments"]:
        instruments.append(
            {
                **instrument,
                "svg": report_svg.outcome_chart_svg(instrument) if instrument["points"] else "",
                "measure": effectiveness.get(instrument["code"], {}),
            }
        )
    return {
        "confidential": CONFIDENTIAL,
        "clinic": patient.clinic.name,
        "player_id": patient.player_id,
        "display_name": patient.display_name,
        "timezone": series["timezone"],
        "clinic_timezone": clinic_tz,
        "generated_at": now.astimezone(ZoneInfo(clinic_tz)),
        "span": _span(series, notes),
        "instruments": instruments,
        "effectiveness": effectiveness,
        "engagement": (engagement or {}).get("progress"),
        "milestones": _milestones(patient),
        "open_alerts": _open_alerts(patient),
        "notes": notes,
    }
