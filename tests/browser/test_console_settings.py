"""The console's settings page in headless Chromium (issue 12): a clinic admin changes a milestone
threshold (which the next recompute uses), sees a refused form name its field, sends a test delivery to
a dead URL (failed in the log), rotates the secret (shown once); screenshots at 1440 and 820 px."""

import socket

import pytest

from tests.browser.conftest import log_in, screenshot
from tests.factories import PASSWORD
from tests.test_progress import sessions_on
from tracking import recompute
from tracking.models import Milestone

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = {"desktop": {"width": 1440, "height": 1000}, "tablet": {"width": 820, "height": 1180}}


def dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@pytest.mark.parametrize("size", list(WIDTHS))
def test_settings_page_as_a_clinic_admin(browser, live_server, clinic_admin, patient_a, size):
    sessions_on(patient_a, [2, 1, 0])
    context = browser.new_context(viewport=WIDTHS[size])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        log_in(page, live_server, clinic_admin.username, PASSWORD)
        page.goto(f"{live_server.url}/clinic/settings/")
        assert page.get_by_role("heading", name="Settings of Northside").is_visible()
        screenshot(page, f"console-settings-{size}")

        # A refused value names its field.
        page.get_by_label("Minutes before an unacknowledged urgent alert").fill("241")
        page.get_by_role("button", name="Save escalation").click()
        page.wait_for_selector("#set-escalation-error")
        assert "between 5 and 240" in page.locator("#set-escalation-error").inner_text()
        screenshot(page, f"console-settings-refused-{size}")

        # A milestone threshold changed here is used by the next recompute.
        streak = page.get_by_label("Streak (consecutive active days)")
        streak.fill("3 Three Day Streak\n7 One Week Streak")
        page.get_by_role("button", name="Save milestone rules").click()
        page.wait_for_selector(".message--success")
        recompute.patient_recompute(patient_a.pk)
        assert Milestone.objects.filter(patient=patient_a, title="Three Day Streak").exists()

        page.get_by_label("Shown to the therapists on every alert").fill("Crisis line 0800 123 456")
        page.get_by_role("button", name="Save crisis resources").click()
        page.wait_for_selector(".message--success")
        page.get_by_label("URL", exact=True).fill(dead_url())
        page.get_by_role("button", name="Save URL").click()
        page.wait_for_selector(".message--success")
        page.get_by_role("button", name="Send a test delivery").click()
        page.wait_for_selector('#delivery-log tr[data-status="failed"]')

        page.get_by_role("button", name="Generate a secret").click()
        secret = page.locator("#new-secret-value").inner_text()
        assert len(secret) >= 40
        screenshot(page, f"console-settings-secret-{size}")
        page.goto(f"{live_server.url}/clinic/settings/")
        assert secret not in page.content() and page.locator("#secret-status").inner_text() == "Set"
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
        screenshot(page, f"console-settings-filled-{size}")
        assert not errors
    finally:
        context.close()


def test_crisis_resources_on_the_patient_alerts_card(browser, live_server, clinic, therapist_a, patient_a):
    from django.utils import timezone

    from reports import alerts
    from reports.models import AlertKind, AlertSeverity

    clinic.crisis_resources = "Crisis line: 0800 123 456 (24 h)\nDuty psychiatrist: ext. 12"
    clinic.save()
    alerts.alert_raise(
        patient=patient_a,
        kind=AlertKind.CRISIS_SIGNAL,
        severity=AlertSeverity.URGENT,
        reason="A crisis signal from the game",
        occurred_at=timezone.now(),
        alert_id="c1",
    )
    context = browser.new_context(viewport=WIDTHS["desktop"])
    page = context.new_page()
    try:
        log_in(page, live_server, therapist_a.username, PASSWORD)
        page.goto(f"{live_server.url}/patients/{patient_a.player_id}/")
        card = page.locator("#alerts")
        assert "Crisis line: 0800 123 456" in card.locator(".crisis-resources").inner_text()
        card.screenshot(path=str(screenshot(page, "alerts-card-crisis-resources").with_name("alerts-card-crisis.png")))
        page.goto(f"{live_server.url}/alerts/")
        page.get_by_text("Crisis resources").first.click()
        assert page.locator(".crisis-resources--row").first.is_visible()
        screenshot(page, "alerts-page-crisis-resources")
    finally:
        context.close()
