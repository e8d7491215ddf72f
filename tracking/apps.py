from django.apps import AppConfig


class TrackingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "tracking"

    def ready(self) -> None:
        # The services announce what happened (tracking.signals); the task queue and the open pages
        # act on it. Connected here, so no service imports Celery or the live-update module. Imported
        # inside ready(): those modules import models, which are not loaded when this module is.
        from tracking import live, signals, tasks

        signals.data_changed.connect(tasks.on_data_changed, dispatch_uid="tasks.on_data_changed")
        signals.data_changed.connect(live.on_patients_changed, dispatch_uid="live.on_data_changed")
        signals.analytics_recomputed.connect(live.on_patients_changed, dispatch_uid="live.on_recomputed")
        signals.alerts_changed.connect(live.on_alerts_changed, dispatch_uid="live.on_alerts_changed")
        signals.webhooks_queued.connect(tasks.on_webhooks_queued, dispatch_uid="tasks.on_webhooks_queued")
