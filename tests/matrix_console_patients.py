"""Permission-matrix entries and audit classification of the console's patients URLs (merged into
tests/test_permissions.py and tests/test_audit_recording.py).

route pattern → (method, path, [anonymous, therapist_a, therapist_b, clinic_admin, auditor, foreign_therapist])
"""

CLINIC_ADMINS_ONLY = [302, 403, 403, 200, 403, 403]
# A patient record id that is none of the clinic's: 404 for its admin, 403 for every other role.
NO_SUCH_PATIENT = [302, 403, 403, 404, 403, 403]

MATRIX: dict[str, tuple[str, str, list[int]]] = {
    "clinic/patients/": ("GET", "/clinic/patients/", CLINIC_ADMINS_ONLY),
    "clinic/patients/search": ("POST", "/clinic/patients/search", [302, 403, 403, 302, 403, 403]),
    "clinic/patients/<int:patient_id>/": ("GET", "/clinic/patients/999999/", NO_SUCH_PATIENT),
    "clinic/patients/<int:patient_id>/assign": ("POST", "/clinic/patients/999999/assign", NO_SUCH_PATIENT),
    "clinic/patients/<int:patient_id>/unassign": ("POST", "/clinic/patients/999999/unassign", NO_SUCH_PATIENT),
    "clinic/patients/<int:patient_id>/reassign": ("POST", "/clinic/patients/999999/reassign", NO_SUCH_PATIENT),
}
# route pattern → why it returns no patient data (or which test checks the event it records)
WRITE = "a write (assignment.change), tested in tests/test_console_patients.py"
NO_PATIENT_DATA: dict[str, str] = {
    "clinic/patients/": "caseload.read naming the listed patients, tested in tests/test_console_patients.py",
    "clinic/patients/search": "keeps a search term in the session",
    "clinic/patients/<int:patient_id>/": (
        "patient.read of the patient (identifiers only), and config.change on a save, tested in "
        "tests/test_console_patients.py"
    ),
    "clinic/patients/<int:patient_id>/assign": WRITE,
    "clinic/patients/<int:patient_id>/unassign": WRITE,
    "clinic/patients/<int:patient_id>/reassign": WRITE,
}
