"""The outcome pages in headless Chromium: the charts draw the right points, no console errors."""

from datetime import UTC, datetime, timedelta

import pytest

from tests.browser.conftest import log_in, screenshot
from tests.factories import (
    PASSWORD,
    CareAssignmentFactory,
    OutcomeResponseFactory,
    PatientFactory,
    TherapySessionFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
PHQ9 = [  # (days after T0, items or None for a total-only response, total)
    (0, [3, 3, 2, 2, 2, 3, 2, 2, 0], 19),
    (14, [3, 2, 2, 2, 2, 2, 2, 1, 1], 17),
    (28, [2, 1, 1, 1, 1, 1, 1, 1, 0], 9),
    (42, None, 12),
    (70, [1, 1, 0, 1, 1, 0, 0, 1, 0], 5),
]
GAD7 = [(0, 15), (28, 11), (70, 6)]
TABLET = {"width": 820, "height": 1180}

TRACES = """
(code) => {
  const div = document.querySelector(`[data-chart="outcomes"][data-instrument="${code}"]`);
  return div.data.map(t => ({name: t.name, x: t.x.length, y: (t.y || []).length, text: t.text || null}));
}
"""


def items(values):
    return {f"item_{n}": v for n, v in enumerate(values or [], start=1)}


def give_scores(patient):
    for n, (day, answers, total) in enumerate(PHQ9):
        OutcomeResponseFactory(
            patient=patient,
            response_id=f"{patient.player_id}-phq-{n}",
            instrument="phq9",
            total=total,
            administered_at=T0 + timedelta(days=day),
            **items(answers),
        )
    for n, (day, total) in enumerate(GAD7):
        OutcomeResponseFactory(
            patient=patient,
            response_id=f"{patient.player_id}-gad-{n}",
            instrument="gad7",
            total=total,
            administered_at=T0 + timedelta(days=day, minutes=5),
        )
    for day in range(0, 70, 3):
        TherapySessionFactory(patient=patient, started_at=T0 + timedelta(days=day, hours=8), duration_minutes=20)


def wait_for_charts(page, count):
    page.wait_for_function(f"document.querySelectorAll('[data-chart-drawn=true]').length === {count}", timeout=15000)


def assert_no_horizontal_scroll(page):
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


def by_name(traces, name):
    return next(t for t in traces if t["name"] == name)


def test_patient_outcome_chart_draws_every_score(page, live_server, therapist_a, patient_a):
    give_scores(patient_a)
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.goto(f"{live_server.url}/patients/p-a1/outcomes/")
    wait_for_charts(page, 2)

    phq = page.evaluate(TRACES, "phq9")
    assert by_name(phq, "PHQ-9 total")["x"] == by_name(phq, "PHQ-9 total")["y"] == 5
    # Reliable change is from the first score (19): 9, 12 and 5 are 6 or more below it.
    assert by_name(phq, "▼ Reliable improvement (6+ down from first)")["x"] == 3
    assert by_name(phq, "▲ Reliable deterioration (6+ up from first)")["x"] == 0
    assert by_name(phq, "◆ Item 9 answered above 0")["x"] == 1
    answers = by_name(phq, "Item 9 answers")
    assert answers["x"] == 5 and answers["text"] == ["0", "<b>◆1</b>", "0", "–", "0"]

    gad = page.evaluate(TRACES, "gad7")
    assert by_name(gad, "GAD-7 total")["x"] == 3
    assert by_name(gad, "▼ Reliable improvement (4+ down from first)")["x"] == 2  # 15 → 11, 15 → 6
    assert not any(t["name"].startswith("◆") for t in gad)

    # Severity bands shaded and the caseness line drawn, with their names in text.
    layout = page.evaluate(
        "() => { const l = document.querySelector('[data-instrument=phq9]').layout;"
        " return {shapes: l.shapes.length, notes: l.annotations.map(a => a.text)}; }"
    )
    assert layout["shapes"] == 6  # 5 bands + the caseness line
    assert {"Minimal", "Moderately severe", "Severe", "Caseness (10+)", "Item 9"} <= set(layout["notes"])

    rows = page.locator("#outcome-phq9-table tbody tr")
    assert rows.count() == 5
    assert page.locator(".js-plotly-plot .main-svg").first.is_visible()
    screenshot(page, "outcomes-patient-desktop")
    page.set_viewport_size(TABLET)
    page.wait_for_timeout(300)  # plotly relayouts on resize
    screenshot(page, "outcomes-patient-tablet")
    assert_no_horizontal_scroll(page)
    assert page.console_errors == []


def test_patient_with_one_measure_only(page, live_server, therapist_a, patient_a):
    OutcomeResponseFactory(patient=patient_a, instrument="gad7", total=8, administered_at=T0)
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.goto(f"{live_server.url}/patients/p-a1/outcomes/")
    wait_for_charts(page, 1)
    assert by_name(page.evaluate(TRACES, "gad7"), "GAD-7 total")["x"] == 1
    assert page.get_by_text("No PHQ-9 responses yet.").is_visible()
    assert page.console_errors == []


def test_caseload_outcomes_page(page, live_server, clinic, therapist_a, patient_a):
    give_scores(patient_a)
    for n, (first, last) in enumerate([(14, 6), (22, 20), (8, 15), (12, 12)], start=2):
        patient = CareAssignmentFactory(
            patient=PatientFactory(clinic=clinic, player_id=f"p-a{n}"), therapist=therapist_a
        ).patient
        for k, (phq, gad) in enumerate([(first, first * 2 // 3), (last, last * 2 // 3)]):
            when = T0 + timedelta(days=56 * k)
            OutcomeResponseFactory(patient=patient, instrument="phq9", total=phq, administered_at=when)
            OutcomeResponseFactory(patient=patient, instrument="gad7", total=gad, administered_at=when)
    CareAssignmentFactory(patient=PatientFactory(clinic=clinic, player_id="p-a9"), therapist=therapist_a)
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.goto(f"{live_server.url}/outcomes/")
    assert page.locator("h1").inner_text() == "Outcomes of my caseload"
    assert page.locator("#patient-outcomes tbody tr").count() == 6
    screenshot(page, "outcomes-caseload-desktop")
    page.set_viewport_size(TABLET)
    screenshot(page, "outcomes-caseload-tablet")
    assert_no_horizontal_scroll(page)

    page.get_by_label("From").fill("2026-02-01")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**/outcomes/?date_from=2026-02-01*")
    assert "from 2026-02-01" in page.locator(".page-heading").inner_text()

    page.get_by_role("link", name="Print-friendly page").click()
    page.wait_for_url("**/outcomes/print/?date_from=2026-02-01")
    page.set_viewport_size({"width": 1280, "height": 800})
    screenshot(page, "outcomes-caseload-print")
    page.emulate_media(media="print")
    screenshot(page, "outcomes-caseload-print-media")
    assert page.console_errors == []


def test_clinic_report_page(page, live_server, clinic, clinic_admin, therapist_a, patient_a, patient_b):
    give_scores(patient_a)
    give_scores(patient_b)
    log_in(page, live_server, clinic_admin.username, PASSWORD)
    page.goto(f"{live_server.url}/clinic/report/")
    assert page.locator("h1").inner_text() == "Outcome report: Northside"
    body = page.locator("main").inner_text()
    assert "p-a1" not in body and "p-b1" not in body
    screenshot(page, "outcomes-clinic-desktop")
    page.set_viewport_size(TABLET)
    screenshot(page, "outcomes-clinic-tablet")
    assert_no_horizontal_scroll(page)
    page.goto(f"{live_server.url}/clinic/report/print/")
    screenshot(page, "outcomes-clinic-print")
    assert page.console_errors == []


def test_the_expected_recovery_band_is_drawn(page, live_server, clinic, therapist_a, patient_a):
    """Ten patients who started moderately severe and improved make the clinic's reference; patient_a, still
    at 15 in week 4, is above its 75th percentile: the band, the median and "Not on track" are shown."""
    from reports import expected_recovery

    for i in range(10):
        patient = PatientFactory(clinic=clinic, player_id=f"ref-{i}")
        for week in range(7):
            total = 16 if week == 0 else max(0, 16 - 2 * week + i % 4)
            OutcomeResponseFactory(patient=patient, total=total, administered_at=T0 + timedelta(weeks=week))
    OutcomeResponseFactory(patient=patient_a, total=16, administered_at=T0)
    OutcomeResponseFactory(patient=patient_a, total=15, administered_at=T0 + timedelta(weeks=4))
    expected_recovery.clinic_refresh(clinic.pk)

    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.goto(f"{live_server.url}/patients/p-a1/outcomes/")
    wait_for_charts(page, 1)
    phq = page.evaluate(TRACES, "phq9")
    assert by_name(phq, "Expected range (25th–75th percentile)")["x"] == 7  # weeks 0–6
    assert by_name(phq, "Expected PHQ-9 (median)")["y"] == 7
    # the band is filled on the page (plotly draws a fill path for the tonexty trace)
    assert page.locator("[data-instrument=phq9] .scatterlayer .js-fill").count() >= 1
    status = page.locator("#outcome-phq9 .expected-recovery")
    assert status.get_attribute("data-expected") == "off"
    assert "Not on track" in status.inner_text() and "not a prediction" in status.inner_text()
    assert page.get_by_text("Blue band and dotted line").is_visible()
    page.locator("#outcome-phq9").scroll_into_view_if_needed()
    screenshot(page, "outcomes-expected-recovery")
    assert page.console_errors == []
