from django.apps import AppConfig


class ReportsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "reports"

    def ready(self) -> None:
        # New or updated alerts are e-mailed by a worker (see tracking.signals). Imported inside ready():
        # these modules import models, which are not loaded when this module is.
        from reports import tasks
        from tracking import signals

        signals.alerts_changed.connect(tasks.on_alerts_changed, dispatch_uid="reports.tasks.on_alerts_changed")
        signals.outcomes_changed.connect(tasks.on_outcomes_changed, dispatch_uid="reports.tasks.on_outcomes_changed")
