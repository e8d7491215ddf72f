"""URL × persona permission matrix (DESIGN §7). A URL that is not in the matrix fails the test."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from tests.matrix_console import MATRIX as CONSOLE_MATRIX
from tests.matrix_reports import MATRIX as REPORTS_MATRIX

# Expected status per persona. The patient in a path is therapist A's patient "p-a1"; {foreign} is a
# patient of another clinic. 302 = sent to the login page.
PERSONAS = ["anonymous", "therapist_a", "therapist_b", "clinic_admin", "auditor", "foreign_therapist"]
PATIENT_READ = [401, 200, 404, 403, 403, 404]  # an API read of therapist A's patient
PATIENT_PAGE = [302, 200, 404, 403, 403, 404]  # a page of therapist A's patient
THERAPISTS_ONLY = [302, 200, 200, 403, 403, 200]
AUDITORS_ONLY = [302, 403, 403, 403, 200, 403]
MATRIX = {
    "": ("GET", "/", [302, 200, 200, 200, 302, 200]),  # an auditor's home is /audit/
    "caseload/search": ("POST", "/caseload/search", [302, 302, 302, 403, 403, 302]),
    "patients/<str:player_id>/": ("GET", "/patients/p-a1/", PATIENT_PAGE),
    "patients/<str:player_id>/live": ("GET", "/patients/p-a1/live", PATIENT_PAGE),
    "patients/<str:player_id>/live.json": ("GET", "/patients/p-a1/live.json", PATIENT_PAGE),
    "patients/<str:player_id>/recommendations/<int:recommendation_id>/dismiss": (
        "POST",
        "/patients/p-a1/recommendations/999999/dismiss",
        [302, 404, 404, 403, 403, 404],
    ),
    "patients/<str:player_id>/alerts/<int:alert_id>/acknowledge": (
        "POST",
        "/patients/p-a1/alerts/999999/acknowledge",
        [302, 404, 404, 403, 403, 404],
    ),
    "patients/<str:player_id>/alerts/acknowledge": (
        "POST",
        "/patients/p-a1/alerts/acknowledge",
        [302, 302, 404, 403, 403, 404],
    ),
    "patients/<str:player_id>/recommendations/<int:recommendation_id>/restore": (
        "POST",
        "/patients/p-a1/recommendations/999999/restore",
        [302, 404, 404, 403, 403, 404],
    ),
    "alerts/": ("GET", "/alerts/", THERAPISTS_ONLY),
    "patients/<str:player_id>/risk-flag/clear": (
        "POST",
        "/patients/p-a1/risk-flag/clear",
        [302, 302, 404, 403, 403, 404],
    ),
    "live/events": ("GET", "/live/events", THERAPISTS_ONLY),
    "break-glass/": ("GET", "/break-glass/", THERAPISTS_ONLY),
    "audit/": ("GET", "/audit/", AUDITORS_ONLY),
    "audit/export.csv": ("GET", "/audit/export.csv", AUDITORS_ONLY),
    "audit/patient-filter": ("POST", "/audit/patient-filter", [302, 403, 403, 403, 302, 403]),
    "audit/verify": ("POST", "/audit/verify", [302, 403, 403, 403, 302, 403]),
    "audit/reviews/<int:event_id>": ("POST", "/audit/reviews/999999", [302, 403, 403, 403, 404, 403]),
    "live/inbox.json": ("GET", "/live/inbox.json", THERAPISTS_ONLY),
    "login/": ("GET", "/login/", [200, 302, 302, 302, 302, 302]),
    "login/code/": ("GET", "/login/code/", [302, 302, 302, 302, 302, 302]),  # no code owed: on to the page
    "welcome/<uidb64>/<token>/": ("GET", "/welcome/MQ/bad-token/", [410, 410, 410, 410, 410, 410]),  # a bad link
    "account/": ("GET", "/account/", [302, 200, 200, 200, 200, 200]),
    "account/second-factor/": ("GET", "/account/second-factor/", [302, 200, 200, 200, 200, 200]),
    "account/backup-codes/": ("POST", "/account/backup-codes/", [302, 302, 302, 302, 302, 302]),  # to enrolment
    "account/password/": ("GET", "/account/password/", [302, 200, 200, 200, 200, 200]),
    "admin/login/": ("GET", "/admin/login/", [302, 403, 403, 403, 403, 403]),
    "logout/": ("POST", "/logout/", [302, 302, 302, 302, 302, 302]),
    "admin/": ("GET", "/admin/", [302, 302, 302, 302, 302, 302]),
    "healthz": ("GET", "/healthz", [200, 200, 200, 200, 200, 200]),
    "readyz": ("GET", "/readyz", [200, 200, 200, 200, 200, 200]),
    # Prometheus's scrape: only with METRICS_TOKEN's bearer header (tests/test_metrics.py), a 404 for anyone else.
    "metrics": ("GET", "/metrics", [404, 404, 404, 404, 404, 404]),
    "api/v1/ingest": ("POST", "/api/v1/ingest", [401, 403, 403, 403, 403, 403]),
    "api/v1/patients/<str:player_id>/alerts": ("GET", "/api/v1/patients/p-a1/alerts", PATIENT_READ),
    "api/v1/patients/<str:player_id>/progress": ("GET", "/api/v1/patients/p-a1/progress", PATIENT_READ),
    "api/v1/patients/<str:player_id>/milestones": ("GET", "/api/v1/patients/p-a1/milestones", PATIENT_READ),
    "api/v1/patients/<str:player_id>/insights": ("GET", "/api/v1/patients/p-a1/insights", PATIENT_READ),
    "api/v1/patients/<str:player_id>/viz": ("GET", "/api/v1/patients/p-a1/viz?days=30", PATIENT_READ),
    "api/v1/patients/<str:player_id>/highlights/<int:highlight_id>/celebrated": (
        "POST",
        "/api/v1/patients/p-a1/highlights/999999/celebrated",
        [401, 404, 404, 403, 403, 404],
    ),
    "api/schema/": ("GET", "/api/schema/", [200, 200, 200, 200, 200, 200]),
    **REPORTS_MATRIX,
    **CONSOLE_MATRIX,
}


def all_routes(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            if route == "admin/":  # Django's admin: staff only, checked as one entry
                yield route
                continue
            yield from all_routes(entry, route)
        elif isinstance(entry, URLPattern):
            yield route


def test_every_url_is_in_the_matrix():
    assert set(all_routes()) == set(MATRIX)


CASES = [
    (route, persona, expected[i]) for route, (_, _, expected) in MATRIX.items() for i, persona in enumerate(PERSONAS)
]


@pytest.mark.parametrize("route, persona, expected", CASES, ids=[f"{r or 'home'}-{p}" for r, p, _ in CASES])
def test_permission_matrix(personas, route, persona, expected):
    method, path, _ = MATRIX[route]
    client = personas[persona]
    response = client.post(path, content_type="application/json", data="{}") if method == "POST" else client.get(path)
    assert response.status_code == expected


def test_therapist_cannot_see_other_therapists_patient(personas, patient_b):
    assert personas["therapist_a"].get(f"/api/v1/patients/{patient_b.player_id}/alerts").status_code == 404


def test_foreign_patient_is_404_not_403_so_existence_is_not_revealed(personas, foreign_patient):
    response = personas["therapist_a"].get(f"/api/v1/patients/{foreign_patient.player_id}/alerts")
    missing = personas["therapist_a"].get("/api/v1/patients/does-not-exist/alerts")
    assert response.status_code == missing.status_code == 404
    assert response.json() == missing.json()


def test_caseload_lists_exactly_the_therapists_patients(personas, patients_a, patient_b, foreign_patient):
    html = personas["therapist_a"].get("/").content.decode()
    for patient in patients_a:
        assert f'data-player-id="{patient.player_id}"' in html
    assert patient_b.player_id not in html and foreign_patient.player_id not in html


def test_unknown_urls_answer_json_under_api_and_a_page_elsewhere(personas):
    client = personas["therapist_a"]
    api = client.get("/api/v1/patients/p-a1/highlights/not-a-number/celebrated")
    assert api.status_code == 404 and api.json() == {"detail": "Not found."}
    page = client.get("/no-such-page/")
    assert page.status_code == 404 and "Back to the dashboard" in page.content.decode()
    denied = personas["auditor"].get("/patients/p-a1/")
    assert denied.status_code == 403 and "Not allowed" in denied.content.decode()
