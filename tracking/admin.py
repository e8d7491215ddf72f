"""Django admin (superusers). Every ModelAdmin here and in reports/admin.py is audited (`AuditedAdmin`):
each save and delete records who changed which fields, with before and after for configuration and
provisioning (secrets masked) and field names only for patient data, whose values are clinical."""

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db import models

from tracking import accounts, audit
from tracking.models import (
    AuditAction,
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

# ----- the audit of every change made here (DESIGN §7) ----------------------------------------------

# The action of a change of each model; every other model's is `config.change`.
ADMIN_ACTIONS: dict[type[models.Model], str] = {
    get_user_model(): AuditAction.USER_CHANGE,
    Membership: AuditAction.USER_CHANGE,
    CareAssignment: AuditAction.ASSIGNMENT_CHANGE,
    IngestToken: AuditAction.TOKEN_CHANGE,
}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, models.Model):
        return value.pk
    if isinstance(value, list | tuple | set | models.QuerySet):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _clinic_of(obj: models.Model) -> Any:
    """The clinic whose chain records a change of `obj`: its own, its patient's, or for a user the clinic
    of their only membership. None (the acting admin's chain, usually `system`) otherwise."""
    if isinstance(obj, Clinic):
        return obj
    if isinstance(obj, get_user_model()) and obj.pk is not None:
        clinics = list(Membership.objects.filter(user_id=obj.pk).values_list("clinic_id", flat=True)[:2])
        return clinics[0] if len(clinics) == 1 else None
    if getattr(obj, "clinic_id", None):
        return obj.clinic_id
    patient = getattr(obj, "patient", None)
    return patient.clinic_id if isinstance(patient, Patient) else None


def _patients_of(obj: models.Model) -> list[str]:
    if isinstance(obj, Patient):
        return [obj.player_id]
    patient = getattr(obj, "patient", None)
    return [patient.player_id] if isinstance(patient, Patient) else []


def audit_admin_change(
    request: Any,
    obj: models.Model,
    op: str,
    changes: dict[str, tuple[Any, Any]],
    *,
    values: bool,
    object_id: Any = None,
) -> None:
    """One event for a change of `obj` in Django admin: its fields with before and after (`values`), or
    their names only (patient data). Secrets are masked by the audit log itself (a field named like a
    token, a secret or a password)."""
    model = type(obj)
    detail: dict[str, Any] = {"via": "admin", "op": op, "model": model._meta.label_lower}
    if values:
        detail["changes"] = {f: {"before": _jsonable(b), "after": _jsonable(a)} for f, (b, a) in changes.items()}
    else:
        detail["fields"] = sorted(changes)
    audit.audit_here(
        action=ADMIN_ACTIONS.get(model, AuditAction.CONFIG_CHANGE),
        clinic=_clinic_of(obj),
        user=request.user,
        patients=_patients_of(obj),
        object=f"{model._meta.model_name}:{object_id if object_id is not None else obj.pk}",
        detail=detail,
    )


class AuditedAdmin(admin.ModelAdmin):
    """A ModelAdmin whose saves and deletes (one, several, and those of its inlines) are audited, in the
    admin's own transaction. `audit_values = False` for patient data: field names only."""

    audit_values = True

    def _values_of(self, obj: models.Model) -> dict[str, Any]:
        return {f.name: f.value_from_object(obj) for f in obj._meta.concrete_fields if not f.primary_key}

    def save_model(self, request, obj, form, change):
        names = list(form.changed_data) if change else list(form.fields)
        before = {name: form.initial.get(name) if change else None for name in names}
        super().save_model(request, obj, form, change)
        after = {name: form.cleaned_data.get(name) for name in names}
        changes = {name: (before[name], after[name]) for name in names}
        audit_admin_change(request, obj, "update" if change else "create", changes, values=self.audit_values)

    def delete_model(self, request, obj):
        object_id = obj.pk
        changes = {name: (value, None) for name, value in self._values_of(obj).items()}
        audit_admin_change(request, obj, "delete", changes, values=self.audit_values, object_id=object_id)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            changes = {name: (value, None) for name, value in self._values_of(obj).items()}
            audit_admin_change(request, obj, "delete", changes, values=self.audit_values)
        super().delete_queryset(request, queryset)

    def save_formset(self, request, form, formset, change):
        deleted = [(f.instance, f.instance.pk) for f in formset.deleted_forms if f.instance.pk is not None]
        initial = {id(f.instance): f.initial for f in formset.forms}
        super().save_formset(request, form, formset, change)
        for obj in formset.new_objects:
            fields = self._values_of(obj)
            audit_admin_change(request, obj, "create", {n: (None, v) for n, v in fields.items()}, values=True)
        for obj, names in formset.changed_objects:
            before = initial.get(id(obj), {})
            now = self._values_of(obj)
            changes = {n: (before.get(n), now.get(n)) for n in names}
            audit_admin_change(request, obj, "update", changes, values=True)
        for obj, object_id in deleted:
            fields = {n: (v, None) for n, v in self._values_of(obj).items()}
            audit_admin_change(request, obj, "delete", fields, values=True, object_id=object_id)


