from django.urls import path

from reports import views

app_name = "reports"

urlpatterns = [
    path("patients/<str:player_id>/outcomes/", views.patient_outcomes, name="patient-outcomes"),
    path("outcomes/", views.caseload_outcomes, name="caseload-outcomes"),
    path("outcomes/export.csv", views.caseload_outcomes_export, name="caseload-outcomes-export"),
    path("outcomes/print/", views.caseload_outcomes_print, name="caseload-outcomes-print"),
    path("clinic/report/", views.clinic_report, name="clinic-report"),
    path("clinic/report/export.csv", views.clinic_report_export, name="clinic-report-export"),
    path("clinic/report/print/", views.clinic_report_print, name="clinic-report-print"),
]
