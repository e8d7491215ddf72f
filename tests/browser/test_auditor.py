"""The auditor's console and break-glass in headless Chromium (issue 10, "Done when"): the auditor filters
by patient and by action, exports the CSV, sees the chain status and reviews a break-glass grant; a
canary string posted through ingest (a crisis reason, a marker description) and written in an
acknowledgement note is absent from every auditor page. A therapist breaks the glass with a reason."""

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from reports.models import Alert
from tests.browser.conftest import log_in, screenshot
from tests.conftest import logged_in
from tests.factories import PASSWORD
from tests.test_auditor_console import CANARY, canary_batch
from tests.test_ingest_concurrency import post_over_http
from tracking import audit, services
from tracking.models import AuditAction, AuditReview, BreakGlassGrant

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = {"desktop": {"width": 1440, "height": 1000}, "tablet": {"width": 820, "height": 1180}}
REASON = "Patient rang the crisis line; therapist B is on leave today"


@pytest.fixture(autouse=True)
def _audit_heads(settings, tmp_path):
    settings.AUDIT_HEAD_DIR = str(tmp_path / "heads")
    settings.AUDIT_SIGNING_KEY = "test-signing-key-not-secret-key"


@pytest.fixture
def audit_history(live_server, clinic, therapist_a, therapist_b, patients_a, patient_b, token):
    """A day of the clinic's history, with the canary in the game's free text and in a therapist's note."""
    assert post_over_http(live_server.url, token, canary_batch("p-a1"))[0] in (200, 201)
    alert = Alert.objects.get(alert_id="p-a1-ca1")
    therapist = logged_in(therapist_a)
    assert CANARY in therapist.get("/patients/p-a1/").content.decode()
    therapist.post(f"/patients/p-a1/alerts/{alert.pk}/acknowledge", {"note": f"{CANARY} acknowledged"})
    start = timezone.now() - timedelta(hours=6)
    for n in range(40):
        actor, player = ("therapist.a", f"p-a{1 + n % 3}") if n % 4 else ("therapist.b", "p-b1")
        audit.audit_record(
            chain=clinic.slug,
            actor=actor,
            role="therapist",
            action=AuditAction.PATIENT_READ,
            patients=[player],
            object=f"patient:{player}",
            ip="10.0.0.12",
            at=start + timedelta(minutes=5 * n),
        )
    audit.audit_record(
        chain=clinic.slug,
        actor="therapist.b",
        action=AuditAction.LOCKOUT,
        ip="203.0.113.9",
        outcome="denied",
        detail={"failures": 5},
    )
    services.break_glass_grant(user=therapist_a, patient=patient_b, reason=REASON)


def test_the_auditor_filters_exports_sees_the_chain_status_and_never_clinical_content(
    page, live_server, auditor, audit_history, tmp_path
):
    seen: list[str] = []

    def look() -> None:
        seen.append(page.content())

    log_in(page, live_server, auditor.username, PASSWORD)
    assert page.url == f"{live_server.url}/audit/"
    look()

    # The chain status, then "Verify now".
    chain_row = page.locator("#chains tr[data-chain=northside]")
    assert "Never" in chain_row.inner_text()
    chain_row.get_by_role("button", name="Verify now").click()
    page.wait_for_selector(".message--success:has-text('Chain northside is intact')")
    assert "✓ Intact" in page.locator("#chains tr[data-chain=northside]").inner_text()
    look()

    # By patient: POSTed, kept in the session, never in the URL.
    page.get_by_label("Patient").fill("p-a2")
    page.get_by_role("button", name="Filter", exact=True).click()
    page.wait_for_load_state("domcontentloaded")
    assert "p-a2" not in page.url
    rows = page.locator("#audit-events tbody tr")
    assert rows.count() >= 10
    assert all("p-a2" in text for text in page.locator("#audit-events tbody td.audit-patients").all_inner_texts())
    look()

    # And by action.
    page.get_by_label("Action").select_option("patient.read")
    page.get_by_role("button", name="Show").click()
    page.wait_for_load_state("domcontentloaded")
    assert "action=patient.read" in page.url and "p-a2" not in page.url
    actions = [rows.nth(i).get_attribute("data-action") for i in range(rows.count())]
    assert actions and set(actions) == {"patient.read"}
    assert all("p-a2" in text for text in page.locator("#audit-events tbody td.audit-patients").all_inner_texts())
    shown = rows.count()
    look()

    # The CSV export of these filters.
    with page.expect_download() as download:
        page.locator("#audit-export").click()
    path = tmp_path / "export.csv"
    download.value.save_as(path)
    text = path.read_text(encoding="utf-8")
    header, *lines = list(csv.reader(io.StringIO(text)))
    assert tuple(header) == audit.EXPORT_FIELDS
    assert len(lines) == shown
    assert all(
        row[header.index("action")] == "patient.read" and "p-a2" in row[header.index("patients")] for row in lines
    )
    assert CANARY not in text
    page.get_by_role("button", name="Clear patient").click()
    page.wait_for_load_state("domcontentloaded")
    look()

    # The break-glass grant and the lockout wait for review; the grant's reason is shown.
    pending = page.locator("#reviews .review-list").first
    assert "Break-glass" in pending.inner_text() and REASON in pending.inner_text()
    assert "Lockout" in pending.inner_text()
    item = page.locator("#reviews .review-item--break_glass")
    item.get_by_placeholder("Note (optional)").fill("Confirmed with therapist B")
    item.get_by_role("button", name="Mark reviewed").click()
    page.wait_for_selector(".message--success:has-text('marked reviewed')")
    assert AuditReview.objects.count() == 1
    assert page.locator("#reviews .review-item--break_glass").count() == 0
    look()

    for html in seen:
        assert CANARY not in html
    assert page.console_errors == []