class PatientDataAdmin(AuditedAdmin):
    """Patient data: a change is audited with the names of the fields changed, never their values."""

    audit_values = False


admin.site.unregister(get_user_model())


@admin.register(get_user_model())
class AuditedUserAdmin(AuditedAdmin, UserAdmin):
    """Django's user admin, audited (`user.change`); a password set here is recorded by name only. The
    action "Reset second factor" removes a user's devices (audited `auth.mfa`)."""

    actions = ["reset_second_factor"]

    @admin.action(description="Reset second factor (the user sets up a new one at the next login)")
    def reset_second_factor(self, request, queryset):
        removed = sum(accounts.reset_second_factor(user=user, by=request.user) for user in queryset)
        self.message_user(request, f"Second factor reset for {queryset.count()} user(s); {removed} device(s) removed.")

    def user_change_password(self, request, id, form_url=""):  # noqa: A002 (Django's signature)
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:
            user = self.get_object(request, id)
            if user is not None:
                audit_admin_change(request, user, "update", {"password": (None, None)}, values=False)
        return response


@admin.register(Clinic)
class ClinicAdmin(AuditedAdmin):
    list_display = ("name", "slug", "timezone", "created_at")
    search_fields = ("name", "slug")


@admin.register(Membership)
class MembershipAdmin(AuditedAdmin):
    list_display = ("user", "clinic", "role", "created_at")
    list_filter = ("role", "clinic")
    search_fields = ("user__username",)
    list_select_related = ("user", "clinic")


class CareAssignmentInline(admin.TabularInline):
    model = CareAssignment
    extra = 0
    raw_id_fields = ("therapist",)


@admin.register(Patient)
class PatientAdmin(PatientDataAdmin):
    """No clinical free text here (the risk-flag note), and the flag itself is read-only: it changes only
    through the service that requires a therapist's note."""

    list_display = ("player_id", "clinic", "timezone", "risk_flag", "data_changed_at", "analytics_computed_at")
    list_filter = ("clinic", "risk_flag")
    search_fields = ("player_id",)
    inlines = [CareAssignmentInline]
    list_select_related = ("clinic",)
    exclude = ("risk_flag_clear_note",)
    readonly_fields = ("risk_flag", "risk_flag_raised_at", "risk_flag_cleared_at", "risk_flag_cleared_by")


@admin.register(TherapySession)
class TherapySessionAdmin(PatientDataAdmin):
    exclude = ("key_achievements",)  # the game's free text
    list_display = ("session_id", "patient", "started_at", "status", "duration_minutes")
    list_filter = ("status",)
    search_fields = ("session_id", "patient__player_id")
    raw_id_fields = ("patient", "clinic")
    date_hierarchy = "started_at"
    list_select_related = ("patient",)


@admin.register(ProgressMarker)
class ProgressMarkerAdmin(PatientDataAdmin):
    exclude = ("description",)  # the game's free text
    list_display = ("marker_id", "patient", "type", "achieved_at", "therapeutic_value")
    list_filter = ("type",)
    search_fields = ("marker_id", "patient__player_id")
    raw_id_fields = ("patient", "session", "clinic")
    list_select_related = ("patient",)


@admin.register(IngestToken)
class IngestTokenAdmin(AuditedAdmin):
    """Tokens are created with `manage.py create_ingest_token` (which prints the secret once)."""

    list_display = ("name", "clinic", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("clinic",)
    readonly_fields = ("prefix", "created_at", "last_used_at")
    fields = ("clinic", "name", "prefix", "created_at", "last_used_at", "revoked_at")

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ClinicMilestoneRule)
class ClinicMilestoneRuleAdmin(AuditedAdmin):
    """A clinic's own milestone thresholds and titles; a clinic without any uses the defaults."""

    list_display = ("clinic", "family", "threshold", "title")
    list_filter = ("clinic", "family")


@admin.register(Milestone)
class MilestoneAdmin(PatientDataAdmin):
    list_display = ("patient", "title", "achieved_at")
    list_filter = ("family",)
    search_fields = ("patient__player_id",)
    raw_id_fields = ("patient",)
    list_select_related = ("patient",)


@admin.register(Recommendation)
class RecommendationAdmin(PatientDataAdmin):
    list_display = ("patient", "title", "priority", "dismissed", "expires_at", "updated_at")
    list_filter = ("type", "dismissed")
    search_fields = ("patient__player_id",)
    raw_id_fields = ("patient", "dismissed_by")
    list_select_related = ("patient",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(AuditedAdmin):
    """The delivery log of celebration webhooks."""

    list_display = ("created_at", "clinic", "event", "status", "attempts", "last_status_code", "delivered_at")
    list_filter = ("status", "clinic")
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
