"""`manage.py effectiveness_report`, the report selectors and the outcome read API (DESIGN §5, §6)."""

import csv
import json
from datetime import UTC, date, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from reports import selectors
from reports.exports import patient_csv_header
from reports.outcomes import MEASURE_KEYS, PATIENT_KEYS
from tests.conftest import logged_in
from tests.factories import (
    CareAssignmentFactory,
    MembershipFactory,
    OutcomeResponseFactory,
    PatientFactory,
    ProgressMarkerFactory,
    TherapySessionFactory,
)
from tracking.models import Milestone, Patient

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "outcomes_cohort.json").read_text())
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def load_fixture(clinic, tmp_path):
    """The hand-classified cohort, stored through `import_outcomes` (so the file path is exercised too)."""
    path = tmp_path / "fixture.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["player_id", "response_id", "instrument", "administered_at", "total", "items"])
        for patient in FIXTURE["patients"]:
            for r in patient["responses"]:
                items = " ".join(map(str, r["items"])) if r["items"] is not None else ""
                writer.writerow(
                    [
                        patient["player_id"],
                        r["response_id"],
                        r["instrument"],
                        r["administered_at"],
                        r["total"] if r["total"] is not None else "",
                        items,
                    ]
                )
    call_command("import_outcomes", str(path), "--clinic", clinic.slug, stdout=StringIO())


def report(*args) -> str:
    out = StringIO()
    call_command("effectiveness_report", *args, stdout=out)
    return out.getvalue()


def report_json(*args) -> dict:
    return json.loads(report(*args, "--format", "json"))


# ----- the command against the hand-classified fixture -----------------------------------------------


def test_report_matches_the_hand_classified_fixture_field_by_field(clinic, tmp_path):
    load_fixture(clinic, tmp_path)
    data = report_json("--clinic", clinic.slug)
    assert set(data) == {"patients", "cohort"}
    got = {p["player_id"]: p for p in data["patients"]}
    assert sorted(got) == sorted(p["player_id"] for p in FIXTURE["patients"])
    for patient in FIXTURE["patients"]:
        expected, actual = patient["expected"], got[patient["player_id"]]
        assert list(actual) == list(PATIENT_KEYS)
        for key in PATIENT_KEYS:
            if key in ("phq9", "gad7"):
                for measure_key in MEASURE_KEYS:
                    assert actual[key][measure_key] == expected[key][measure_key], (
                        patient["player_id"],
                        key,
                        measure_key,
                    )
            else:
                assert actual[key] == expected[key], (patient["player_id"], key)
    for key, value in FIXTURE["expected_cohort"].items():
        assert data["cohort"][key] == value, key


def test_report_counts_the_responses_per_measure(clinic, tmp_path):
    load_fixture(clinic, tmp_path)
    cohort = report_json("--clinic", clinic.slug)["cohort"]
    responses = [r for p in FIXTURE["patients"] for r in p["responses"]]
    assert cohort["phq9"]["n_responses"] == sum(1 for r in responses if r["instrument"] == "phq9")
    assert cohort["gad7"]["n_responses"] == sum(1 for r in responses if r["instrument"] == "gad7")


def test_csv_has_one_flattened_row_per_patient(clinic, tmp_path):
    load_fixture(clinic, tmp_path)
    rows = list(csv.DictReader(StringIO(report("--clinic", clinic.slug, "--format", "csv"))))
    assert len(rows) == len(FIXTURE["patients"])
    assert list(rows[0]) == patient_csv_header()
    first = next(r for r in rows if r["player_id"] == "fx-01")
    assert (first["phq9_first"], first["phq9_last"], first["phq9_change"]) == ("18", "6", "-12")
    assert (first["gad7_severity_first"], first["recovery"], first["item9_alert"]) == ("moderate", "true", "false")
    single = next(r for r in rows if r["player_id"] == "fx-06")
    assert (single["phq9_paired"], single["phq9_change"], single["recovery"]) == ("false", "", "")
    no_gad = next(r for r in rows if r["player_id"] == "fx-07")
    assert no_gad["gad7_first"] == "" and no_gad["caseness_at_start"] == ""


