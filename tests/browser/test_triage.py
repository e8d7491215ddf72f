"""Alert triage in headless Chromium: the most severe alert first in the inbox, a new alert on an open
patient page without a reload, and the pages at desktop and tablet width."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.browser.conftest import log_in, screenshot
from tests.factories import PASSWORD, OutcomeResponseFactory, TherapySessionFactory
from tests.test_ingest_concurrency import post_over_http
from tracking import history, recompute
from tracking.models import CareAssignment, Patient

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = {"desktop": {"width": 1440, "height": 1000}, "tablet": {"width": 820, "height": 1180}}


def signal(player_id: str, alert_id: str, level: str, minutes_ago: int = 0) -> dict:
    return {
        "alert_id": alert_id,
        "player_id": player_id,
        "level": level,
        "reason": f"In-game signal {alert_id}",
        "occurred_at": (timezone.now() - timedelta(minutes=minutes_ago)).isoformat(),
    }


@pytest.fixture
def caseload(clinic, therapist_a, patient_a):
    """Six more patients of therapist A with a little history each."""
    patients = [patient_a]
    for n in range(2, 8):
        patient = Patient.objects.create(clinic=clinic, player_id=f"p-a{n}")
        CareAssignment.objects.create(patient=patient, therapist=therapist_a)
        patients.append(patient)
    today = history.local_today(patient_a.tz_name)
    for i, patient in enumerate(patients):
        for d in range(i % 4, 12, 2):
            start = history.local_midnight(today - timedelta(days=d), patient.tz_name) + timedelta(hours=9)
            TherapySessionFactory(patient=patient, started_at=start, duration_minutes=15 + i)
        for days_ago, total in ((40, 14 + i % 3), (10, 9 + i % 5)):
            OutcomeResponseFactory(
                patient=patient, total=total, administered_at=timezone.now() - timedelta(days=days_ago)
            )
    recompute.patients_recompute([p.pk for p in patients])
    return patients


def inbox_items(page) -> list[str]:
    return page.locator("#inbox-list li").all_inner_texts()


def test_an_urgent_alert_heads_the_inbox_before_six_older_moderate_ones(
    page, live_server, therapist_a, caseload, token
):
    moderate = [signal(p.player_id, f"m{n}", "moderate", minutes_ago=60 - n) for n, p in enumerate(caseload[1:])]
    assert post_over_http(live_server.url, token, {"alerts": moderate})[0] == 201
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.wait_for_selector("#inbox-count:has-text('6')")

    assert post_over_http(live_server.url, token, {"alerts": [signal("p-a1", "u1", "urgent")]})[0] == 201
    page.wait_for_selector("#inbox-count:has-text('7')", timeout=3000)
    page.locator(".inbox__button").click()
    items = inbox_items(page)
    assert items[0] == "URGENT · p-a1 · Crisis signal from the game"
    assert all(item.startswith("MODERATE") for item in items[1:])
    # The oldest moderate alert comes first among the moderate ones.
    assert items[1].startswith("MODERATE · p-a2")
    assert page.locator("#inbox-counts").inner_text().split() == ["1", "urgent", "0", "high", "6", "moderate"]
    assert page.locator("#inbox").get_attribute("data-severity") == "urgent"
    screenshot(page, "inbox-urgent-first")

    page.keyboard.press("Escape")
    assert page.locator("#inbox-panel").is_hidden()
    assert page.console_errors == []


def test_an_urgent_alert_posted_while_the_patient_page_is_open_shows_within_2_seconds(
    page, live_server, therapist_a, caseload, token
):
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.goto(f"{live_server.url}/patients/p-a1/")
    page.wait_for_selector("#live-status:has-text('Live updates on')")
    assert page.locator("#alerts").count() == 0 and page.locator(".risk-banner").count() == 0

    assert post_over_http(live_server.url, token, {"alerts": [signal("p-a1", "u9", "urgent")]})[0] == 201
    page.wait_for_selector("#alerts .alert-item--urgent:has-text('In-game signal u9')", timeout=2000)
    page.wait_for_selector(".risk-banner:has-text('Risk flag raised')", timeout=2000)
    # The recommendations follow: reviewing the alert comes first.
    page.wait_for_selector("#recommendations [data-type=review_alert]", timeout=5000)
    assert page.locator("#recommendations article").first.get_attribute("data-type") == "review_alert"
    assert page.console_errors == []


def test_several_alerts_of_a_patient_are_acknowledged_together_with_one_note(
    page, live_server, therapist_a, caseload, token
):
    batch = [signal("p-a1", "h1", "high", 30), signal("p-a1", "m1", "moderate", 20)]
    assert post_over_http(live_server.url, token, {"alerts": batch})[0] == 201
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.goto(f"{live_server.url}/patients/p-a1/")
    items = page.locator("#alerts .alert-item")
    assert items.count() == 2 and "High" in items.first.inner_text()  # the most severe first
    for box in page.locator("#alerts input[type=checkbox]").all():
        box.check()
    page.fill("#ack-note", "Called the patient; safety plan reviewed")
    page.get_by_role("button", name="Acknowledge selected").click()
    page.wait_for_selector(".message--success:has-text('2 alerts acknowledged')")
    assert page.locator("#alerts form#ack-form").count() == 0
    assert page.locator("#alerts .alerts-done").inner_text().count("Called the patient") == 2


@pytest.mark.parametrize("size", list(WIDTHS))
def test_triage_pages_at_desktop_and_tablet_width(browser, live_server, therapist_a, caseload, token, size):
    batch = [
        signal("p-a1", "u1", "urgent", 50),
        signal("p-a3", "h1", "high", 40),
        signal("p-a5", "m1", "moderate", 30),
        signal("p-a5", "m2", "moderate", 10),
    ]
    assert post_over_http(live_server.url, token, {"alerts": batch})[0] == 201
    # An item-9 answer on p-a2's PHQ-9 (total 9, item 9 = 1).
    item9 = {
        "response_id": "r-item9",
        "player_id": "p-a2",
        "instrument": "phq9",
        "administered_at": timezone.now().isoformat(),
        "items": [1, 1, 1, 1, 1, 1, 1, 1, 1],
    }
    assert post_over_http(live_server.url, token, {"outcomes": [item9]})[0] == 201
    recompute.patients_recompute([p.pk for p in caseload])

    context = browser.new_context(viewport=WIDTHS[size])
    page = context.new_page()
    try:
        log_in(page, live_server, therapist_a.username, PASSWORD)
        # The caseload opens with what needs attention first: urgent, then the item-9 urgent, high, moderate.
        rows = page.locator("#caseload tbody tr")
        assert rows.nth(0).locator("[data-col=alerts]").inner_text().startswith("Urgent")
        order = [rows.nth(i).get_attribute("data-player-id") for i in range(4)]
        assert sorted(order[:2]) == ["p-a1", "p-a2"] and order[2:] == ["p-a3", "p-a5"]
        item9_row = page.locator("#caseload tr[data-player-id=p-a2]")
        assert "Item 9" in item9_row.inner_text()
        assert "High" in page.locator("#caseload tr[data-player-id=p-a3] [data-col=alerts]").inner_text()
        assert "Moderate · 2 open" in page.locator("#caseload tr[data-player-id=p-a5] [data-col=alerts]").inner_text()
        # Every column is reachable: the table scrolls inside its card, never the page.
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        if size == "tablet":
            wrap = page.locator(".table-wrap--sticky")
            assert wrap.evaluate("w => w.scrollWidth > w.clientWidth")
            wrap.evaluate("w => { w.scrollLeft = w.scrollWidth; }")
            first = page.locator("#caseload tbody tr th").first
            assert first.bounding_box()["x"] >= wrap.bounding_box()["x"] - 1  # the player id stays in view
            assert page.locator("#caseload thead th:has-text('Flag')").is_visible()
        screenshot(page, f"caseload-{size}")

        page.locator(".inbox__button").click()
        assert inbox_items(page)[0].startswith("URGENT")
        screenshot(page, f"inbox-{size}")
        page.keyboard.press("Escape")

        page.goto(f"{live_server.url}/alerts/")
        severities = page.locator("#alerts-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.severity)")
        assert severities == ["urgent", "urgent", "high", "moderate", "moderate"]
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(page, f"alerts-{size}")

        page.goto(f"{live_server.url}/patients/p-a5/")
        page.wait_for_selector("#live-status:has-text('Live updates on')")
        assert page.locator("#alerts .alert-item").count() == 2
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(page, f"patient-{size}")
    finally:
        context.close()
