"""The console's retention page in headless Chromium (issue 12): a clinic admin sets a policy, sees the
preview of tonight's run, is refused the audit floor by name, and the page is screenshotted at 1440 and
820 px."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.browser.conftest import log_in, screenshot
from tests.factories import PASSWORD, TherapySessionFactory
from tracking.models import RetentionPolicy, TherapySession

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_clinic_admin_sets_a_policy_and_sees_the_preview(page, live_server, clinic_admin, patient_a):
    now = timezone.now()
    for days in (400, 380, 10):
        TherapySessionFactory(patient=patient_a, started_at=now - timedelta(days=days))
    log_in(page, live_server, clinic_admin.username, PASSWORD)
    page.goto(f"{live_server.url}/clinic/retention/")
    activity = page.locator("#retention-activity")
    activity.get_by_label("Keep for (days)").fill("365")
    activity.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_selector("#retention-activity .retention__preview")
    preview = page.locator("#retention-activity .retention__preview")
    assert preview.get_attribute("data-preview") == "2" and "would remove" in preview.inner_text()
    assert RetentionPolicy.objects.get(clinic=patient_a.clinic, category="activity").days == 365
    assert TherapySession.objects.count() == 3  # a preview removes nothing

    audit = page.locator("#retention-audit")
    audit.get_by_label("Keep for (days)").fill("365")
    audit.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_selector("#days-audit-error")
    assert "at least 2192 days (6 years)" in page.locator("#days-audit-error").inner_text()
    for width, height in ((1440, 1000), (820, 1180)):
        page.set_viewport_size({"width": width, "height": height})
        screenshot(page, f"console-retention-{width}")
