"""Reads for outcomes and alerts."""

from django.db.models import QuerySet

from reports.models import Alert
from tracking.models import Patient


def alerts_for_patient(patient: Patient) -> QuerySet[Alert]:
    return Alert.objects.filter(patient=patient).order_by("-occurred_at", "-pk")
