"""Reads for pages and the API. Every list costs a fixed number of queries, whatever its length."""

from django.db.models import Count, Max, Q, QuerySet

from tracking.access import caseload_for_user, clinics_with_role
from tracking.models import Patient, Role


def caseload_rows(user) -> QuerySet[Patient]:
    """The therapist's patients with what the caseload shows, in one query."""
    return (
        caseload_for_user(user)
        .select_related("clinic")
        .annotate(
            last_session_at=Max("sessions__started_at"),
            open_alerts=Count("alerts", filter=Q(alerts__acknowledged_at__isnull=True), distinct=True),
        )
        .order_by("player_id")
    )


def clinic_patient_rows(user) -> QuerySet[Patient]:
    """For clinic admins: identifiers and assignment only, no clinical detail."""
    return (
        Patient.objects.filter(clinic__in=clinics_with_role(user, Role.CLINIC_ADMIN))
        .select_related("clinic")
        .prefetch_related("assignments__therapist")
        .order_by("clinic__name", "player_id")
    )
