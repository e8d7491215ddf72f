"""The console's users and tokens in headless Chromium (issue 12, "Done when"): a clinic admin invites a
user, who sets a password through the e-mailed link and logs in; the admin creates a token (shown once)
and revokes it, after which ingest with it is 401. Screenshots of each page at 1440 and 820 px."""

import re

import pytest
from django.core import mail

from tests.browser.conftest import log_in, screenshot
from tests.factories import PASSWORD
from tests.test_ingest import make_batch
from tests.test_ingest_concurrency import post_over_http

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = {"1440": {"width": 1440, "height": 1000}, "820": {"width": 820, "height": 1180}}
NEW_PASSWORD = "a-long-enough-passphrase-2026"


def shots(page, name: str) -> None:
    for width, viewport in WIDTHS.items():
        page.set_viewport_size(viewport)
        screenshot(page, f"console-{name}-{width}")


def test_invite_set_password_and_log_in(live_server, page, browser, clinic, clinic_admin, therapist_a, auditor):
    log_in(page, live_server, "admin.north", PASSWORD)
    page.goto(f"{live_server.url}/clinic/users/")
    page.get_by_label("Username").fill("nina new")  # invalid: a space
    page.get_by_label("E-mail").fill("nina@example.org")
    page.get_by_role("button", name="Send invitation").click()
    assert page.get_by_text("Username: Use letters, digits").is_visible()
    shots(page, "users-invite-error")
    page.get_by_label("Username").fill("nina.new")
    page.get_by_label("E-mail").fill("nina@example.org")
    page.get_by_label("First name").fill("Nina")
    page.get_by_label("Last name").fill("Novak")
    page.get_by_label("Role", exact=True).select_option("therapist")
    page.get_by_role("button", name="Send invitation").click()
    assert page.get_by_text("Invited nina.new").is_visible()
    shots(page, "users")
    link = re.search(r"https?://\S+/welcome/\S+/", mail.outbox[-1].body).group(0)

    invitee = browser.new_context(viewport=WIDTHS["1440"]).new_page()
    invitee.goto(link)
    shots(invitee, "welcome")
    invitee.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    invitee.get_by_label("New password confirmation").fill(NEW_PASSWORD)
    invitee.get_by_role("button", name="Set password").click()
    assert "/login/" in invitee.url and invitee.get_by_text("Your password is set").is_visible()
    log_in(invitee, live_server, "nina.new", NEW_PASSWORD)
    assert invitee.url.rstrip("/") == live_server.url  # the caseload
    invitee.goto(link)
    assert invitee.get_by_text("This link no longer works").is_visible()
    shots(invitee, "welcome-used")


def test_create_and_revoke_a_token(live_server, page, clinic, clinic_admin):
    log_in(page, live_server, "admin.north", PASSWORD)
    page.goto(f"{live_server.url}/clinic/tokens/")
    page.get_by_label("Name").fill("game-server-prod")
    page.get_by_role("button", name="Create token").click()
    raw = page.locator("#new-token").input_value()
    assert raw.startswith("pt_")
    shots(page, "tokens-created")
    assert post_over_http(live_server.url, raw, make_batch())[0] == 201
    page.goto(f"{live_server.url}/clinic/tokens/")
    assert raw not in page.content()
    page.get_by_role("button", name="Revoke the token game-server-prod").click()
    assert page.get_by_text("is revoked").is_visible()
    shots(page, "tokens")
    assert post_over_http(live_server.url, raw, make_batch(prefix="x-"))[0] == 401
