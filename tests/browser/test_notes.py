"""Clinical notes and the patient report in headless Chromium: a therapist writes a note on the patient
page, it appears there and in the report, and its text is nowhere in a pg_dump of the database (while a
value stored in plain text is, which shows the dump holds the data)."""

import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from reports.models import ClinicalNote, ClinicalNoteRevision
from tests.browser.conftest import log_in, screenshot
from tests.factories import PASSWORD, OutcomeResponseFactory, PatientFactory, TherapySessionFactory
from tracking.history import local_today
from tracking.models import AuditEvent

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NOTE = "Canary-browser-Wx2 mother's illness; agreed a sleep diary"
EDITED = "Canary-browser-Wx2 mother's illness; agreed a sleep diary and a follow-up call"
PLAIN_MARKER = "plain-marker-Kd8"  # a player id: stored in plain text


def pg_dump() -> str:
    settings = connection.settings_dict
    command = [
        "pg_dump",
        "--no-owner",
        "-h",
        settings.get("HOST") or "127.0.0.1",
        "-U",
        settings.get("USER") or "postgres",
    ]
    if settings.get("PORT"):
        command += ["-p", str(settings["PORT"])]
    command.append(settings["NAME"])
    env = {**os.environ, "PGPASSWORD": settings.get("PASSWORD") or ""}
    return subprocess.run(command, capture_output=True, env=env, timeout=120, check=True).stdout.decode("utf-8")


@pytest.fixture
def scored_patient(patient_a, clinic):
    PatientFactory(clinic=clinic, player_id=PLAIN_MARKER)
    for n, (days_ago, total) in enumerate([(70, 18), (42, 14), (14, 11), (1, 7)]):
        OutcomeResponseFactory(
            patient=patient_a,
            response_id=f"phq-{n}",
            instrument="phq9",
            total=total,
            administered_at=timezone.now() - timedelta(days=days_ago),
        )
    for days_ago in range(0, 40, 5):
        TherapySessionFactory(patient=patient_a, started_at=timezone.now() - timedelta(days=days_ago, hours=1))
    return patient_a


def test_a_note_written_on_the_patient_page_appears_and_is_not_in_a_database_dump(
    page, live_server, therapist_a, scored_patient
):
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.goto(f"{live_server.url}/patients/p-a1/")
    notes = page.locator("#notes")
    assert "No notes yet." in notes.inner_text()
    date_field = notes.get_by_label("Date (the day the note is about)")
    assert date_field.input_value() == local_today(scored_patient.clinic.timezone).isoformat()  # defaults to today
    links = page.locator(".patient-links")
    assert links.get_by_role("link", name="FHIR (JSON)").get_attribute("href") == "/api/v1/patients/p-a1/fhir"
    links.screenshot(path=str(screenshot_path("notes-patient-links")))
    # An empty note is refused with the field named, and nothing is stored.
    notes.get_by_role("button", name="Save note").click()
    assert "Note: Write the note before saving it." in page.locator("main").inner_text()
    screenshot(page, "notes-refused")
    assert not ClinicalNote.objects.exists()
    assert page.console_errors == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]
    page.console_errors.clear()
    page.get_by_label("Note", exact=True).fill(NOTE)
    page.get_by_role("button", name="Save note").click()
    page.wait_for_url("**/patients/p-a1/#notes")
    item = page.locator("#notes .note-item")
    assert item.count() == 1
    assert NOTE in item.inner_text() and "therapist.a" in item.inner_text()
    assert "Note saved." in page.locator(".messages").inner_text()
    assert page.locator("#notes").screenshot(path=str(screenshot_path("notes-patient-page")))
    screenshot(page, "notes-patient-page-full")

    # Edit it: the earlier version is kept and reachable from the list.
    item.get_by_role("link", name="Edit").click()
    page.get_by_label("Note", exact=True).fill(EDITED)
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url("**/patients/p-a1/#notes")
    assert "edited" in page.locator("#notes .note-item").inner_text()
    page.locator("#notes").get_by_role("link", name="earlier version (1)").click()
    assert NOTE in page.locator("main").inner_text() and EDITED in page.locator("main").inner_text()
    screenshot(page, "notes-history")
    assert page.console_errors == []

    [note] = ClinicalNote.objects.all()
    assert note.body == EDITED and ClinicalNoteRevision.objects.get(note=note).body == NOTE
    assert AuditEvent.objects.filter(action="note.write", object=f"note:{note.pk}").count() == 2

    dump = pg_dump()
    assert PLAIN_MARKER in dump and "Northside" in dump  # the dump holds the data
    assert "reports_clinicalnote" in dump and "reports_clinicalnoterevision" in dump
    for secret in (NOTE, EDITED, "Canary-browser-Wx2", "sleep diary", "mother"):
        assert secret not in dump


def test_the_report_page_shows_the_note_and_the_charts(page, live_server, therapist_a, scored_patient):
    from reports.notes import note_create

    note_create(patient=scored_patient, author=therapist_a, written_on=local_today("Europe/London"), body=NOTE)
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.goto(f"{live_server.url}/patients/p-a1/")
    page.get_by_role("link", name="Report", exact=True).click()
    page.wait_for_url("**/patients/p-a1/report/")
    assert "confidential — contains clinical information" in page.locator(".report-header").inner_text().lower()
    assert page.locator("svg.report-chart").count() == 1  # PHQ-9 only: no GAD-7 responses
    assert page.locator("svg.report-chart circle.score").count() == 4
    assert NOTE in page.locator(".report-note").inner_text()
    screenshot(page, "patient-report-page")
    assert page.console_errors == []
    # The PDF link downloads the same report.
    with page.expect_download() as download:
        page.get_by_role("link", name="Download PDF").click()
    assert Path(download.value.path()).read_bytes().startswith(b"%PDF-")


def screenshot_path(name: str):
    from tests.browser.conftest import SCREENSHOTS

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"
