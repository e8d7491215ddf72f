"""Permission-matrix entries and audit classification of the console's retention URLs (merged into
tests/test_permissions.py and tests/test_audit_recording.py).

route pattern → (method, path, [anonymous, therapist_a, therapist_b, clinic_admin, auditor, foreign_therapist])
"""

CLINIC_ADMINS_ONLY = [302, 403, 403, 200, 403, 403]

MATRIX: dict[str, tuple[str, str, list[int]]] = {
    "clinic/retention/": ("GET", "/clinic/retention/", CLINIC_ADMINS_ONLY),
    "clinic/retention/<slug:slug>/": ("GET", "/clinic/retention/northside/", CLINIC_ADMINS_ONLY),
    # An empty form: refused (400) with the error next to the field.
    "clinic/retention/<slug:slug>/<str:category>": (
        "POST",
        "/clinic/retention/northside/activity",
        [302, 403, 403, 400, 403, 403],
    ),
}
# route pattern → why it returns no patient data (or which test checks the event it records)
NO_PATIENT_DATA: dict[str, str] = {
    "clinic/retention/": "the clinic's retention policies and counts of what tonight's run would remove",
    "clinic/retention/<slug:slug>/": "the same page for one of the admin's clinics",
    "clinic/retention/<slug:slug>/<str:category>": "a policy change (config.change, tests/test_retention.py)",
}
