"""Headless Chromium (Debian's package) driven by Playwright's Python package."""

import os
import shutil
import threading
from pathlib import Path

import pytest
from django.core.handlers.wsgi import WSGIHandler

from tests.test_celery_worker import wait_until

# Playwright's sync API runs an event loop in the test thread; the ORM calls made by fixtures in that
# same thread are still synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"


class _InFlight:
    """Requests the live server is still handling. A page can leave one running when its test ends (a fetch its
    script made, an audit row being written); the flush after a transactional test then deadlocks with it."""

    def __init__(self):
        self.count, self.lock = 0, threading.Lock()

    def wrap(self, call):
        def counted(handler, environ, start_response):
            with self.lock:
                self.count += 1
            try:
                return call(handler, environ, start_response)  # a stream's body runs later, on the cache only
            finally:
                with self.lock:
                    self.count -= 1

        return counted


IN_FLIGHT = _InFlight()
WSGIHandler.__call__ = IN_FLIGHT.wrap(WSGIHandler.__call__)


@pytest.fixture(autouse=True)
def _requests_finish_before_the_flush(transactional_db, live_server):
    yield
    wait_until(lambda: IN_FLIGHT.count == 0, timeout=30, what="the live server's requests to finish")


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-quic",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.console_errors = errors
    yield page
    context.close()


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(page, live_server, username: str, password: str) -> None:
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state("domcontentloaded")
