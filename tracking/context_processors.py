from tracking import access
from tracking.models import Role


def roles(request) -> dict:
    """What the header needs to know about the logged-in user's roles."""
    user = getattr(request, "user", None)
    if user is None:
        return {"is_therapist": False, "is_clinic_admin": False, "is_auditor": False}
    return {
        "is_therapist": access.has_role(user, [Role.THERAPIST]),
        "is_clinic_admin": access.has_role(user, [Role.CLINIC_ADMIN]),
        "is_auditor": access.has_role(user, [Role.AUDITOR]),
    }
