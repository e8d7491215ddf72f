"""E-mail about alerts (DESIGN §7): the assigned therapists when an alert is raised, and the clinic's
admins when an urgent alert stays unacknowledged. Messages carry the player id, the kind and severity and
a link to the dashboard, never questionnaire answers or the game's free-text reason: e-mail is not the
place for clinical detail. Each alert's `notified_at` / `escalated_at` stay empty until its e-mail is
sent, so an e-mail lost with a worker or a broker is sent by the next sweep (at least once)."""

import logging
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from reports.models import Alert, AlertSeverity
from tracking.models import CareAssignment, Membership, Role

logger = logging.getLogger(__name__)


def _link(alert: Alert) -> str:
    return settings.SITE_URL.rstrip("/") + reverse("patient", args=[alert.patient.player_id]) + "#alerts"


def _send(subject: str, body: str, recipients: list[str]) -> None:
    if recipients:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients)


@transaction.atomic
def alert_notify(alert_id: int) -> bool:
    """E-mails the therapists assigned to the alert's patient, once. Returns False when there was
    nothing to do (already notified, or no such alert)."""
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
    _send(
        f"[{alert.severity.upper()}] {alert.get_kind_display()}: patient {alert.patient.player_id}",
        f"A {alert.severity} alert was raised for patient {alert.patient.player_id} "
        f"({alert.get_kind_display()}).\n\nOpen it in the dashboard to read it and acknowledge it:\n{_link(alert)}\n",
        recipients,
    )
    alert.notified_at = timezone.now()
    alert.save(update_fields=["notified_at"])
    logger.info("alert notified alert_id=%s recipients=%s", alert.pk, len(recipients))
    return True


def notify_pending(limit: int = 200) -> int:
    """Sends the e-mails of alerts that have none yet (their task was lost, or never sent)."""
    ids = list(
        Alert.objects.filter(notified_at__isnull=True).order_by("created_at").values_list("pk", flat=True)[:limit]
    )
    return sum(alert_notify(alert_id) for alert_id in ids)


def escalate_unacknowledged(now=None, limit: int = 200) -> int:
    """Urgent alerts not acknowledged within ALERT_ESCALATION_MINUTES go to the clinic's admins, once."""
    cutoff = (now or timezone.now()) - timedelta(minutes=settings.ALERT_ESCALATION_MINUTES)
    due = Alert.objects.filter(
        severity=AlertSeverity.URGENT, acknowledged_at__isnull=True, escalated_at__isnull=True, created_at__lte=cutoff
    ).values_list("pk", flat=True)[:limit]
    return sum(_escalate(alert_id) for alert_id in list(due))


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
    _send(
        f"[ESCALATED] Urgent alert for patient {alert.patient.player_id} not acknowledged in {minutes} minutes",
        f"An urgent alert ({alert.get_kind_display()}) for patient {alert.patient.player_id} has not been "
        f"acknowledged within {minutes} minutes.\nAssigned therapists: {therapists or 'none'}.\n\n"
        "Please make sure someone responsible follows it up now.\n",
        admins,
    )
    alert.escalated_at = timezone.now()
    alert.save(update_fields=["escalated_at"])
    logger.warning("alert escalated alert_id=%s", alert.pk)
    return True
