"""The outcome pages: patient chart, caseload outcomes, clinic report, their CSV exports and print pages."""

import csv
import json
import re
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest

from reports.exports import patient_csv_header
from tests.conftest import logged_in
from tests.factories import (
    CareAssignmentFactory,
    MembershipFactory,
    OutcomeResponseFactory,
    PatientFactory,
    ProgressMarkerFactory,
    TherapySessionFactory,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
PHQ_ITEMS = {
    18: [3, 3, 2, 2, 2, 2, 2, 2, 0],
    11: [2, 2, 1, 1, 1, 1, 1, 1, 1],
    6: [1, 1, 1, 1, 1, 1, 0, 0, 0],
}


def items(values):
    return {f"item_{n}": v for n, v in enumerate(values, start=1)}


def scores(patient, phq=(18, 11, 6), gad=(14, 9, 5), prefix=""):
    prefix = prefix or patient.player_id
    for n, (p, g) in enumerate(zip(phq, gad, strict=True)):
        when = T0 + timedelta(days=28 * n)
        extra = items(PHQ_ITEMS[p]) if p in PHQ_ITEMS else {}
        OutcomeResponseFactory(
            patient=patient, response_id=f"{prefix}-phq-{n}", instrument="phq9", total=p, administered_at=when, **extra
        )
        OutcomeResponseFactory(
            patient=patient, response_id=f"{prefix}-gad-{n}", instrument="gad7", total=g, administered_at=when
        )
    session = TherapySessionFactory(patient=patient, started_at=T0 + timedelta(days=1), duration_minutes=25)
    ProgressMarkerFactory(session=session, type="skill_acquired")


def caseload_patient(clinic, therapist, player_id):
    patient = CareAssignmentFactory(
        patient=PatientFactory(clinic=clinic, player_id=player_id), therapist=therapist
    ).patient
    scores(patient)
    return patient


def text(response) -> str:
    return response.content.decode()


def assert_never_called_safe(html: str):
    assert not re.search(r"\bsafe\b", html, re.IGNORECASE)


# ----- the patient's outcome chart ---------------------------------------------------------------------


def test_patient_page_has_a_chart_and_a_table_per_instrument(therapist_a, patient_a):
    scores(patient_a)
    html = text(logged_in(therapist_a).get("/patients/p-a1/outcomes/"))
    for code in ("phq9", "gad7"):
        assert f'data-chart="outcomes" data-chart-data="outcome-{code}-data"' in html
        assert f'id="outcome-{code}-table"' in html
    data = json.loads(
        re.search(r'<script id="outcome-phq9-data" type="application/json">(.*?)</script>', html).group(1)
    )
    assert [p["total"] for p in data["points"]] == [18, 11, 6]
    # Reliable change from the first score (18): 11 and 6 are both 6 or more below it.
    assert [p["step"] for p in data["points"]] == [None, "improvement", "improvement"]
    assert [p["item9"] for p in data["points"]] == [0, 1, 0]
    assert data["caseness_threshold"] == 10 and [b["name"] for b in data["bands"]][-1] == "severe"
    assert "plotly-strict-4.1.1.min.js" in html and "js/charts.js" in html
    assert "<script>" not in html  # no inline script (CSP)


def test_patient_page_shows_item9_answers_and_never_calls_a_zero_safe(therapist_a, patient_a):
    scores(patient_a, phq=(18, 11, 9))  # the last PHQ-9 has a total only
    html = text(logged_in(therapist_a).get("/patients/p-a1/outcomes/"))
    table = html[html.index('id="outcome-phq9-table"') :]
    table = table[: table.index("</table>")]
    assert '<span class="badge badge--risk">◆ 1</span> <span class="small">above 0</span>' in table
    assert "Not recorded (total only)" in table
    assert "not</strong> evidence of safety" in html
    assert_never_called_safe(html)


def test_patient_page_classification(therapist_a, patient_a):
    scores(patient_a)
    html = text(logged_in(therapist_a).get("/patients/p-a1/outcomes/"))
    assert "18 (Moderately severe)" in html and "6 (Mild)" in html
    assert "−12" in html


def test_patient_page_without_responses(therapist_a, patient_a):
    html = text(logged_in(therapist_a).get("/patients/p-a1/outcomes/"))
    assert "No PHQ-9 responses yet." in html and "No GAD-7 responses yet." in html
    assert "data-chart=" not in html


def test_patient_page_times_are_in_the_patients_time_zone(therapist_a, patient_a):
    patient_a.timezone = "Asia/Tokyo"
    patient_a.save()
    OutcomeResponseFactory(patient=patient_a, total=12, administered_at=datetime(2026, 1, 5, 20, 0, tzinfo=UTC))
    html = text(logged_in(therapist_a).get("/patients/p-a1/outcomes/"))
    assert "2026-01-06 05:00" in html and "Asia/Tokyo" in html


# ----- the therapist's caseload outcomes -----------------------------------------------------------------


@pytest.fixture
def caseload(clinic, therapist_a, therapist_b):
    patients = [caseload_patient(clinic, therapist_a, f"p-a{n}") for n in (1, 2)]
    worse = CareAssignmentFactory(
        patient=PatientFactory(clinic=clinic, player_id="p-a3"), therapist=therapist_a
    ).patient
    scores(worse, phq=(6, 11, 18), gad=(5, 9, 14))
    CareAssignmentFactory(patient=PatientFactory(clinic=clinic, player_id="p-a4"), therapist=therapist_a)  # no scores
    caseload_patient(clinic, therapist_b, "p-b1")
    return patients


def test_caseload_outcomes_counts_beside_rates(therapist_a, caseload):
    html = text(logged_in(therapist_a).get("/outcomes/"))
    assert "4 patients" in html
    # p-a1 and p-a2 recover reliably; p-a3 deteriorates; all three paired; two at caseness at start
    recovery = html[html.index("Recovery</h3>") :][:300]
    assert "<strong>2</strong> of 2" in recovery and "100.0%" in recovery
    deterioration = html[html.index("Reliable deterioration</h3>") :][:300]
    assert "<strong>1</strong> of 3" in deterioration and "33.3%" in deterioration
    assert "95% CI" in html and 'id="severity-phq9"' in html and 'id="severity-gad7"' in html
    assert "Not a clinical outcome" in html
    assert "No questionnaire in this period" in html  # p-a4
    for player_id in ("p-a1", "p-a2", "p-a3", "p-a4"):
        assert f'data-player-id="{player_id}"' in html
    assert "p-b1" not in html
    assert 'href="/patients/p-a1/outcomes/"' in html
    assert_never_called_safe(html)


def test_caseload_outcomes_date_filter(therapist_a, caseload):
    client = logged_in(therapist_a)
    html = text(client.get("/outcomes/?date_from=2026-01-20&date_to=2026-12-31"))
    assert "from 2026-01-20 to 2026-12-31" in html
    assert 'href="/outcomes/export.csv?date_from=2026-01-20&amp;date_to=2026-12-31"' in html
    # Each patient now has two scores per measure (days 28 and 56): p-a1 11→6 is not a reliable change.
    assert '<span class="nowrap">11 → 6</span>' in html


def test_caseload_outcomes_rejects_a_reversed_range(therapist_a, caseload):
    response = logged_in(therapist_a).get("/outcomes/?date_from=2026-03-01&date_to=2026-01-01")
    assert response.status_code == 400
    assert "The start date is after the end date." in text(response)
    assert logged_in(therapist_a).get("/outcomes/?date_from=yesterday").status_code == 400
    assert logged_in(therapist_a).get("/outcomes/export.csv?date_from=yesterday").status_code == 400


def test_caseload_export_csv(therapist_a, caseload):
    response = logged_in(therapist_a).get("/outcomes/export.csv")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="outcomes-caseload-all-time.csv"'
    assert response["Cache-Control"] == "no-store"
    rows = list(csv.DictReader(StringIO(text(response))))
    assert list(rows[0]) == [
        *patient_csv_header(),
        "questionnaire_in_period",
        "engagement_sessions",
        "engagement_minutes",
        "engagement_skills_acquired",
        "engagement_breakthroughs",
        "engagement_milestones",
    ]
    by_id = {r["player_id"]: r for r in rows}
    assert sorted(by_id) == ["p-a1", "p-a2", "p-a3", "p-a4"]
    assert (by_id["p-a1"]["phq9_first"], by_id["p-a1"]["phq9_last"], by_id["p-a1"]["reliable_recovery"]) == (
        "18",
        "6",
        "true",
    )
    assert by_id["p-a1"]["item9_alert"] == "true"
    assert by_id["p-a3"]["reliable_deterioration"] == "true"
    assert (by_id["p-a4"]["questionnaire_in_period"], by_id["p-a4"]["phq9_first"]) == ("false", "")
    assert (by_id["p-a1"]["engagement_sessions"], by_id["p-a1"]["engagement_minutes"]) == ("1", "25")


def test_caseload_export_guards_against_spreadsheet_formulas(clinic, therapist_a):
    caseload_patient(clinic, therapist_a, "=HYPERLINK(1)")
    rows = list(csv.reader(StringIO(text(logged_in(therapist_a).get("/outcomes/export.csv")))))
    assert rows[1][0] == "'=HYPERLINK(1)"


def test_caseload_export_filename_names_the_period(therapist_a, caseload):
    response = logged_in(therapist_a).get("/outcomes/export.csv?date_from=2026-01-01")
    assert response["Content-Disposition"] == 'attachment; filename="outcomes-caseload-2026-01-01-to-now.csv"'


def test_caseload_print_page(therapist_a, caseload):
    html = text(logged_in(therapist_a).get("/outcomes/print/?date_to=2026-12-31"))
    assert 'class="print-page"' in html and "Confidential" in html
    assert "up to 2026-12-31" in html
    assert 'data-player-id="p-a1"' in html and 'href="/patients/p-a1/outcomes/"' not in html
    assert 'href="/outcomes/?date_to=2026-12-31"' in html  # back to the same report
    assert "site-nav" not in html


# ----- the clinic report (aggregates only) ---------------------------------------------------------------


def test_clinic_report_shows_aggregates_only(clinic_admin, caseload, foreign_patient):
    scores(foreign_patient)
    html = text(logged_in(clinic_admin).get("/clinic/report/"))
    assert "Outcome report: Northside" in html
    # Counts of 1 to 4 patients are suppressed (reports.disclosure): 5 in the clinic is shown.
    assert "5 patients in the clinic, &lt;5 with a questionnaire" in html
    for player_id in ("p-a1", "p-a2", "p-a3", "p-a4", "p-b1", "p-r1", "data-player-id"):
        assert player_id not in html
    recovery = html[html.index("Recovery</h3>") :][:300]
    assert "<strong>&lt;5</strong> of &lt;5" in recovery
    assert "Not a clinical outcome" in html


def test_clinic_export_is_metric_value_rows_without_patients(clinic_admin, caseload):
    response = logged_in(clinic_admin).get("/clinic/report/export.csv?date_from=2026-01-01&date_to=2026-06-30")
    assert response["Content-Disposition"] == 'attachment; filename="outcomes-northside-2026-01-01-to-2026-06-30.csv"'
    body = text(response)
    assert "p-a1" not in body and "p-b1" not in body
    metrics = dict(csv.reader(StringIO(body)))
    assert metrics.pop("metric") == "value"
    assert metrics["period.from"] == "2026-01-01"
    # 4 patients with scores, 3 recovered: each a count of fewer than 5, so suppressed.
    assert metrics["cohort.n_patients"] == "<5"
    assert metrics["cohort.recovered"] == "<5" and metrics["cohort.n_caseness_at_start"] == "<5"
    assert metrics["cohort.recovery_rate"] == "<5"
    assert metrics["cohort.phq9.severity_first.moderately_severe"] == "<5"
    assert metrics["cohort.phq9.effect_size.n"] == "<5" and metrics["cohort.phq9.mean_first"] == "<5"
    assert metrics["engagement.sessions"] == "4"  # sessions are not patients


def test_clinic_print_page(clinic_admin, caseload):
    html = text(logged_in(clinic_admin).get("/clinic/report/print/"))
    assert "Outcome report: Northside" in html and "Aggregates only" in html
    assert "p-a1" not in html


def test_admin_of_two_clinics_picks_one(clinic_admin, other_clinic, caseload, foreign_patient):

    MembershipFactory(user=clinic_admin, clinic=other_clinic, role="clinic_admin")
    scores(foreign_patient)
    client = logged_in(clinic_admin)
    assert "Outcome report: Northside" in text(client.get("/clinic/report/"))
    html = text(client.get("/clinic/report/?clinic=riverside"))
    assert "Outcome report: Riverside" in html and "&lt;5 patients in the clinic" in html
    assert "clinic=riverside" in html  # kept in the export link


# ----- query counts: the same for few and many patients ------------------------------------------------


def test_caseload_pages_query_count_does_not_grow(clinic, therapist_a, django_assert_num_queries):
    client = logged_in(therapist_a)
    caseload_patient(clinic, therapist_a, "q-0")
    # session, user, memberships, patients, responses, references, sessions, markers, milestones + session
    # save (3)
    # + the audit event: the patients it names, the next seq with the chain's head locked, the insert and
    # the head's move
    for url in ("/outcomes/", "/outcomes/export.csv", "/outcomes/print/"):
        with django_assert_num_queries(15):
            assert client.get(url).status_code == 200
    for n in range(1, 30):
        caseload_patient(clinic, therapist_a, f"q-{n}")
    for url in ("/outcomes/", "/outcomes/export.csv?date_from=2025-01-01", "/outcomes/print/"):
        with django_assert_num_queries(15):
            assert client.get(url).status_code == 200


def test_clinic_report_query_count_does_not_grow(clinic, clinic_admin, therapist_a, django_assert_num_queries):
    client = logged_in(clinic_admin)
    caseload_patient(clinic, therapist_a, "q-0")
    # + the admin's clinics for the form
    with django_assert_num_queries(12):
        assert client.get("/clinic/report/").status_code == 200
    for n in range(1, 30):
        caseload_patient(clinic, therapist_a, f"q-{n}")
    with django_assert_num_queries(12):
        assert client.get("/clinic/report/").status_code == 200
    # The exports are audited: the next seq with the chain's head locked, the insert and the head's move.
    for url in ("/clinic/report/export.csv", "/clinic/report/print/?date_from=2025-01-01"):
        with django_assert_num_queries(14):
            assert client.get(url).status_code == 200


def test_patient_page_query_count_does_not_grow(therapist_a, patient_a, django_assert_num_queries):
    client = logged_in(therapist_a)
    scores(patient_a)
    # session, user, memberships, patient, assignment check, responses, references + session save (3) + the audit
    # event (the next seq with the chain's head locked; the insert and the head's move)
    with django_assert_num_queries(12):
        client.get("/patients/p-a1/outcomes/")
    for n in range(20):
        OutcomeResponseFactory(
            patient=patient_a, instrument="gad7", total=n % 21, administered_at=T0 + timedelta(days=n)
        )
    with django_assert_num_queries(12):
        assert client.get("/patients/p-a1/outcomes/").status_code == 200
