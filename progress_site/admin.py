"""Django admin as the operators' tool (DESIGN §7): superusers only. Clinic admins run their clinic from
the console (/clinic/); nobody else reaches admin."""

from django.contrib import admin


class OperatorAdminSite(admin.AdminSite):
    site_header = "Progress Dashboard · operators"
    site_title = "Progress Dashboard operators"
    index_title = "Operations"

    def has_permission(self, request) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)
