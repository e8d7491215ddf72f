"""/clinic/: the clinic admin's console (DESIGN §6). Each section's module lists its own URLs."""

from tracking import console_patients, console_retention, console_settings, console_views

urlpatterns = [
    *console_views.urlpatterns,
    *console_patients.urlpatterns,
    *console_retention.urlpatterns,
    *console_settings.urlpatterns,
]
