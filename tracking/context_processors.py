from tracking import access
from tracking.models import Role


def roles(request) -> dict:
    """What the header needs to know about the logged-in user's roles."""
    user = getattr(request, "user", None)
    return {"is_therapist": access.has_role(user, [Role.THERAPIST]) if user else False}
