"""The Celery app. Tasks live in the apps' tasks.py; the beat schedule lives here, in one place."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "progress_site.settings")

app = Celery("progress_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _beat_schedule() -> dict:
    from django.conf import settings

    return {
        # Patients whose data changed after their last computation (a lost or never-sent task), and
        # summaries from an earlier local day: analytics are delayed by an outage, never lost.
        "reconcile-analytics": {
            "task": "tracking.tasks.reconcile_analytics",
            "schedule": settings.ANALYTICS_RECONCILE_SECONDS,
        },
        # Celebration webhooks whose backoff has passed, or whose delivery task was lost.
        "retry-pending-webhooks": {"task": "tracking.tasks.retry_pending_webhooks", "schedule": 60.0},
        # Alert e-mails not sent yet (a lost task, or alerts raised by a recompute).
        "notify-pending-alerts": {"task": "reports.tasks.notify_pending_alerts", "schedule": 60.0},
        # Urgent alerts not acknowledged in ALERT_ESCALATION_MINUTES: e-mail the clinic admins.
        "escalate-alerts": {"task": "reports.tasks.escalate_alerts", "schedule": 60.0},
    }


@app.on_after_configure.connect
def setup_periodic_tasks(sender, **kwargs):
    sender.conf.beat_schedule = _beat_schedule()