def test_one_patient(clinic, tmp_path):
    load_fixture(clinic, tmp_path)
    data = report_json("--clinic", clinic.slug, "--patient", "fx-04")
    fx04 = next(p for p in FIXTURE["patients"] if p["player_id"] == "fx-04")
    (got,) = data["patients"]
    for measure in ("phq9", "gad7"):  # §8's not-on-track keys are tested in tests/test_expected_recovery.py
        assert {"not_on_track", "not_on_track_basis", "trajectory"} <= set(got[measure])
        got[measure] = {k: v for k, v in got[measure].items() if k in MEASURE_KEYS}
    assert got == fx04["expected"]
    assert data["cohort"]["n_patients"] == 1


def test_one_patient_without_any_response_is_reported_with_nulls(clinic):
    PatientFactory(clinic=clinic, player_id="quiet")
    data = report_json("--clinic", clinic.slug, "--patient", "quiet")
    assert data["patients"][0]["phq9"]["first"] is None
    assert data["patients"][0]["recovery"] is None
    assert data["cohort"]["n_patients"] == 1


def test_therapist_caseload(clinic, therapist_a, therapist_b, tmp_path):
    load_fixture(clinic, tmp_path)
    for player_id in ("fx-01", "fx-02", "fx-03"):
        CareAssignmentFactory(patient=Patient.objects.get(clinic=clinic, player_id=player_id), therapist=therapist_a)
    CareAssignmentFactory(patient=Patient.objects.get(clinic=clinic, player_id="fx-04"), therapist=therapist_b)
    data = report_json("--clinic", clinic.slug, "--therapist", therapist_a.username)
    assert [p["player_id"] for p in data["patients"]] == ["fx-01", "fx-02", "fx-03"]
    assert data["cohort"]["n_patients"] == 3
    assert data["cohort"]["recovered"] == 2  # fx-01 and fx-02; fx-03 was not at caseness at start


def test_date_range_selects_responses_by_administration_date(clinic):
    patient = PatientFactory(clinic=clinic, player_id="p-1")  # clinic time zone: Europe/London
    for day, phq, gad in ((0, 18, 14), (30, 12, 10), (60, 6, 5)):
        when = T0 + timedelta(days=day)
        OutcomeResponseFactory(patient=patient, instrument="phq9", total=phq, administered_at=when)
        OutcomeResponseFactory(patient=patient, instrument="gad7", total=gad, administered_at=when)
    everything = report_json("--clinic", clinic.slug)["patients"][0]
    assert (everything["phq9"]["first"], everything["phq9"]["last"]) == (18, 6)
    later = report_json("--clinic", clinic.slug, "--from", "2026-02-01")["patients"][0]
    assert (later["phq9"]["first"], later["phq9"]["last"], later["gad7"]["change"]) == (12, 6, -5)
    early = report_json("--clinic", clinic.slug, "--to", "2026-02-04")["patients"][0]
    assert (early["phq9"]["first"], early["phq9"]["last"]) == (18, 12)
    nothing = report_json("--clinic", clinic.slug, "--from", "2026-06-01")
    assert nothing["patients"] == [] and nothing["cohort"]["n_patients"] == 0


