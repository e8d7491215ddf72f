"""Writes for questionnaire answers and alerts."""

from datetime import date, datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from reports.instruments import INSTRUMENTS, PHQ9, get_instrument
from reports.models import Alert, AlertKind, AlertSeverity, OutcomeResponse
from reports.outcomes import deterioration_crossing
from reports.selectors import scores_by_patient
from tracking import live
from tracking.models import Clinic, Patient
from tracking.services import IngestRejected, IngestResult, patients_get_or_create_locked, stored_by_external_id
from tracking.services import item_error as _error
from tracking.validators import text_error


def patient_flag_risk(*, patient: Patient, at=None) -> None:
    """Raises the patient's risk flag (it is cleared only by a therapist, with a note)."""
    if not patient.risk_flag:
        Patient.objects.filter(pk=patient.pk).update(risk_flag=True, risk_flag_raised_at=at or timezone.now())
        patient.risk_flag = True


def alert_raise(*, patient: Patient, kind: str, severity: str, reason: str, occurred_at, **extra) -> Alert:
    alert = Alert.objects.create(
        clinic_id=patient.clinic_id,
        patient=patient,
        kind=kind,
        severity=severity,
        reason=reason,
        occurred_at=occurred_at,
        **extra,
    )
    if severity in (AlertSeverity.URGENT, AlertSeverity.HIGH):
        patient_flag_risk(patient=patient)
    return alert


def risk_item_alert(response: OutcomeResponse, patient: Patient) -> Alert | None:
    """PHQ-9 item 9 above 0 raises an urgent alert at once, whatever the total (DESIGN §5)."""
    instrument = get_instrument(response.instrument)
    items = response.items
    if instrument.risk_item is None or items is None:
        return None
    answer = items[instrument.risk_item - 1]
    if answer == 0:
        return None
    return alert_raise(
        patient=patient,
        kind=AlertKind.ITEM9,
        severity=AlertSeverity.URGENT,
        reason=f"{PHQ9.name} item {instrument.risk_item} answered {answer} (of 3).",
        occurred_at=response.administered_at,
        source_response=response,
    )


def outcomes_ingest(*, clinic: Clinic, items: list[dict], patients: dict[str, Patient], result, errors: list) -> None:
    """Stores new responses; a response posted again unchanged is counted as unchanged. A stored answer is
    never rewritten: a changed one is rejected so a clinical record cannot be silently altered."""
    existing = stored_by_external_id(OutcomeResponse, clinic, "response_id", items)
    counts = result.counts["outcomes"]
    answered: dict[int, Patient] = {}  # patients with a new response
    for item in items:
        patient = patients[item["player_id"]]
        stored = existing.get(item["response_id"])
        if stored is not None:
            same = (
                stored.patient_id == patient.pk
                and stored.instrument == item["instrument"]
                and stored.administered_at == item["administered_at"]
                and stored.total == item["total"]
                and (item["items"] is None or stored.items == item["items"])
            )
            if same:
                counts.unchanged += 1
            else:
                errors.append(
                    _error(
                        "outcomes",
                        item,
                        "response_id",
                        "response_id",
                        "Already recorded with different values; a stored response cannot be changed.",
                    )
                )
            continue
        response = OutcomeResponse.objects.create(
            clinic=clinic,
            patient=patient,
            response_id=item["response_id"],
            instrument=item["instrument"],
            administered_at=item["administered_at"],
            total=item["total"],
            **OutcomeResponse.item_columns(item["items"]),
        )
        counts.created += 1
        result.changed_patient_ids.add(patient.pk)
        answered.setdefault(patient.pk, patient)
        alert = risk_item_alert(response, patient)
        if alert is not None:
            result.new_alert_ids.append(alert.pk)
    result.new_alert_ids += [a.pk for a in deterioration_alerts(patients=list(answered.values()))]


