"""Permission-matrix entries and audit classification of the console's users URLs (merged into
tests/test_permissions.py and tests/test_audit_recording.py).

route pattern → (method, path, [anonymous, therapist_a, therapist_b, clinic_admin, auditor, foreign_therapist])
"""

CLINIC_ADMINS_ONLY = [302, 403, 403, 200, 403, 403]

MATRIX: dict[str, tuple[str, str, list[int]]] = {
    "clinic/": ("GET", "/clinic/", CLINIC_ADMINS_ONLY),
    "clinic/users/": ("GET", "/clinic/users/", CLINIC_ADMINS_ONLY),
    "clinic/users/<int:user_id>/reset-second-factor": (
        "POST",
        "/clinic/users/999999/reset-second-factor",
        [302, 403, 403, 404, 403, 403],
    ),
}
# route pattern → why it returns no patient data (or which test checks the event it records)
NO_PATIENT_DATA: dict[str, str] = {
    "clinic/": "the console's index",
    "clinic/users/": "the clinic's users: names, roles, last logins",
    "clinic/users/<int:user_id>/reset-second-factor": "a second-factor reset (auth.mfa)",
}