def test_date_range_uses_the_clinics_calendar(clinic):
    patient = PatientFactory(clinic=clinic, player_id="p-1")
    # 23:30 UTC on 30 June is 00:30 on 1 July in London (summer time).
    OutcomeResponseFactory(patient=patient, total=12, administered_at=datetime(2026, 6, 30, 23, 30, tzinfo=UTC))
    assert report_json("--clinic", clinic.slug, "--from", "2026-07-01")["cohort"]["n_patients"] == 1
    assert report_json("--clinic", clinic.slug, "--to", "2026-06-30")["cohort"]["n_patients"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--clinic", "nowhere"], "No clinic with slug 'nowhere'"),
        (["--clinic", "northside", "--patient", "nobody"], "No patient 'nobody' in clinic northside"),
        (["--clinic", "northside", "--therapist", "nobody"], "No user 'nobody'"),
        (["--clinic", "northside", "--therapist", "admin.north"], "not a therapist of clinic northside"),
        (["--clinic", "northside", "--from", "01/02/2026"], "not a date"),
        (["--clinic", "northside", "--from", "2026-03-01", "--to", "2026-02-01"], "is after --to"),
    ],
)
def test_bad_input_is_a_clear_error(clinic, clinic_admin, args, message):
    with pytest.raises(CommandError, match=message):
        report(*args)


def test_another_clinics_patient_is_unknown(clinic, foreign_patient):
    with pytest.raises(CommandError, match="No patient 'p-r1' in clinic northside"):
        report("--clinic", clinic.slug, "--patient", foreign_patient.player_id)


# ----- the cohort report selector: engagement side and query counts -----------------------------------


def make_patient(clinic, therapist, n, *, sessions=2):
    patient = CareAssignmentFactory(
        patient=PatientFactory(clinic=clinic, player_id=f"c-{n:03d}"), therapist=therapist
    ).patient
    OutcomeResponseFactory(patient=patient, instrument="phq9", total=15, administered_at=T0)
    OutcomeResponseFactory(
        patient=patient,
        instrument="phq9",
        total=8,
        administered_at=T0 + timedelta(days=40),
        item_1=1,
        item_2=1,
        item_3=1,
        item_4=1,
        item_5=1,
        item_6=1,
        item_7=1,
        item_8=0,
        item_9=1,
    )
    OutcomeResponseFactory(patient=patient, instrument="gad7", total=10, administered_at=T0)
    OutcomeResponseFactory(patient=patient, instrument="gad7", total=5, administered_at=T0 + timedelta(days=40))
    for s in range(sessions):
        session = TherapySessionFactory(patient=patient, started_at=T0 + timedelta(days=s), duration_minutes=15)
        ProgressMarkerFactory(session=session, type="skill_acquired")
    ProgressMarkerFactory(session=session, type="breakthrough")
    ProgressMarkerFactory(session=session, type="insight")
    Milestone.objects.create(patient=patient, family="sessions", threshold=5, title="5 Sessions", achieved_at=T0)
    return patient


def test_cohort_report_engagement_side(clinic, therapist_a):
    for n in range(3):
        make_patient(clinic, therapist_a, n)
    PatientFactory(clinic=clinic, player_id="not-mine")
    report = selectors.caseload_report(therapist_a)
    assert report["n_in_scope"] == report["n_with_scores"] == 3
    assert report["engagement"] == {
        "sessions": 6,
        "minutes": 90,
        "skills_acquired": 6,
        "breakthroughs": 3,
        "milestones": 3,
        "n_patients": 3,
        "active_patients": 3,
    }
    assert report["cohort"]["recovered"] == 3 and report["cohort"]["item9_alerts"] == 3
    row = report["rows"][0]
    assert row["player_id"] == "c-000" and row["engagement"]["sessions"] == 2


def test_cohort_report_engagement_is_limited_to_the_period(clinic, therapist_a):
    make_patient(clinic, therapist_a, 0, sessions=3)
    period = selectors.Period(date_from=date(2026, 1, 6), date_to=date(2026, 1, 6))
    report = selectors.caseload_report(therapist_a, period)
    assert report["engagement"]["sessions"] == 1
    assert report["engagement"]["milestones"] == 0
    assert report["n_with_scores"] == 0  # no questionnaire on that day
    assert report["rows"][0]["outcome"] is None


