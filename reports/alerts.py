"""Alerts (DESIGN §5, §7), all of them in one place: the rules that raise them (PHQ-9 item 9, a crisis
signal from the game, reliable deterioration, disengagement), raising and the patient's risk flag,
acknowledging and clearing the flag, and the e-mail to the assigned therapists with the escalation of
urgent alerts to the clinic's admins.

Raising happens inside the transaction of the write that caused it (an ingest batch, a recompute), so an
answer acknowledged to the game always has its alert. What follows after commit (inboxes and open pages
redraw, the e-mail task) is announced with `tracking.signals.alerts_changed`.

E-mail carries the player id, the kind and severity and a link to the dashboard, never questionnaire
answers or the game's free-text reason: e-mail is not the place for clinical detail. Each alert's
`notified_at` / `escalated_at` stay empty until its e-mail is sent, so an e-mail lost with a worker or a
broker is sent by the next sweep (at least once). A send that fails (the mail server refuses, an odd
address...) is rolled back and recorded on the alert in a transaction of its own: the attempts, the
error's class name (never its message, which could quote patient data) and a retry time (1 minute,
doubling, at most 1 hour). The sweeps skip an alert until its retry time, take the oldest first, and go
on past a failure: one bad alert never holds up the others.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from reports.instruments import INSTRUMENTS, PHQ9, Instrument, get_instrument
from reports.models import Alert, AlertKind, AlertSeverity, OutcomeResponse
from reports.outcomes import Score, deterioration_crossing
from reports.selectors import scores_by_patient
from tracking import audit, metrics
from tracking.models import AuditAction, CareAssignment, Clinic, Membership, Patient, Role
from tracking.signals import alerts_changed, data_changed, send_on_commit
from tracking.validators import text_error

if TYPE_CHECKING:
    from tracking.access import User

logger = logging.getLogger(__name__)


# ----- raising and the risk flag ------------------------------------------------------------------


def patient_flag_risk(*, patient: Patient, at: datetime | None = None) -> None:
    """Raises the patient's risk flag (it is cleared only by a therapist, with a note)."""
    if not patient.risk_flag:
        Patient.objects.filter(pk=patient.pk).update(risk_flag=True, risk_flag_raised_at=at or timezone.now())
        patient.risk_flag = True


def alert_raise(
    *, patient: Patient, kind: str, severity: str, reason: str, occurred_at: datetime, **extra: object
) -> Alert:
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


# ----- acknowledging --------------------------------------------------------------------------------


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
def alerts_acknowledge(*, patient: Patient, alert_ids: list[int], user: User, note: str = "") -> list[Alert]:
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
    send_on_commit(data_changed, patient_ids=[patient.pk])
    send_on_commit(alerts_changed, clinic_ids=[patient.clinic_id], raised=[])
    ids = [a.pk for a in alerts]
    audit.audit_here(
        action=AuditAction.ALERT_ACKNOWLEDGE,
        clinic=patient.clinic_id,
        user=user,
        patients=[patient.player_id],
        object="alert:" + ",".join(str(i) for i in ids),
        detail={"count": len(ids), "alert_ids": ids, "with_note": bool(note)},  # never the note
    )
    return alerts


def alert_acknowledge(*, alert: Alert, user: User, note: str = "") -> Alert:
    """One alert (see `alerts_acknowledge`). A second acknowledgement changes nothing."""
    alerts_acknowledge(patient=alert.patient, alert_ids=[alert.pk], user=user, note=note)
    alert.refresh_from_db()
    return alert


def patient_clear_risk_flag(*, patient: Patient, user: User, note: str) -> Patient:
    """Only a therapist clears a risk flag, and only with a note saying why."""
    note = _note_cleaned(note, required=True, missing="Say why the risk flag can be cleared.")
    if patient.risk_flag:
        with transaction.atomic():
            patient.risk_flag = False
            patient.risk_flag_cleared_at = timezone.now()
            patient.risk_flag_cleared_by = user
            patient.risk_flag_clear_note = note
            patient.save(
                update_fields=["risk_flag", "risk_flag_cleared_at", "risk_flag_cleared_by", "risk_flag_clear_note"]
            )
            audit.audit_here(
                action=AuditAction.RISK_FLAG_CLEAR,
                clinic=patient.clinic_id,
                user=user,
                patients=[patient.player_id],
                object=f"patient:{patient.player_id}",
            )  # never the note
        send_on_commit(alerts_changed, clinic_ids=[patient.clinic_id], raised=[])
    return patient


