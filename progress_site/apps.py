from django.contrib.admin.apps import AdminConfig


class OperatorAdminConfig(AdminConfig):
    """Django admin with the superuser-only site of progress_site.admin."""

    default_site = "progress_site.admin.OperatorAdminSite"
