"""The console's settings: milestone rules, alert escalation, crisis resources, the measurement interval
and the webhook (DESIGN §6)."""

from django.urls import path  # noqa: F401

# Mounted under /clinic/ by tracking.console_urls.
urlpatterns: list = []
