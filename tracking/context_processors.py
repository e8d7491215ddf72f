from django.conf import settings

from tracking import access, accounts
from tracking.models import Role

NO_ROLES = {"is_therapist": False, "is_clinic_admin": False, "is_auditor": False, "second_step_pending": False}


def roles(request) -> dict:
    """What the header needs to know about the logged-in user: their roles, and whether the login still
    owes its second step (then the header offers nothing but logging out)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return NO_ROLES
    verified = getattr(user, "is_verified", lambda: False)()
    session = getattr(request, "session", {})
    if not verified and (session.get(accounts.SESSION_NEEDS_CODE_KEY) or settings.REQUIRE_MFA):
        return {**NO_ROLES, "second_step_pending": True}
    return {
        "is_therapist": access.has_role(user, [Role.THERAPIST]),
        "is_clinic_admin": access.has_role(user, [Role.CLINIC_ADMIN]),
        "is_auditor": access.has_role(user, [Role.AUDITOR]),
        "second_step_pending": False,
    }
