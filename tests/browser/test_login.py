"""Login and the first page, in a real browser."""

import pytest

from tests.browser.conftest import log_in, screenshot
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_therapist_logs_in_and_sees_exactly_their_patients(
    page, live_server, therapist_a, patients_a, patient_b, foreign_patient
):
    page.goto(f"{live_server.url}/")
    assert "/login/" in page.url
    screenshot(page, "login")
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.wait_for_selector("#caseload")
    rows = page.locator("#caseload tbody tr")
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.playerId)")) == sorted(
        p.player_id for p in patients_a
    )
    assert page.locator("h1").inner_text() == "My caseload"
    screenshot(page, "caseload-initial")
    assert page.console_errors == []


def test_wrong_password_shows_an_error_and_stays_logged_out(page, live_server, therapist_a):
    log_in(page, live_server, therapist_a.username, "not-the-password")
    assert page.get_by_role("alert").inner_text().startswith("That username and password did not match")
    page.goto(f"{live_server.url}/")
    assert "/login/" in page.url


def test_logout_ends_the_session(page, live_server, therapist_a, patient_a):
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login/")
    page.goto(f"{live_server.url}/")
    assert "/login/" in page.url
