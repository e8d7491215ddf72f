from django.urls import path

from reports.api import views

urlpatterns = [
    path("patients/<str:player_id>/alerts", views.PatientAlertsView.as_view(), name="api-patient-alerts"),
    path("patients/<str:player_id>/outcomes", views.PatientOutcomesView.as_view(), name="api-patient-outcomes"),
    path("patients/<str:player_id>/fhir", views.PatientFhirView.as_view(), name="api-patient-fhir"),
    path(
        "patients/<str:player_id>/measures-due", views.PatientMeasuresDueView.as_view(), name="api-patient-measures-due"
    ),
    path(
        "patients/<str:player_id>/effectiveness",
        views.PatientEffectivenessView.as_view(),
        name="api-patient-effectiveness",
    ),
]
