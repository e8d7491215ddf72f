"""Permission-matrix entries and audit classification of the console's users URLs (merged into
tests/test_permissions.py and tests/test_audit_recording.py).

route pattern → (method, path, [anonymous, therapist_a, therapist_b, clinic_admin, auditor, foreign_therapist])
"""

CLINIC_ADMINS_ONLY = [302, 403, 403, 200, 403, 403]
# A POST of an unknown (or another clinic's) user or token: 404 for the admin, before anything is read.
ADMIN_404 = [302, 403, 403, 404, 403, 403]

MATRIX: dict[str, tuple[str, str, list[int]]] = {
    "clinic/": ("GET", "/clinic/", CLINIC_ADMINS_ONLY),
    "clinic/users/": ("GET", "/clinic/users/", CLINIC_ADMINS_ONLY),
    # An empty form: 400 naming the fields, nobody invited.
    "clinic/users/invite": ("POST", "/clinic/users/invite", [302, 403, 403, 400, 403, 403]),
    "clinic/users/<int:user_id>/role": ("POST", "/clinic/users/999999/role", ADMIN_404),
    "clinic/users/<int:user_id>/resend-invitation": ("POST", "/clinic/users/999999/resend-invitation", ADMIN_404),
    "clinic/users/<int:user_id>/deactivate": ("POST", "/clinic/users/999999/deactivate", ADMIN_404),
    "clinic/users/<int:user_id>/reactivate": ("POST", "/clinic/users/999999/reactivate", ADMIN_404),
    "clinic/users/<int:user_id>/reset-second-factor": (
        "POST",
        "/clinic/users/999999/reset-second-factor",
        ADMIN_404,
    ),
    "clinic/tokens/": ("GET", "/clinic/tokens/", CLINIC_ADMINS_ONLY),
    "clinic/tokens/<int:token_id>/revoke": ("POST", "/clinic/tokens/999999/revoke", ADMIN_404),
}
# route pattern → why it returns no patient data (or which test checks the event it records)
NO_PATIENT_DATA: dict[str, str] = {
    "clinic/": "the console's index",
    "clinic/users/": "the clinic's users: names, roles, last logins",
    "clinic/users/invite": "an invitation (user.change, tests/test_console_users.py)",
    "clinic/users/<int:user_id>/role": "a role change (user.change, tests/test_console_users.py)",
    "clinic/users/<int:user_id>/resend-invitation": "a new invitation link (user.change, tests/test_console_users.py)",
    "clinic/users/<int:user_id>/deactivate": "a deactivation (user.change, tests/test_console_users.py)",
    "clinic/users/<int:user_id>/reactivate": "a reactivation (user.change, tests/test_console_users.py)",
    "clinic/users/<int:user_id>/reset-second-factor": "a second-factor reset (auth.mfa)",
    "clinic/tokens/": "the clinic's ingest tokens; creating one is token.change (tests/test_console_users.py)",
    "clinic/tokens/<int:token_id>/revoke": "a token revoked (token.change, tests/test_console_users.py)",
}