# An instrument whose latest score is reliably worse than the first: (instrument, first total, latest
# total, the score that crossed the threshold).
Crossing = tuple[Instrument, int, int, Score]


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
        crossings: dict[str, Crossing] = {}
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


def _deterioration_reason(crossings: dict[str, Crossing], named: Iterable[str]) -> str:
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


# ----- e-mail and escalation ------------------------------------------------------------------------

RETRY_FIRST_SECONDS = 60
RETRY_MAX_SECONDS = 3600


def retry_seconds(attempts: int) -> int:
    """After the 1st failed attempt 1 min, then 2, 4 … capped at 1 hour."""
    return min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** min(max(0, attempts - 1), 16))


def shown(text: str) -> str:
    """Text safe to put in a header (and a body): every control or line-breaking character becomes
    U+FFFD, so an odd stored id can neither break the message nor pass for another id."""
    return "".join("\ufffd" if unicodedata.category(ch)[0] == "C" or ch in "\u2028\u2029" else ch for ch in text)


def _link(alert: Alert) -> str:
    site = settings.SITE_URL.rstrip("/")
    try:
        return site + reverse("patient", args=[alert.patient.player_id]) + "#alerts"
    except NoReverseMatch:  # an id no URL can carry (a "/"): the therapist's alerts page lists it
        return site + reverse("alerts")


def _send(subject: str, body: str, recipients: list[str]) -> None:
    if recipients:
        send_mail(shown(subject), body, settings.DEFAULT_FROM_EMAIL, recipients)


def _error_name(error: BaseException) -> str:
    return type(error).__name__[:100]


def _record_failure(alert_id: int, error: Exception, *, step: str, now: datetime | None = None) -> None:
    """In its own (small) transaction: one more failed attempt of `step` ("notify" or "escalation")."""
    sent_field = "notified_at" if step == "notify" else "escalated_at"
    with transaction.atomic():
        attempts = (
            Alert.objects.select_for_update(of=("self",))
            .filter(pk=alert_id, **{f"{sent_field}__isnull": True})
            .values_list(f"{step}_attempts", flat=True)
            .first()
        )
        if attempts is None:
            return  # gone, or sent meanwhile by another worker
        delay = retry_seconds(attempts + 1)
        Alert.objects.filter(pk=alert_id).update(
            **{
                f"{step}_attempts": F(f"{step}_attempts") + 1,
                f"{step}_error": _error_name(error),
                f"{step}_retry_at": (now or timezone.now()) + timedelta(seconds=delay),
            }
        )
    logger.warning(
        "alert %s failed alert_id=%s attempt=%s error=%s retry_in=%ss",
        step,
        alert_id,
        attempts + 1,
        _error_name(error),
        delay,
    )


def _attempt(
    step: str,
    send: Callable[[int], bool],
    alert_id: int,
    *,
    now: datetime | None = None,
    stop_on: tuple[type[BaseException], ...] = (),
) -> bool:
    """Runs one send; a failure is recorded on the alert, not raised. `stop_on` names exceptions that
    are not this alert's fault (a task's soft time limit) and must end the sweep instead."""
    try:
        return send(alert_id)
    except stop_on:
        raise
    except Exception as error:
        _record_failure(alert_id, error, step=step, now=now)
        return False


def _sweep(
    step: str,
    send: Callable[[int], bool],
    ids: list[int],
    *,
    now: datetime | None = None,
    stop_on: tuple[type[BaseException], ...] = (),
) -> int:
    sent = 0
    for alert_id in ids:
        try:
            sent += _attempt(step, send, alert_id, now=now, stop_on=stop_on)
        except stop_on:
            raise
        except Exception as error:  # even recording the failure failed: log it and go on
            logger.warning("alert %s sweep skipped alert_id=%s error=%s", step, alert_id, _error_name(error))
    return sent


def _due(retry_field: str, now: datetime) -> Q:
    return Q(**{f"{retry_field}__isnull": True}) | Q(**{f"{retry_field}__lte": now})


# ----- the therapists' e-mail ---------------------------------------------------------------------------


def alert_notify(alert_id: int, *, stop_on: tuple[type[BaseException], ...] = ()) -> bool:
    """E-mails the therapists assigned to the alert's patient, once. Returns False when there was
    nothing to do (already notified, or no such alert) or the send failed (recorded for a retry)."""
    return _attempt("notify", _notify, alert_id, stop_on=stop_on)


