from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from reports import views as report_views
from tracking import account_views, auditor_views, console_views, metrics_views, views

urlpatterns = [
    path("", views.home, name="caseload"),
    path("caseload/search", views.caseload_search, name="caseload-search"),
    path("patients/<str:player_id>/", views.patient_detail, name="patient"),
    path(
        "patients/<str:player_id>/alerts/<int:alert_id>/acknowledge",
        report_views.alert_acknowledge,
        name="alert-acknowledge",
    ),
    path("patients/<str:player_id>/alerts/acknowledge", report_views.alerts_acknowledge, name="alerts-acknowledge"),
    path("patients/<str:player_id>/risk-flag/clear", report_views.risk_flag_clear, name="risk-flag-clear"),
    path("patients/<str:player_id>/live", views.patient_live, name="patient-live"),
    path("patients/<str:player_id>/live.json", views.patient_live_data, name="patient-live-data"),
    path("live/events", views.live_events, name="live-events"),
    path("live/inbox.json", views.live_inbox, name="live-inbox"),
    path("alerts/", report_views.alerts_list, name="alerts"),
    path("clinic/", include("tracking.console_urls")),
    path("break-glass/", auditor_views.break_glass, name="break-glass"),
    path("audit/", auditor_views.audit_log, name="audit"),
    path("audit/export.csv", auditor_views.audit_export, name="audit-export"),
    path("audit/patient-filter", auditor_views.audit_patient_filter, name="audit-patient-filter"),
    path("audit/verify", auditor_views.audit_verify, name="audit-verify"),
    path("audit/reviews/<int:event_id>", auditor_views.audit_review, name="audit-review"),
    path(
        "patients/<str:player_id>/recommendations/<int:recommendation_id>/dismiss",
        views.recommendation_dismiss,
        name="recommendation-dismiss",
    ),
    path(
        "patients/<str:player_id>/recommendations/<int:recommendation_id>/restore",
        views.recommendation_restore,
        name="recommendation-restore",
    ),
    path("login/", account_views.LoginView.as_view(), name="login"),
    path("login/code/", account_views.second_factor, name="mfa-verify"),
    path("welcome/<uidb64>/<token>/", console_views.welcome, name="welcome"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/", account_views.security, name="account-security"),
    path("account/second-factor/", account_views.enrol, name="mfa-enrol"),
    path("account/backup-codes/", account_views.backup_codes_new, name="backup-codes-new"),
    path("account/password/", account_views.PasswordChangeView.as_view(), name="password-change"),
    path("admin/login/", account_views.admin_login),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_views.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("tracking.api.urls")),
    path("api/v1/", include("reports.api.urls")),
    path("", include("reports.urls")),
    path("api/schema/", login_not_required(SpectacularAPIView.as_view()), name="api-schema"),
]

handler404 = "tracking.views.not_found"
handler403 = "tracking.views.permission_denied"
handler500 = "tracking.views.server_error"
