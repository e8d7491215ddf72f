from django.urls import path

from tracking.api import views

urlpatterns = [
    path("ingest", views.IngestView.as_view(), name="api-ingest"),
    path("patients/<str:player_id>/alerts", views.PatientAlertsView.as_view(), name="api-patient-alerts"),
]
