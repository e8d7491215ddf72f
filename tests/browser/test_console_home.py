"""The console's index (/clinic/) in headless Chromium: every section is reachable from it, at 1440 and
820 px."""

import pytest

from tests.browser.conftest import log_in, screenshot
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_console_index_links_every_section(page, live_server, clinic_admin):
    log_in(page, live_server, clinic_admin.username, PASSWORD)
    page.goto(f"{live_server.url}/clinic/")
    sections = page.locator(".console-sections h2 a")
    assert sections.all_inner_texts() == ["Users", "Patients", "Retention", "Settings", "Tokens"]
    assert page.get_by_role("link", name="Console").get_attribute("aria-current") == "page"
    for width, height in ((1440, 900), (820, 1180)):
        page.set_viewport_size({"width": width, "height": height})
        screenshot(page, f"console-home-{width}")
    for name, path in (("Users", "/clinic/users/"), ("Tokens", "/clinic/tokens/"), ("Retention", "/clinic/retention/")):
        page.goto(f"{live_server.url}/clinic/")
        page.get_by_role("link", name=name, exact=True).first.click()
        page.wait_for_url(f"**{path}")
    assert page.console_errors == []
