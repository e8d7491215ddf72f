"""The clinic admin's console (DESIGN §6): running the clinic without a superuser. Thin views: access,
a selector, a service. Clinic admins see people and identifiers here, never clinical detail."""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, path, reverse
from django.views.decorators.http import require_POST

from tracking import access, accounts, selectors
from tracking.models import Role


def clinic_users(request):
    """The clinic's users: role, last login, whether a second factor is set up, and its reset."""
    access.require_role(request.user, [Role.CLINIC_ADMIN])
    return render(request, "tracking/clinic_users.html", {"members": selectors.clinic_user_rows(request.user)})


@require_POST
def clinic_user_reset_mfa(request, user_id: int):
    """Removes a user's second factor (a lost phone): their sessions end, and they enrol again at their
    next login. Audited (`auth.mfa`, event `reset`) in the clinic's chain."""
    access.require_role(request.user, [Role.CLINIC_ADMIN])
    member = selectors.clinic_member(request.user, user_id)
    if member is None:
        raise Http404
    removed = accounts.reset_second_factor(user=member.user, by=request.user, clinic=member.clinic)
    if removed:
        messages.success(
            request,
            f"The second factor of {member.user.get_username()} was reset; they set up a new one at their next login.",
        )
    else:
        messages.info(request, f"{member.user.get_username()} had no second factor set up.")
    return redirect("clinic-users")


def console_home(request):
    """/clinic/: the console's sections."""
    access.require_role(request.user, [Role.CLINIC_ADMIN])
    sections = {}
    for section, name in (
        ("patients", "clinic-patients"),
        ("retention", "clinic-retention"),
        ("settings", "clinic-settings"),
        ("tokens", "clinic-tokens"),
    ):
        try:
            sections[section] = reverse(name)
        except NoReverseMatch:  # a section not built yet
            continue
    context = {"clinics": access.clinics_with_role(request.user, Role.CLINIC_ADMIN), "console_sections": sections}
    return render(request, "tracking/console_home.html", context)


# Mounted under /clinic/ by tracking.console_urls.
urlpatterns = [
    path("", console_home, name="clinic"),
    path("users/", clinic_users, name="clinic-users"),
    path("users/<int:user_id>/reset-second-factor", clinic_user_reset_mfa, name="clinic-user-reset-mfa"),
]
