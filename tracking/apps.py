from django.apps import AppConfig
from django.contrib.auth import signals as auth_signals
from django.db.backends.signals import connection_created


class TrackingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "tracking"

    def ready(self) -> None:
        # The services announce what happened (tracking.signals); the task queue and the open pages
        # act on it. Connected here, so no service imports Celery or the live-update module. Imported
        # inside ready(): those modules import models, which are not loaded when this module is.
        from axes.signals import user_locked_out

        from progress_site import db
        from tracking import accounts, audit, live, metrics_worker, signals, tasks

        signals.data_changed.connect(tasks.on_data_changed, dispatch_uid="tasks.on_data_changed")
        signals.data_changed.connect(live.on_patients_changed, dispatch_uid="live.on_data_changed")
        signals.analytics_recomputed.connect(live.on_patients_changed, dispatch_uid="live.on_recomputed")
        signals.alerts_changed.connect(live.on_alerts_changed, dispatch_uid="live.on_alerts_changed")
        signals.webhooks_queued.connect(tasks.on_webhooks_queued, dispatch_uid="tasks.on_webhooks_queued")

        # The audit log's logins, failed logins (unknown usernames too), logouts and lockouts (DESIGN §7).
        auth_signals.user_logged_in.connect(audit.on_user_logged_in, dispatch_uid="audit.login")
        auth_signals.user_login_failed.connect(audit.on_user_login_failed, dispatch_uid="audit.login_failed")
        auth_signals.user_logged_out.connect(audit.on_user_logged_out, dispatch_uid="audit.logout")
        user_locked_out.connect(audit.on_axes_locked_out, dispatch_uid="audit.lockout")
        # Sessions: when each began (the absolute limit), and which are whose (logout ends them all).
        auth_signals.user_logged_in.connect(accounts.on_user_logged_in, dispatch_uid="accounts.login")
        auth_signals.user_logged_out.connect(accounts.on_user_logged_out, dispatch_uid="accounts.logout")
        # Metrics: the Celery worker's part of the multiprocess directory (tracking.metrics_files).
        metrics_worker.connect()
        # Timestamps parsed by psycopg's C loader, on every new database connection (progress_site.db).
        connection_created.connect(db.install_fast_timestamptz_loader, dispatch_uid="db.timestamptz_loader")
