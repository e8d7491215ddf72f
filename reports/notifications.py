"""E-mail about alerts (DESIGN §7): the assigned therapists when an alert is raised, and the clinic's
admins when an urgent alert stays unacknowledged. Messages carry the player id, the kind and severity and
a link to the dashboard, never questionnaire answers or the game's free-text reason: e-mail is not the
place for clinical detail. Each alert's `notified_at` / `escalated_at` stay empty until its e-mail is
sent, so an e-mail lost with a worker or a broker is sent by the next sweep (at least once).

A send that fails (the mail server refuses, an odd address...) is rolled back and recorded on the alert
in a transaction of its own: the attempts, the error's class name (never its message, which could quote
patient data) and a retry time (1 minute, doubling, at most 1 hour). The sweeps skip an alert until its
retry time, take the oldest first, and go on past a failure: one bad alert never holds up the others."""

import logging
import unicodedata
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from reports.models import Alert, AlertSeverity
from tracking.models import CareAssignment, Membership, Role

logger = logging.getLogger(__name__)

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


def _record_failure(alert_id: int, error: Exception, *, step: str, now=None) -> None:
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


def _attempt(step: str, send, alert_id: int, *, now=None, stop_on: tuple = ()) -> bool:
    """Runs one send; a failure is recorded on the alert, not raised. `stop_on` names exceptions that
    are not this alert's fault (a task's soft time limit) and must end the sweep instead."""
    try:
        return send(alert_id)
    except stop_on:
        raise
    except Exception as error:
        _record_failure(alert_id, error, step=step, now=now)
        return False


def _sweep(step: str, send, ids: list[int], *, now=None, stop_on: tuple = ()) -> int:
    sent = 0
    for alert_id in ids:
        try:
            sent += _attempt(step, send, alert_id, now=now, stop_on=stop_on)
        except stop_on:
            raise
        except Exception as error:  # even recording the failure failed: log it and go on
            logger.warning("alert %s sweep skipped alert_id=%s error=%s", step, alert_id, _error_name(error))
    return sent


def _due(retry_field: str, now) -> Q:
    return Q(**{f"{retry_field}__isnull": True}) | Q(**{f"{retry_field}__lte": now})


# ----- the therapists' e-mail ---------------------------------------------------------------------------


def alert_notify(alert_id: int, *, stop_on: tuple = ()) -> bool:
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


def notify_pending(now=None, limit: int = 200, *, stop_on: tuple = ()) -> int:
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


def escalate_unacknowledged(now=None, limit: int = 200, *, stop_on: tuple = ()) -> int:
    """Urgent alerts not acknowledged within ALERT_ESCALATION_MINUTES go to the clinic's admins, once,
    oldest first; one whose e-mail failed waits for its retry time. Returns how many were escalated."""
    now = now or timezone.now()
    cutoff = now - timedelta(minutes=settings.ALERT_ESCALATION_MINUTES)
    ids = list(
        Alert.objects.filter(
            _due("escalation_retry_at", now),
            severity=AlertSeverity.URGENT,
            acknowledged_at__isnull=True,
            escalated_at__isnull=True,
            created_at__lte=cutoff,
        )
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    return _sweep("escalation", _escalate, ids, now=now, stop_on=stop_on)


@transaction.atomic
def _escalate(alert_id: int) -> bool:
    alert = (
        Alert.objects.select_for_update(of=("self",))
        .select_related("patient")
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
    minutes = settings.ALERT_ESCALATION_MINUTES
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
    logger.warning("alert escalated alert_id=%s", alert.pk)
    return True