def alerts_ingest(*, clinic: Clinic, items: list[dict], patients: dict[str, Patient], result, errors: list) -> None:
    """Crisis signals from the game: each becomes an alert at once, in the ingest transaction."""
    existing = stored_by_external_id(Alert, clinic, "alert_id", items)
    counts = result.counts["alerts"]
    for item in items:
        patient = patients[item["player_id"]]
        stored = existing.get(item["alert_id"])
        if stored is not None:
            if stored.patient_id == patient.pk and (stored.severity, stored.reason, stored.occurred_at) == (
                item["level"],
                item["reason"],
                item["occurred_at"],
            ):
                counts.unchanged += 1
            else:
                errors.append(
                    _error(
                        "alerts",
                        item,
                        "alert_id",
                        "alert_id",
                        "Already recorded with different values; a stored crisis signal cannot be changed.",
                    )
                )
            continue
        alert = alert_raise(
            patient=patient,
            kind=AlertKind.CRISIS_SIGNAL,
            severity=item["level"],
            reason=item["reason"],
            occurred_at=item["occurred_at"],
            alert_id=item["alert_id"],
        )
        counts.created += 1
        result.changed_patient_ids.add(patient.pk)
        result.new_alert_ids.append(alert.pk)


@transaction.atomic
def outcomes_import(*, clinic: Clinic, items: list[dict]) -> IngestResult:
    """Stores the validated rows of an outcomes file (`manage.py import_outcomes`) all-or-nothing, exactly
    as the ingest API stores outcomes: patients are created on first sight, a response already stored
    unchanged is counted as unchanged, a changed one is rejected, item 9 > 0 raises an urgent alert.
    Raises IngestRejected (the transaction rolled back) naming each rejected item; an item's `_index` is
    its line in the file."""
    result, errors = IngestResult(), []
    patients = patients_get_or_create_locked(clinic, {item["player_id"] for item in items})
    outcomes_ingest(clinic=clinic, items=items, patients=patients, result=result, errors=errors)
    if errors:
        raise IngestRejected(errors)
    if result.changed_patient_ids:
        # As ingest does: the patient's stored analytics are stale from this transaction on.
        Patient.objects.filter(pk__in=result.changed_patient_ids).update(data_changed_at=timezone.now())
    return result


NOTE_MAX_LENGTH = 2000


def _note_cleaned(note: str, *, required: bool, missing: str) -> str:
    note = note.strip()
    problem = text_error(note) or (missing if required and not note else None)
    if problem is None and len(note) > NOTE_MAX_LENGTH:
        problem = f"At most {NOTE_MAX_LENGTH} characters."
    if problem:
        raise ValidationError({"note": problem})
    return note


@transaction.atomic
def alerts_acknowledge(*, patient: Patient, alert_ids: list[int], user, note: str = "") -> list[Alert]:
    """A therapist has seen these open alerts of one patient and acted on them; one note covers them all.
    Idempotent: an alert already acknowledged keeps its first acknowledgement. Returns the alerts
    acknowledged now. The patient's analytics are marked stale, since "Review the open alert" depends on
    what is open."""
    note = _note_cleaned(note, required=False, missing="")
    alerts = list(
        Alert.objects.select_for_update()
        .filter(patient=patient, pk__in=alert_ids, acknowledged_at__isnull=True)
        .order_by("pk")
    )
    if not alerts:
        return []
    now = timezone.now()
    Alert.objects.filter(pk__in=[a.pk for a in alerts]).update(acknowledged_by=user, acknowledged_at=now, note=note)
    for alert in alerts:
        alert.acknowledged_by, alert.acknowledged_at, alert.note = user, now, note
    Patient.objects.filter(pk=patient.pk).update(data_changed_at=now)
    patient_id, clinic_id = patient.pk, patient.clinic_id
    transaction.on_commit(lambda: live.bump(patient_ids=[patient_id], alert_clinic_ids=[clinic_id]))
    return alerts


def alert_acknowledge(*, alert: Alert, user, note: str = "") -> Alert:
    """One alert (see `alerts_acknowledge`). A second acknowledgement changes nothing."""
    alerts_acknowledge(patient=alert.patient, alert_ids=[alert.pk], user=user, note=note)
    alert.refresh_from_db()
    return alert


def patient_clear_risk_flag(*, patient: Patient, user, note: str) -> Patient:
    """Only a therapist clears a risk flag, and only with a note saying why."""
    note = _note_cleaned(note, required=True, missing="Say why the risk flag can be cleared.")
    if patient.risk_flag:
        patient.risk_flag = False
        patient.risk_flag_cleared_at = timezone.now()
        patient.risk_flag_cleared_by = user
        patient.risk_flag_clear_note = note
        patient.save(
            update_fields=["risk_flag", "risk_flag_cleared_at", "risk_flag_cleared_by", "risk_flag_clear_note"]
        )
        clinic_id = patient.clinic_id
        transaction.on_commit(lambda: live.bump(patient_ids=[patient.pk], alert_clinic_ids=[clinic_id]))
    return patient