@transaction.atomic
def _notify(alert_id: int) -> bool:
    alert = (
        Alert.objects.select_for_update(of=("self",))
        .select_related("patient")
        .filter(pk=alert_id, notified_at__isnull=True)
        .first()
    )
    if alert is None:
        return False
    recipients = sorted(
        e
        for e in CareAssignment.objects.filter(patient_id=alert.patient_id).values_list("therapist__email", flat=True)
        if e
    )
    player = shown(alert.patient.player_id)
    _send(
        f"[{alert.severity.upper()}] {alert.get_kind_display()}: patient {player}",
        f"A {alert.severity} alert was raised for patient {player} "
        f"({alert.get_kind_display()}).\n\nOpen it in the dashboard to read it and acknowledge it:\n{_link(alert)}\n",
        recipients,
    )
    alert.notified_at = timezone.now()
    alert.notify_error, alert.notify_retry_at = "", None
    alert.save(update_fields=["notified_at", "notify_error", "notify_retry_at"])
    logger.info("alert notified alert_id=%s recipients=%s", alert.pk, len(recipients))
    return True


def notify_pending(
    now: datetime | None = None, limit: int = 200, *, stop_on: tuple[type[BaseException], ...] = ()
) -> int:
    """Sends the e-mails of alerts that have none yet (their task was lost, never sent, or failed and its
    retry time has come), oldest first. Returns how many were sent."""
    now = now or timezone.now()
    ids = list(
        Alert.objects.filter(_due("notify_retry_at", now), notified_at__isnull=True)
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    return _sweep("notify", _notify, ids, now=now, stop_on=stop_on)


# ----- escalation to the clinic admins --------------------------------------------------------------------


def escalate_unacknowledged(
    now: datetime | None = None, limit: int = 200, *, stop_on: tuple[type[BaseException], ...] = ()
) -> int:
    """Urgent alerts not acknowledged within their clinic's `alert_escalation_minutes` go to the clinic's
    admins, once, oldest first; one whose e-mail failed waits for its retry time. Returns how many were
    escalated."""
    now = now or timezone.now()
    # One cutoff per distinct setting (a handful), so the comparison stays a plain indexed one on any database.
    cutoff = Q(pk__in=[])
    for minutes in set(Clinic.objects.values_list("alert_escalation_minutes", flat=True)):
        cutoff |= Q(clinic__alert_escalation_minutes=minutes, created_at__lte=now - timedelta(minutes=minutes))
    ids = list(
        Alert.objects.filter(
            cutoff,
            _due("escalation_retry_at", now),
            severity=AlertSeverity.URGENT,
            acknowledged_at__isnull=True,
            escalated_at__isnull=True,
        )
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    return _sweep("escalation", _escalate, ids, now=now, stop_on=stop_on)


@transaction.atomic
def _escalate(alert_id: int) -> bool:
    alert = (
        Alert.objects.select_for_update(of=("self",))
        .select_related("patient", "clinic")
        .filter(pk=alert_id, acknowledged_at__isnull=True, escalated_at__isnull=True)
        .first()
    )
    if alert is None:
        return False
    admins = sorted(
        e
        for e in Membership.objects.filter(clinic_id=alert.clinic_id, role=Role.CLINIC_ADMIN).values_list(
            "user__email", flat=True
        )
        if e
    )
    therapists = ", ".join(
        sorted(CareAssignment.objects.filter(patient_id=alert.patient_id).values_list("therapist__username", flat=True))
    )
    minutes = alert.clinic.alert_escalation_minutes
    player = shown(alert.patient.player_id)
    _send(
        f"[ESCALATED] Urgent alert for patient {player} not acknowledged in {minutes} minutes",
        f"An urgent alert ({alert.get_kind_display()}) for patient {player} has not been "
        f"acknowledged within {minutes} minutes.\nAssigned therapists: {shown(therapists) or 'none'}.\n\n"
        "Please make sure someone responsible follows it up now.\n",
        admins,
    )
    alert.escalated_at = timezone.now()
    alert.escalation_error, alert.escalation_retry_at = "", None
    alert.save(update_fields=["escalated_at", "escalation_error", "escalation_retry_at"])
    metrics.alert_escalated()
    logger.warning("alert escalated alert_id=%s", alert.pk)
    return True
