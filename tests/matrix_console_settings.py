"""Permission-matrix entries and audit classification of the console's settings URLs (merged into
tests/test_permissions.py and tests/test_audit_recording.py).

route pattern → (method, path, [anonymous, therapist_a, therapist_b, clinic_admin, auditor, foreign_therapist])
"""

MATRIX: dict[str, tuple[str, str, list[int]]] = {}
# route pattern → why it returns no patient data (or which test checks the event it records)
NO_PATIENT_DATA: dict[str, str] = {}