def deterioration_alerts(*, patients: list[Patient]) -> list[Alert]:
    """A measure whose latest score is reliably worse than the first (DESIGN §5) raises a high alert
    (DESIGN §7). One open alert per patient names every measure that deteriorated reliably: a further
    measure deteriorating while it is open is added to its reason and notified again. The alert's
    `occurred_at` is the administration that crossed the threshold (the earliest, with several measures).
    Per measure, so that a patient who answers only one questionnaire is not missed. Returns the alerts
    raised or updated (to notify)."""
    if not patients:
        return []
    scores = scores_by_patient([p.pk for p in patients])
    open_alerts = {
        a.patient_id: a
        for a in Alert.objects.filter(
            patient__in=patients, kind=AlertKind.RELIABLE_DETERIORATION, acknowledged_at__isnull=True
        ).order_by("-occurred_at")
    }
    to_notify = []
    for patient in patients:
        crossings = {}
        for instrument in INSTRUMENTS.values():
            own = [s for s in scores.get(patient.pk, []) if s.instrument == instrument.code]
            crossing = deterioration_crossing(instrument, own)
            if crossing is not None:
                crossings[instrument.code] = (instrument, own[0].total, own[-1].total, crossing)
        if not crossings:
            continue
        alert = open_alerts.get(patient.pk)
        if alert is None:
            to_notify.append(
                alert_raise(
                    patient=patient,
                    kind=AlertKind.RELIABLE_DETERIORATION,
                    severity=AlertSeverity.HIGH,
                    reason=_deterioration_reason(crossings, named=()),
                    occurred_at=min(c[3].administered_at for c in crossings.values()),
                    measures=list(crossings),
                )
            )
        elif set(crossings) - set(alert.measures):
            measures = [code for code in INSTRUMENTS if code in crossings or code in alert.measures]
            alert.reason = _deterioration_reason(crossings, named=alert.measures)
            alert.measures = measures
            alert.notified_at = alert.notify_retry_at = None  # the assigned therapists are e-mailed again, now
            alert.save(update_fields=["reason", "measures", "notified_at", "notify_retry_at"])
            patient_flag_risk(patient=patient)
            to_notify.append(alert)
    return to_notify


def _deterioration_reason(crossings: dict, named) -> str:
    """'PHQ-9 rose from 8 to 15 (+7; reliable at 6 or more points) and GAD-7 rose from 5 to 9 (+4; …).'
    A measure the open alert already named that is no longer reliably worse is still mentioned."""
    parts = [
        f"{instrument.name} rose from {first} to {last} (+{last - first}; reliable at "
        f"{instrument.reliable_change} or more points)"
        for instrument, first, last, _ in crossings.values()
    ]
    parts += [f"{INSTRUMENTS[code].name} earlier in this alert" for code in named if code not in crossings]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    noun = "a reliable deterioration" if len(parts) == 1 else "reliable deteriorations"
    return f"{listed}: {noun} since the first score."


def disengagement_alerts(*, disengaged: dict[int, tuple[date, datetime]], patients: dict[int, Patient]) -> list[Alert]:
    """Patients with no active day for 14 days after at least 3 (DESIGN §7): a moderate alert, once per
    absence (none since their last active day began). `disengaged` maps patient id → (last active local
    day, the start of its first session)."""
    if not disengaged:
        return []
    alerted_since = {
        pid
        for pid, occurred_at in Alert.objects.filter(
            patient_id__in=list(disengaged), kind=AlertKind.DISENGAGEMENT
        ).values_list("patient_id", "occurred_at")
        if occurred_at >= disengaged[pid][1]
    }
    now = timezone.now()
    return [
        alert_raise(
            patient=patients[pid],
            kind=AlertKind.DISENGAGEMENT,
            severity=AlertSeverity.MODERATE,
            reason=f"No session since {last_day.isoformat()}: 14 days or more without an active day.",
            occurred_at=now,
        )
        for pid, (last_day, _) in disengaged.items()
        if pid not in alerted_since
    ]
