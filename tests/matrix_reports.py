"""Permission-matrix entries for the reports app's URLs (merged into tests/test_permissions.py).

route pattern → (method, path, [anonymous, therapist_a, therapist_b, clinic_admin, auditor, foreign_therapist])
"""

MATRIX: dict[str, tuple[str, str, list[int]]] = {}
