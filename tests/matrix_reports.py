"""Permission-matrix entries for the reports app's URLs (merged into tests/test_permissions.py).

route pattern → (method, path, [anonymous, therapist_a, therapist_b, clinic_admin, auditor, foreign_therapist])

Outcome pages and reads are clinical detail: the assigned therapist only (another therapist or another
clinic: 404; clinic admin and auditor: 403). The caseload report is for therapists (each sees their own
caseload); the clinic report, aggregates only, is for clinic admins.
"""

PATIENT_READ = [302, 200, 404, 403, 403, 404]
API_PATIENT_READ = [401, 200, 404, 403, 403, 404]
THERAPISTS_ONLY = [302, 200, 200, 403, 403, 200]
CLINIC_ADMINS_ONLY = [302, 403, 403, 200, 403, 403]

MATRIX: dict[str, tuple[str, str, list[int]]] = {
    "patients/<str:player_id>/outcomes/": ("GET", "/patients/p-a1/outcomes/", PATIENT_READ),
    # Clinical notes: written and read by the patient's therapists only. An empty POST is a 400 (the form
    # names the missing fields); a note that does not exist, 404.
    "patients/<str:player_id>/notes/": ("POST", "/patients/p-a1/notes/", [302, 400, 404, 403, 403, 404]),
    "patients/<str:player_id>/notes/<int:note_id>/": (
        "GET",
        "/patients/p-a1/notes/999999/",
        [302, 404, 404, 403, 403, 404],
    ),
    "patients/<str:player_id>/notes/<int:note_id>/history/": (
        "GET",
        "/patients/p-a1/notes/999999/history/",
        [302, 404, 404, 403, 403, 404],
    ),
    # The patient report and its PDF: clinical detail.
    "patients/<str:player_id>/report/": ("GET", "/patients/p-a1/report/", PATIENT_READ),
    "patients/<str:player_id>/report.pdf": ("GET", "/patients/p-a1/report.pdf", PATIENT_READ),
    "outcomes/": ("GET", "/outcomes/", THERAPISTS_ONLY),
    "outcomes/export.csv": ("GET", "/outcomes/export.csv", THERAPISTS_ONLY),
    "outcomes/print/": ("GET", "/outcomes/print/", THERAPISTS_ONLY),
    "clinic/report/": ("GET", "/clinic/report/", CLINIC_ADMINS_ONLY),
    "clinic/report/export.csv": ("GET", "/clinic/report/export.csv", CLINIC_ADMINS_ONLY),
    "clinic/report/print/": ("GET", "/clinic/report/print/", CLINIC_ADMINS_ONLY),
    "api/v1/patients/<str:player_id>/outcomes": ("GET", "/api/v1/patients/p-a1/outcomes", API_PATIENT_READ),
    "api/v1/patients/<str:player_id>/fhir": ("GET", "/api/v1/patients/p-a1/fhir", API_PATIENT_READ),
    "api/v1/patients/<str:player_id>/measures-due": ("GET", "/api/v1/patients/p-a1/measures-due", API_PATIENT_READ),
    "api/v1/patients/<str:player_id>/effectiveness": (
        "GET",
        "/api/v1/patients/p-a1/effectiveness",
        API_PATIENT_READ,
    ),
}
