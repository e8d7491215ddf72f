"""The console's retention policies and their preview (DESIGN §7)."""

from django.urls import path  # noqa: F401

# Mounted under /clinic/ by tracking.console_urls.
urlpatterns: list = []
