"""Permission-matrix entries and audit classification of the console's settings URLs (merged into
tests/test_permissions.py and tests/test_audit_recording.py).

route pattern → (method, path, [anonymous, therapist_a, therapist_b, clinic_admin, auditor, foreign_therapist])
"""

CLINIC_ADMINS_ONLY = [302, 403, 403, 200, 403, 403]

MATRIX: dict[str, tuple[str, str, list[int]]] = {
    "clinic/settings/": ("GET", "/clinic/settings/", CLINIC_ADMINS_ONLY),
    "clinic/settings/<slug:slug>/": ("GET", "/clinic/settings/northside/", CLINIC_ADMINS_ONLY),
    # An empty form: refused (400) with the error next to the field.
    "clinic/settings/<slug:slug>/<str:form>": (
        "POST",
        "/clinic/settings/northside/escalation",
        [302, 403, 403, 400, 403, 403],
    ),
}
# route pattern → why it returns no patient data (or which test checks the event it records)
NO_PATIENT_DATA: dict[str, str] = {
    "clinic/settings/": "the clinic's settings: milestone rules, escalation, crisis text, interval, webhook",
    "clinic/settings/<slug:slug>/": "the same page for one of the admin's clinics",
    "clinic/settings/<slug:slug>/<str:form>": "a settings change (config.change, tests/test_console_settings.py)",
}
