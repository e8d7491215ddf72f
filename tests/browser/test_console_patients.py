"""The console's patients section in headless Chromium (issue 12, "Done when"), as a clinic admin: find a
patient by a posted search, filter those with no therapist, assign a therapist (who then sees the patient
on their caseload), unassign (after which the patient is a 404 for them), set a display name and a time
zone, and a refused form that names its field. Screenshots at 1440 and 820 px."""

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from tests.browser.conftest import log_in, screenshot
from tests.conftest import _member, logged_in
from tests.factories import PASSWORD, PatientFactory, TherapySessionFactory
from tracking.models import CareAssignment, Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = {"desktop": {"width": 1440, "height": 1000}, "tablet": {"width": 820, "height": 1180}}


@pytest.fixture
def clinic_patients(clinic, patients_a, patient_b):
    for n, patient in enumerate([*patients_a, patient_b]):
        TherapySessionFactory(patient=patient, started_at=timezone.now() - timedelta(days=40 - 3 * n))
    for n in range(4):
        PatientFactory(clinic=clinic, player_id=f"p-new{n + 1}")
    _member(clinic, Role.THERAPIST, "therapist.c")
    patients_a[1].display_name = "Robin"
    patients_a[1].save()
    return patients_a


def test_clinic_admin_manages_patients_assignment(
    page, live_server, clinic_admin, therapist_a, therapist_b, clinic_patients, foreign_patient
):
    log_in(page, live_server, clinic_admin.username, PASSWORD)
    page.goto(f"{live_server.url}/clinic/patients/")
    rows = lambda: page.locator("#console-patients tbody tr").evaluate_all(  # noqa: E731
        "rows => rows.map(r => r.dataset.playerId)"
    )
    assert sorted(rows()) == ["p-a1", "p-a2", "p-a3", "p-b1", "p-new1", "p-new2", "p-new3", "p-new4"]
    for name, viewport in WIDTHS.items():
        page.set_viewport_size(viewport)
        screenshot(page, f"console-patients-{name}")

    # The no-therapist filter.
    page.get_by_role("button", name="No therapist").click()
    assert sorted(rows()) == ["p-new1", "p-new2", "p-new3", "p-new4"]
    page.get_by_role("button", name="✓ No therapist").click()

    # A search is posted: the id never reaches the address bar.
    page.get_by_label("Player id").fill("p-new2")
    page.get_by_role("button", name="Search", exact=True).click()
    assert rows() == ["p-new2"]
    assert urlsplit(page.url).query == ""
    page.get_by_role("link", name="p-new2").click()
    assert "p-new2" not in page.url

    # Assign therapist B: the patient appears on their caseload.
    page.get_by_label("Therapist", exact=True).select_option(label="therapist.b")
    page.get_by_role("button", name="Assign", exact=True).click()
    assert "Assigned p-new2 to therapist.b." in page.locator(".messages").inner_text()
    assert 'data-player-id="p-new2"' in logged_in(therapist_b).get("/").content.decode()

    # A second therapist, then the details.
    page.get_by_label("Therapist", exact=True).select_option(label="therapist.a")
    page.get_by_role("button", name="Assign", exact=True).click()
    page.get_by_label("Display name", exact=True).fill("Sam")
    page.get_by_label("Time zone", exact=True).select_option("America/New_York")
    page.get_by_role("button", name="Save", exact=True).click()
    assert "Saved the display name and time zone of p-new2." in page.locator(".messages").inner_text()
    for name, viewport in WIDTHS.items():
        page.set_viewport_size(viewport)
        screenshot(page, f"console-patient-{name}")

    # A refused form names its field.
    page.evaluate("document.getElementById('patient-display-name').removeAttribute('maxlength')")
    page.get_by_label("Display name", exact=True).fill("x" * 101)
    page.get_by_role("button", name="Save", exact=True).click()
    assert "At most 100 characters" in page.locator("#patient-display-name-error").inner_text()
    page.set_viewport_size(WIDTHS["desktop"])
    screenshot(page, "console-patient-error-desktop")

    # Unassign therapist B: the patient is a 404 for them.
    page.goto(page.url)
    page.get_by_role("button", name="Unassign therapist.b").click()
    assert "p-new2 is no longer assigned to therapist.b." in page.locator(".messages").inner_text()
    assert logged_in(therapist_b).get("/patients/p-new2/").status_code == 404
    assert logged_in(therapist_a).get("/patients/p-new2/").status_code == 200
    assert list(
        CareAssignment.objects.filter(patient__player_id="p-new2").values_list("therapist__username", flat=True)
    ) == ["therapist.a"]
    # The refused form answered 400, which Chromium logs; nothing else went wrong.
    assert [e for e in page.console_errors if "status of 400" not in e] == []
