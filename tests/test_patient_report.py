"""The patient report (issue 13 item 4): one printable page per patient and its PDF, drawn from the same
template by WeasyPrint with inline SVG charts; every view and download audited as an export."""

import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from reports import notes, report_svg
from reports.alerts import alert_raise
from reports.models import AlertKind, AlertSeverity
from tests.conftest import logged_in
from tests.factories import OutcomeResponseFactory, TherapySessionFactory
from tracking.models import AuditEvent, Milestone

SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
NOTE = "Canary-report-Tn5 discussed the referral to the eating-disorder service"
T0 = timezone.now() - timedelta(days=60)


def last_id() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


@pytest.fixture
def history(patient_a, therapist_a):
    """p-a1 with PHQ-9 19 → 9 (reliable improvement), GAD-7 15 → 6, sessions, a milestone, an open
    alert and a note."""
    for n, (days, total) in enumerate([(0, 19), (14, 17), (28, 12), (56, 9)]):
        OutcomeResponseFactory(
            patient=patient_a,
            response_id=f"phq-{n}",
            instrument="phq9",
            total=total,
            administered_at=T0 + timedelta(days=days),
        )
    for n, (days, total) in enumerate([(0, 15), (28, 11), (56, 6)]):
        OutcomeResponseFactory(
            patient=patient_a,
            response_id=f"gad-{n}",
            instrument="gad7",
            total=total,
            administered_at=T0 + timedelta(days=days, minutes=5),
        )
    for day in range(0, 56, 4):
        TherapySessionFactory(patient=patient_a, started_at=T0 + timedelta(days=day, hours=2), duration_minutes=25)
    Milestone.objects.create(
        patient=patient_a, family="sessions", threshold=5, title="5 Sessions Completed", achieved_at=T0
    )
    alert_raise(
        patient=patient_a,
        kind=AlertKind.DISENGAGEMENT,
        severity=AlertSeverity.MODERATE,
        reason="No active day for 14 days",
        occurred_at=timezone.now() - timedelta(days=1),
    )
    notes.note_create(patient=patient_a, author=therapist_a, written_on=(T0 + timedelta(days=30)).date(), body=NOTE)
    return patient_a


def test_the_report_page_shows_every_part_and_is_one_export_event(history, therapist_a):
    client = logged_in(therapist_a)
    since = last_id()
    response = client.get("/patients/p-a1/report/")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    html = response.content.decode()
    # The confidential header: clinic, player id, period, generated-at in the clinic's zone.
    assert "Confidential — contains clinical information" in html
    assert "Northside" in html and "Patient report: p-a1" in html
    assert re.search(r"All records: \d{4}-\d\d-\d\d to \d{4}-\d\d-\d\d", html)
    assert "(Europe/London) by therapist.a" in html
    # Outcomes: charts as inline SVG (no script anywhere), tables with reliable change and recovery.
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" class="report-chart"') == 2
    assert "<script" not in html
    assert "▼ Improvement" in html  # PHQ-9 19 → 12 is a reliable improvement
    assert '<th scope="col">Recovery</th>' in html and '<th scope="col">Reliable recovery</th>' in html
    assert "19 (Moderately severe)" in html and "9 (Mild)" in html
    # Engagement, milestones, open alerts, notes.
    assert "Not a clinical outcome" in html and "14 (350 minutes)" in html
    assert "5 Sessions Completed" in html
    assert "Disengagement" in html and "Moderate" in html
    assert "eating-disorder service" in html and "therapist.a" in html
    [event] = AuditEvent.objects.filter(pk__gt=since)
    assert (event.action, event.patients, event.chain, event.actor) == ("export", ["p-a1"], "northside", "therapist.a")
    assert event.detail == {"report": "patient", "format": "html", "view": "patient-report"}
    assert "Canary" not in str(event.detail)


def test_the_report_shows_the_expected_recovery_result_when_present(history, therapist_a):
    """The lead's effectiveness carries not_on_track per measure; the report states it and its basis."""
    html = logged_in(therapist_a).get("/patients/p-a1/report/").content.decode()
    assert "Expected recovery" in html
    assert any(words in html for words in ("Not on track", "On track", "Not judged"))


def test_a_patient_with_no_data_gets_a_report_that_says_so(patient_a, therapist_a):
    html = logged_in(therapist_a).get("/patients/p-a1/report/").content.decode()
    assert "All records (none yet)" in html
    assert "No PHQ-9 responses." in html and "No GAD-7 responses." in html
    assert "No open alerts." in html and "No notes." in html


@pytest.mark.parametrize("persona, status", [("therapist_b", 404), ("clinic_admin", 403), ("auditor", 403)])
def test_only_the_patient_s_therapists_get_the_report(personas, history, persona, status):
    for path in ("/patients/p-a1/report/", "/patients/p-a1/report.pdf"):
        response = personas[persona].get(path)
        assert response.status_code == status
        assert b"eating-disorder" not in response.content


