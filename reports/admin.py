"""Django admin of questionnaire responses and alerts: patient data, audited by field name (tracking.admin)."""

from django.contrib import admin

from reports.models import Alert, OutcomeResponse
from tracking.admin import PatientDataAdmin


@admin.register(OutcomeResponse)
class OutcomeResponseAdmin(PatientDataAdmin):
    list_display = ("response_id", "patient", "instrument", "administered_at", "total")
    list_filter = ("instrument",)
    search_fields = ("response_id", "patient__player_id")
    raw_id_fields = ("patient", "clinic")
    list_select_related = ("patient",)


@admin.register(Alert)
class AlertAdmin(PatientDataAdmin):
    """No crisis reason or acknowledgement note here, and the acknowledgement is read-only: it is made
    only through the service that requires a note (reports.alerts)."""

    list_display = ("patient", "kind", "severity", "occurred_at", "acknowledged_at")
    list_filter = ("kind", "severity")
    search_fields = ("patient__player_id", "alert_id")
    raw_id_fields = ("patient", "clinic", "source_response")
    list_select_related = ("patient",)
    exclude = ("reason", "note")
    readonly_fields = ("acknowledged_by", "acknowledged_at")
