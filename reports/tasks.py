"""Celery tasks for alerts: thin, idempotent, ids only."""

from celery import shared_task

from reports import notifications


@shared_task(time_limit=60, soft_time_limit=50)
def notify_alert(alert_id: int) -> bool:
    return notifications.alert_notify(alert_id)


@shared_task(time_limit=300, soft_time_limit=280)
def notify_pending_alerts() -> int:
    return notifications.notify_pending()


@shared_task(time_limit=300, soft_time_limit=280)
def escalate_alerts() -> int:
    return notifications.escalate_unacknowledged()
