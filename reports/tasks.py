"""Celery tasks for alerts: thin, idempotent, ids only. The sweeps return how many e-mails they sent;
one alert's failure is recorded on it and never ends a sweep (a soft time limit does)."""

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from progress_site.celery import enqueue
from reports import alerts

STOP_ON = (SoftTimeLimitExceeded,)  # not an alert's fault: end the sweep, the next one goes on


def on_alerts_changed(sender, *, raised=(), **kwargs) -> None:
    """New or updated alerts are e-mailed by a worker (connected in ReportsConfig.ready); a send that
    fails or is never queued is picked up by the beat sweep."""
    for alert_id in raised:
        enqueue(notify_alert, alert_id)


@shared_task(time_limit=60, soft_time_limit=50)
def notify_alert(alert_id: int) -> bool:
    return alerts.alert_notify(alert_id, stop_on=STOP_ON)


@shared_task(time_limit=300, soft_time_limit=280)
def notify_pending_alerts() -> int:
    return alerts.notify_pending(stop_on=STOP_ON)


@shared_task(time_limit=300, soft_time_limit=280)
def escalate_alerts() -> int:
    return alerts.escalate_unacknowledged(stop_on=STOP_ON)
