"""The second factor in a real browser: enrolment by reading the secret off the page, then a login with
a code generated from that secret, as an authenticator app would."""

import base64

import pytest
from django_otp.oath import totp

from tests.browser.conftest import log_in, screenshot
from tests.factories import PASSWORD
from tracking.models import AuditEvent, AuthenticatorDevice

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def app_code(secret: str, seconds_ahead: int = 0) -> str:
    """What an authenticator app shows for this setup key (RFC 6238, SHA-1, 6 digits, 30 s)."""
    key = base64.b32decode(secret.replace(" ", "") + "=" * (-len(secret.replace(" ", "")) % 8))
    return f"{totp(key, step=30, t0=-seconds_ahead, digits=6):06d}"


def test_enrol_an_authenticator_then_log_in_with_its_code(page, live_server, settings, therapist_a, patient_a):
    settings.REQUIRE_MFA = True
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.wait_for_url("**/account/second-factor/")
    assert page.locator(".enrol__qr svg").count() == 1  # drawn by the server, no image service
    assert page.locator("nav.site-nav").count() == 0  # nothing else to reach yet
    screenshot(page, "mfa-enrol")

    secret = page.locator("#totp-secret").inner_text()
    page.get_by_label("6-digit code from the app").fill(app_code(secret))
    page.get_by_role("button", name="Turn on the second factor").click()
    page.wait_for_selector("#backup-codes")
    assert page.locator("#backup-codes li").count() == 10
    screenshot(page, "mfa-backup-codes")
    page.get_by_role("link", name="I have saved them, continue").click()
    page.wait_for_selector("#caseload")
    assert AuthenticatorDevice.objects.get(user=therapist_a).confirmed

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login/")
    page.goto(f"{live_server.url}/patients/{patient_a.player_id}/")
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.wait_for_url("**/login/code/")
    screenshot(page, "mfa-code")
    # The enrolment used the current step's code; the app's next one is within django-otp's tolerance.
    page.get_by_label("Authentication code").fill(app_code(secret, 30))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"**/patients/{patient_a.player_id}/")
    assert page.locator("h1").count() == 1
    screenshot(page, "mfa-logged-in")
    assert page.console_errors == []
    outcomes = list(
        AuditEvent.objects.filter(action="auth.mfa").order_by("seq").values_list("detail__event", "outcome")
    )
    assert outcomes == [("enrolled", "ok"), ("verified", "ok")]