def test_clinic_report_has_no_patient_rows_or_ids(clinic, therapist_a):
    make_patient(clinic, therapist_a, 0)
    report = selectors.clinic_report(clinic)
    assert "rows" not in report and "patients" not in report
    assert "c-000" not in json.dumps(report)


def test_cohort_report_queries_do_not_grow_with_patients(clinic, therapist_a, django_assert_num_queries):
    make_patient(clinic, therapist_a, 0)
    therapist_a._clinic_roles = None
    with django_assert_num_queries(7):  # roles, patients, scores, references, sessions, markers, milestones
        selectors.caseload_report(therapist_a)
    for n in range(1, 25):
        make_patient(clinic, therapist_a, n)
    therapist_a._clinic_roles = None
    with django_assert_num_queries(7):
        report = selectors.caseload_report(therapist_a, selectors.Period(date_from=date(2025, 1, 1)))
    assert report["n_with_scores"] == 25


# ----- the read API ----------------------------------------------------------------------------------


@pytest.fixture
def scored_patient(patient_a):
    OutcomeResponseFactory(
        patient=patient_a,
        response_id="r-1",
        instrument="phq9",
        total=14,
        administered_at=T0,
        item_1=2,
        item_2=2,
        item_3=2,
        item_4=2,
        item_5=2,
        item_6=2,
        item_7=1,
        item_8=1,
        item_9=0,
    )
    OutcomeResponseFactory(patient=patient_a, response_id="r-2", instrument="gad7", total=9, administered_at=T0)
    OutcomeResponseFactory(
        patient=patient_a,
        response_id="r-3",
        instrument="phq9",
        total=7,
        administered_at=T0 + timedelta(days=30),
        item_1=1,
        item_2=1,
        item_3=1,
        item_4=1,
        item_5=1,
        item_6=1,
        item_7=0,
        item_8=0,
        item_9=1,
    )
    OutcomeResponseFactory(
        patient=patient_a, response_id="r-4", instrument="gad7", total=4, administered_at=T0 + timedelta(days=30)
    )
    return patient_a


def test_outcomes_api_lists_scores_with_bands(api, scored_patient):
    response = api.get(f"/api/v1/patients/{scored_patient.player_id}/outcomes")
    assert response.status_code == 200
    body = response.json()
    assert [s["response_id"] for s in body] == ["r-1", "r-2", "r-3", "r-4"]
    assert body[0] == {
        "response_id": "r-1",
        "instrument": "phq9",
        "administered_at": "2026-01-05T09:00:00Z",
        "total": 14,
        "band": "moderate",
        "at_caseness": True,
        "items": [2, 2, 2, 2, 2, 2, 1, 1, 0],
        "item9": 0,
    }
    assert body[1]["items"] is None and body[1]["item9"] is None and body[1]["band"] == "mild"
    assert body[2]["item9"] == 1 and body[2]["band"] == "mild"


def test_effectiveness_api_is_one_element_of_the_report(api, clinic, scored_patient):
    response = api.get(f"/api/v1/patients/{scored_patient.player_id}/effectiveness")
    assert response.status_code == 200
    assert response.json() == report_json("--clinic", clinic.slug, "--patient", scored_patient.player_id)["patients"][0]
    assert response.json()["recovery"] is True and response.json()["item9_alert"] is True


def test_therapist_reads_their_patients_outcomes(therapist_a, scored_patient):
    client = logged_in(therapist_a)
    assert client.get("/api/v1/patients/p-a1/outcomes").status_code == 200
    assert client.get("/api/v1/patients/p-a1/effectiveness").json()["player_id"] == "p-a1"


def test_token_of_another_clinic_is_404_like_a_missing_patient(other_token, scored_patient):
    client = Client(headers={"Authorization": f"Bearer {other_token}"})
    for endpoint in ("outcomes", "effectiveness"):
        foreign = client.get(f"/api/v1/patients/p-a1/{endpoint}")
        missing = client.get(f"/api/v1/patients/nobody/{endpoint}")
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json() == {"detail": "Not found."}


