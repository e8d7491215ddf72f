from django.urls import path

from reports import views

app_name = "reports"

urlpatterns = [
    path("patients/<str:player_id>/outcomes/", views.patient_outcomes, name="patient-outcomes"),
    path("patients/<str:player_id>/notes/", views.note_add, name="note-add"),
    path("patients/<str:player_id>/notes/<int:note_id>/", views.note_edit, name="note-edit"),
    path("patients/<str:player_id>/notes/<int:note_id>/history/", views.note_history, name="note-history"),
    path("patients/<str:player_id>/report/", views.patient_report_page, name="patient-report"),
    path("patients/<str:player_id>/report.pdf", views.patient_report_pdf, name="patient-report-pdf"),
    path("outcomes/", views.caseload_outcomes, name="caseload-outcomes"),
    path("outcomes/export.csv", views.caseload_outcomes_export, name="caseload-outcomes-export"),
    path("outcomes/print/", views.caseload_outcomes_print, name="caseload-outcomes-print"),
    path("clinic/report/", views.clinic_report, name="clinic-report"),
    path("clinic/report/export.csv", views.clinic_report_export, name="clinic-report-export"),
    path("clinic/report/print/", views.clinic_report_print, name="clinic-report-print"),
]
