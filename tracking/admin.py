from django.contrib import admin

from tracking.models import (
    CareAssignment,
    Clinic,
    ClinicMilestoneRule,
    IngestToken,
    Membership,
    Milestone,
    Patient,
    ProgressMarker,
    Recommendation,
    TherapySession,
    WebhookDelivery,
)


@admin.register(Clinic)
class ClinicAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "timezone", "created_at")
    search_fields = ("name", "slug")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "clinic", "role", "created_at")
    list_filter = ("role", "clinic")
    search_fields = ("user__username",)
    list_select_related = ("user", "clinic")


class CareAssignmentInline(admin.TabularInline):
    model = CareAssignment
    extra = 0
    raw_id_fields = ("therapist",)


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ("player_id", "clinic", "timezone", "risk_flag", "data_changed_at", "analytics_computed_at")
    list_filter = ("clinic", "risk_flag")
    search_fields = ("player_id",)
    inlines = [CareAssignmentInline]
    list_select_related = ("clinic",)


@admin.register(TherapySession)
class TherapySessionAdmin(admin.ModelAdmin):
    list_display = ("session_id", "patient", "started_at", "status", "duration_minutes")
    list_filter = ("status",)
    search_fields = ("session_id", "patient__player_id")
    raw_id_fields = ("patient", "clinic")
    date_hierarchy = "started_at"
    list_select_related = ("patient",)


@admin.register(ProgressMarker)
class ProgressMarkerAdmin(admin.ModelAdmin):
    list_display = ("marker_id", "patient", "type", "achieved_at", "therapeutic_value")
    list_filter = ("type",)
    search_fields = ("marker_id", "patient__player_id")
    raw_id_fields = ("patient", "session", "clinic")
    list_select_related = ("patient",)


@admin.register(IngestToken)
class IngestTokenAdmin(admin.ModelAdmin):
    """Tokens are created with `manage.py create_ingest_token` (which prints the secret once)."""

    list_display = ("name", "clinic", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("clinic",)
    readonly_fields = ("prefix", "created_at", "last_used_at")
    fields = ("clinic", "name", "prefix", "created_at", "last_used_at", "revoked_at")

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ClinicMilestoneRule)
class ClinicMilestoneRuleAdmin(admin.ModelAdmin):
    """A clinic's own milestone thresholds and titles; a clinic without any uses the defaults."""

    list_display = ("clinic", "family", "threshold", "title")
    list_filter = ("clinic", "family")


@admin.register(Milestone)
class MilestoneAdmin(admin.ModelAdmin):
    list_display = ("patient", "title", "achieved_at")
    list_filter = ("family",)
    search_fields = ("patient__player_id",)
    raw_id_fields = ("patient",)
    list_select_related = ("patient",)


@admin.register(Recommendation)
class RecommendationAdmin(admin.ModelAdmin):
    list_display = ("patient", "title", "priority", "dismissed", "expires_at", "updated_at")
    list_filter = ("type", "dismissed")
    search_fields = ("patient__player_id",)
    raw_id_fields = ("patient", "dismissed_by")
    list_select_related = ("patient",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """The delivery log of celebration webhooks."""

    list_display = ("created_at", "clinic", "event", "status", "attempts", "last_status_code", "delivered_at")
    list_filter = ("status", "clinic")
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