def test_a_therapist_breaks_the_glass_with_a_reason(page, live_server, therapist_a, patient_a, patient_b):
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.get_by_role("link", name="Emergency access to a patient not assigned to you").click()
    page.wait_for_load_state("domcontentloaded")
    assert page.url == f"{live_server.url}/break-glass/"

    # An unknown id: the same answer as another clinic's.
    page.get_by_label("Player id").fill("p-nobody")
    page.get_by_label("Reason").fill(REASON)
    page.get_by_role("button", name="Open the record").click()
    page.wait_for_selector(".form-error:has-text('No patient with this id in your clinic')")
    assert not BreakGlassGrant.objects.exists()

    # 19 characters are not enough (the browser says so before the server would).
    page.get_by_label("Player id").fill("p-b1")
    page.get_by_label("Reason").fill("x" * 19)
    page.get_by_role("button", name="Open the record").click()
    assert page.url == f"{live_server.url}/break-glass/" and not BreakGlassGrant.objects.exists()

    page.get_by_label("Reason").fill(REASON)
    page.get_by_role("button", name="Open the record").click()
    page.wait_for_selector("#break-glass-banner")
    assert page.url == f"{live_server.url}/patients/p-b1/"
    banner = page.locator("#break-glass-banner").inner_text()
    assert "Emergency access until" in banner and REASON in banner
    screenshot(page, "break-glass-banner")
    assert page.console_errors == []


@pytest.mark.parametrize("size", list(WIDTHS))
def test_audit_and_break_glass_pages_at_desktop_and_tablet_width(
    browser, live_server, auditor, therapist_a, audit_history, size
):
    context = browser.new_context(viewport=WIDTHS[size])
    page = context.new_page()
    try:
        log_in(page, live_server, auditor.username, PASSWORD)
        page.goto(f"{live_server.url}/audit/")
        assert page.locator("#audit-events tbody tr").count() >= 40
        # Nothing wider than the page but the events table, which scrolls in its own box.
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
        screenshot(page, f"audit-{size}")
        page.screenshot(path=str(screenshot(page, f"audit-{size}").with_name(f"audit-{size}-top.png")))

        therapist = browser.new_context(viewport=WIDTHS[size])
        form = therapist.new_page()
        log_in(form, live_server, therapist_a.username, PASSWORD)
        form.goto(f"{live_server.url}/break-glass/")
        screenshot(form, f"break-glass-{size}")
        form.get_by_label("Player id").fill("p-r9")
        form.get_by_label("Reason").fill(REASON)
        form.get_by_role("button", name="Open the record").click()
        form.wait_for_selector(".form-error")
        screenshot(form, f"break-glass-refused-{size}")
        therapist.close()
    finally:
        context.close()
