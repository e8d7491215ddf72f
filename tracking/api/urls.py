from django.urls import path

from tracking.api import views

PATIENT = "patients/<str:player_id>/"

urlpatterns = [
    path("ingest", views.IngestView.as_view(), name="api-ingest"),
    path(PATIENT + "progress", views.PatientProgressView.as_view(), name="api-patient-progress"),
    path(PATIENT + "milestones", views.PatientMilestonesView.as_view(), name="api-patient-milestones"),
    path(PATIENT + "insights", views.PatientInsightsView.as_view(), name="api-patient-insights"),
    path(PATIENT + "viz", views.PatientVizView.as_view(), name="api-patient-viz"),
    path(
        PATIENT + "highlights/<int:highlight_id>/celebrated",
        views.HighlightCelebratedView.as_view(),
        name="api-highlight-celebrated",
    ),
]