def test_the_pdf_renders_is_audited_and_its_first_page_is_an_image(history, therapist_a):
    client = logged_in(therapist_a)
    since = last_id()
    response = client.get("/patients/p-a1/report.pdf")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="patient-report-p-a1.pdf"'
    pdf = response.content
    assert pdf.startswith(b"%PDF-")
    assert len(pdf) > 5_000
    [event] = AuditEvent.objects.filter(pk__gt=since)
    assert (event.action, event.patients) == ("export", ["p-a1"])
    assert event.detail == {"report": "patient", "format": "pdf", "view": "patient-report-pdf"}
    # Its text holds the header and the note (pdftotext), and its first page renders (pdftoppm).
    if shutil.which("pdftoppm") is None:
        pytest.fail("poppler-utils (pdftoppm) is needed: scripts/lib.sh installs it")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    source = SCREENSHOTS / "patient-report.pdf"
    source.write_bytes(pdf)
    text = subprocess.run(["pdftotext", str(source), "-"], capture_output=True, check=True, timeout=60).stdout
    text = text.decode()
    assert "Confidential — contains clinical information" in text.replace("\n", " ")
    assert "p-a1" in text and "Northside" in text and "eating-disorder" in text
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(source), str(SCREENSHOTS / "patient-report-pdf")],
        check=True,
        timeout=60,
    )
    [png] = sorted(SCREENSHOTS.glob("patient-report-pdf*.png"))
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000
    source.rename(SCREENSHOTS / "patient-report-last.pdf")  # kept to look at


# ----- the SVG chart (pure) -----------------------------------------------------------------------


def instrument(points, **extra):
    return {
        "code": "phq9",
        "name": "PHQ-9 <depression>",
        "total_max": 27,
        "caseness_threshold": 10,
        "bands": [
            {"name": "minimal", "label": "Minimal", "low": 0, "high": 4},
            {"name": "severe", "label": "Severe & more", "low": 20, "high": 27},
        ],
        "points": points,
        **extra,
    }


def point(day, total, step=None):
    at = datetime(2026, 1, 5, 9, 0, tzinfo=UTC) + timedelta(days=day)
    return {"administered_at": at.isoformat(), "total": total, "step": step}


def test_the_chart_draws_each_score_and_marks_reliable_change():
    svg = report_svg.outcome_chart_svg(
        instrument([point(0, 19), point(14, 12, "improvement"), point(28, 26, "deterioration")])
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('class="score"') == 3
    assert svg.count('class="step-improvement"') == 1 and svg.count('class="step-deterioration"') == 1
    assert 'class="scores"' in svg  # the line through them
    # Text is escaped: the name and a band label with markup characters.
    assert "PHQ-9 &lt;depression&gt;" in svg and "Severe &amp; more" in svg and "<depression>" not in svg
    # Higher totals are drawn higher up (smaller y).
    ys = [float(y) for y in re.findall(r'class="score" cx="[\d.]+" cy="([\d.]+)"', svg)]
    assert ys[2] < ys[0] < ys[1]


def test_one_score_is_drawn_without_a_line_and_with_room_around_it():
    svg = report_svg.outcome_chart_svg(instrument([point(0, 8)]))
    assert svg.count('class="score"') == 1 and 'class="scores"' not in svg
    [cx] = [float(x) for x in re.findall(r'class="score" cx="([\d.]+)"', svg)]
    assert report_svg.LEFT < cx < report_svg.WIDTH - report_svg.RIGHT


def test_the_expected_recovery_band_is_drawn_when_the_series_has_one():
    band = [{"week": w, "x": f"2026-01-{5 + 7 * w:02d}", "p25": 14 - w, "p50": 16 - w, "p75": 18 - w} for w in range(4)]
    svg = report_svg.outcome_chart_svg(instrument([point(0, 19), point(21, 17)], expected={"band": band}))
    assert 'class="reference-band"' in svg and 'class="reference-median"' in svg
    assert 'class="reference-band"' not in report_svg.outcome_chart_svg(instrument([point(0, 19)], expected=None))


def test_a_patient_not_on_track_against_the_clinic_reference_says_so_and_the_chart_draws_the_band(
    clinic, patient_a, therapist_a
):
    """The clinic's expected-recovery reference (tests/test_expected_recovery.py builds one): p-a1 stays at
    15 while the group improves, so the report states "Not on track (clinic reference)" and its PHQ-9
    chart draws the reference band and median."""
    from reports import expected_recovery
    from tests.test_expected_recovery import reference_group, score

    reference_group(clinic)
    score(patient_a, 0, 16)
    score(patient_a, 4, 15)
    expected_recovery.clinic_refresh(clinic.pk)
    client = logged_in(therapist_a)
    html = client.get("/patients/p-a1/report/").content.decode()
    assert "Not on track</strong> (clinic reference)" in html
    assert html.count('class="reference-band"') == 1 and html.count('class="reference-median"') == 1
    assert "grey band: the clinic's expected recovery for patients starting moderately severe" in html
    pdf = client.get("/patients/p-a1/report.pdf").content
    assert pdf.startswith(b"%PDF-")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    source = SCREENSHOTS / "patient-report-not-on-track.pdf"
    source.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(source), str(SCREENSHOTS / "patient-report-nott")],
        check=True,
        timeout=60,
    )
    assert (SCREENSHOTS / "patient-report-nott-1.png").stat().st_size > 10_000
