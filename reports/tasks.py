"""Celery tasks for alerts: thin, idempotent, ids only. The sweeps return how many e-mails they sent;
one alert's failure is recorded on it and never ends a sweep (a soft time limit does)."""

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.cache import cache

from progress_site.celery import enqueue, enqueue_once
from reports import alerts, digest, expected_recovery

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


# ----- expected recovery and the measures-due digest (DESIGN §8) -------------------------------------

REFERENCE_DEBOUNCE_KEY = "references-queued:{}"


def on_outcomes_changed(sender, *, clinic_ids=(), **kwargs) -> None:
    """New questionnaire responses: the clinic's references are rebuilt once the burst is over."""
    for clinic_id in clinic_ids:
        enqueue_once(
            rebuild_references,
            clinic_id,
            key=REFERENCE_DEBOUNCE_KEY.format(clinic_id),
            countdown=settings.REFERENCE_DEBOUNCE_SECONDS,
        )


@shared_task(time_limit=600, soft_time_limit=580)
def rebuild_references(clinic_id: int) -> int:
    """One clinic's references and its patients' not-on-track results. Returns how many alerts it raised."""
    cache.delete(REFERENCE_DEBOUNCE_KEY.format(clinic_id))  # responses from now on queue a new run
    return expected_recovery.clinic_refresh(clinic_id)


@shared_task(time_limit=1800, soft_time_limit=1780)
def rebuild_all_references() -> int:
    return expected_recovery.all_clinics_refresh(stop_on=STOP_ON)


@shared_task(time_limit=600, soft_time_limit=580)
def send_measure_digests() -> int:
    return digest.send_due_digests(stop_on=STOP_ON)
