"""The console's patients: search, assignment, display names and time zones (DESIGN §6)."""

from django.urls import path  # noqa: F401

# Mounted under /clinic/ by tracking.console_urls.
urlpatterns: list = []