def test_api_errors_are_json(personas, scored_patient):
    assert Client().get("/api/v1/patients/p-a1/outcomes").json()["detail"]
    assert personas["clinic_admin"].get("/api/v1/patients/p-a1/effectiveness").status_code == 403
    assert personas["therapist_b"].get("/api/v1/patients/p-a1/effectiveness").json() == {"detail": "Not found."}
    bad = Client(headers={"Authorization": "Bearer nope"}).get("/api/v1/patients/p-a1/outcomes")
    assert bad.status_code == 401 and bad.json()["detail"]


def test_api_query_counts_do_not_grow_with_responses(api, patient_a, django_assert_num_queries):
    def add(n):
        for i in range(n):
            OutcomeResponseFactory(
                patient=patient_a, instrument="gad7", total=i % 21, administered_at=T0 + timedelta(days=i)
            )

    add(2)
    api.get("/api/v1/patients/p-a1/effectiveness")  # the token's last use is recorded once a minute at most
    # patient, responses, references; the audit event (2); the token comes from the cache (≤ 5 s)
    with django_assert_num_queries(5):
        assert api.get("/api/v1/patients/p-a1/effectiveness").status_code == 200
    add(60)
    with django_assert_num_queries(5):
        assert api.get("/api/v1/patients/p-a1/effectiveness").json()["gad7"]["paired"] is True
    with django_assert_num_queries(4):  # the outcomes need no reference
        assert len(api.get("/api/v1/patients/p-a1/outcomes").json()) == 62


def test_api_query_counts_for_a_therapist(therapist_a, patient_a, django_assert_num_queries):
    client = logged_in(therapist_a)
    OutcomeResponseFactory(patient=patient_a, total=10)
    # session, user, memberships, patient, assignment check, responses; then the idle-timeout session save
    # (SESSION_SAVE_EVERY_REQUEST: savepoint, update, release); the audit event (the next seq with the
    # chain's head locked; the insert and the head's move)
    with django_assert_num_queries(12):
        assert client.get("/api/v1/patients/p-a1/effectiveness").status_code == 200


def test_schema_documents_the_outcome_endpoints_and_their_errors(db):
    schema = Client().get("/api/schema/?format=json").json()
    for endpoint in ("outcomes", "effectiveness"):
        responses = schema["paths"][f"/api/v1/patients/{{player_id}}/{endpoint}"]["get"]["responses"]
        assert {"200", "401", "403", "404"} <= set(responses)


def test_period_follows_each_clinics_calendar_in_a_two_clinic_caseload(clinic, other_clinic, therapist_a):

    MembershipFactory(user=therapist_a, clinic=other_clinic, role="therapist")
    london = CareAssignmentFactory(
        patient=PatientFactory(clinic=clinic, player_id="ldn"), therapist=therapist_a
    ).patient
    new_york = CareAssignmentFactory(
        patient=PatientFactory(clinic=other_clinic, player_id="nyc"), therapist=therapist_a
    ).patient
    # 1 July in London (00:30 BST); 30 June in New York (22:30 EDT).
    OutcomeResponseFactory(patient=london, total=12, administered_at=datetime(2026, 6, 30, 23, 30, tzinfo=UTC))
    OutcomeResponseFactory(patient=new_york, total=12, administered_at=datetime(2026, 7, 1, 2, 30, tzinfo=UTC))
    therapist_a._clinic_roles = None
    june = selectors.caseload_report(therapist_a, selectors.Period(date_to=date(2026, 6, 30)))
    assert [p["player_id"] for p in june["patients"]] == ["nyc"]
    july = selectors.caseload_report(therapist_a, selectors.Period(date_from=date(2026, 7, 1)))
    assert [p["player_id"] for p in july["patients"]] == ["ldn"]
