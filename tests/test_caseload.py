"""The caseload page: one row per assigned patient, sorting, filters, search, a fixed number of queries."""

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.conftest import logged_in
from tests.factories import CareAssignmentFactory, OutcomeResponseFactory, PatientFactory
from tracking import selectors
from tracking.models import ProgressSummary
from tracking.selectors import CaseloadQuery


def add_patients(clinic, therapist, n: int, start: int = 0) -> list:
    patients = []
    for i in range(start, start + n):
        patient = CareAssignmentFactory(
            patient=PatientFactory(clinic=clinic, player_id=f"cl-{i:04d}"), therapist=therapist
        ).patient
        ProgressSummary.objects.create(
            patient=patient,
            computed_at=timezone.now(),
            local_date=timezone.now().date(),
            data={},
            current_streak_days=i % 9,
            sessions_this_week=i % 5,
            dropout_risk_score=round((i % 10) / 10, 1),
            last_active_day=timezone.now().date() - timedelta(days=i % 12),
        )
        OutcomeResponseFactory(
            patient=patient, instrument="phq9", total=14, administered_at=timezone.now() - timedelta(days=30)
        )
        OutcomeResponseFactory(
            patient=patient,
            instrument="phq9",
            total=14 + (i % 8) - 4,
            administered_at=timezone.now() - timedelta(days=1),
        )
        patients.append(patient)
    return patients


def queries_for(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def test_caseload_costs_the_same_queries_for_5_and_200_patients(clinic, therapist_a, django_assert_num_queries):
    client = logged_in(therapist_a)
    add_patients(clinic, therapist_a, 5)
    client.get("/")  # first request of the session: not part of the measure
    few = queries_for(client, "/?sort=-risk")
    add_patients(clinic, therapist_a, 195, start=5)
    many = queries_for(client, "/?sort=-risk")
    assert few == many
    # session, user, roles, the paginator's count, the page of rows (analytics summary, first and latest
    # questionnaire totals and open alerts in one query), session save (2), and its caseload.read audit
    # event (the next seq with the chain's head locked; the insert and the head's move: 2)
    with django_assert_num_queries(10):
        client.get("/?sort=phq9")


def test_sort_filter_and_pagination(clinic, therapist_a, patient_b):
    client = logged_in(therapist_a)
    add_patients(clinic, therapist_a, 30)
    response = client.get("/?sort=-risk")
    risks = [p.summary.dropout_risk_score for p in response.context["page"].object_list]
    assert risks == sorted(risks, reverse=True) and len(risks) == 25
    assert response.context["page"].paginator.count == 30
    assert 'href="?sort=-risk&amp;page=2"' in response.content.decode()

    at_risk = client.get("/?filter=at_risk").context["page"].object_list
    assert at_risk and all(p.summary.dropout_risk_score > 0.6 or p.risk_flag for p in at_risk)

    inactive = client.get("/?filter=inactive_7d").context["page"].paginator.count
    expected = sum(1 for i in range(30) if i % 12 >= 7)
    assert inactive == expected

    deteriorating = client.get("/?filter=deteriorating").context["page"].object_list
    assert {p.player_id for p in deteriorating} == {f"cl-{i:04d}" for i in range(30) if (i % 8) - 4 >= 6}
    by_phq9 = client.get("/?sort=phq9").context["page"].object_list
    assert [p.phq9_last for p in by_phq9] == sorted(p.phq9_last for p in by_phq9)


def test_deteriorating_means_a_reliable_rise(clinic, therapist_a):
    client = logged_in(therapist_a)
    steady, worse = (
        CareAssignmentFactory(patient=PatientFactory(clinic=clinic, player_id=p), therapist=therapist_a).patient
        for p in ("steady", "worse")
    )
    for patient, last in ((steady, 15), (worse, 16)):  # PHQ-9 reliable change is 6 points
        OutcomeResponseFactory(patient=patient, total=10, administered_at=timezone.now() - timedelta(days=20))
        OutcomeResponseFactory(patient=patient, total=last, administered_at=timezone.now() - timedelta(days=1))
    page = client.get("/?filter=deteriorating").context["page"]
    assert [p.player_id for p in page.object_list] == ["worse"]
    assert page.object_list[0].phq9.reliable == "deterioration" and page.object_list[0].phq9.band == "moderately_severe"


@pytest.mark.parametrize("bad", ["?sort=password", "?sort=-", "?filter=everything", "?page=999"])
def test_unknown_parameters_fall_back_safely(clinic, therapist_a, patient_a, bad):
    assert logged_in(therapist_a).get("/" + bad).status_code == 200


def test_search_by_player_id_keeps_the_term_out_of_the_url(clinic, therapist_a):
    client = logged_in(therapist_a)
    add_patients(clinic, therapist_a, 12)
    response = client.post("/caseload/search", {"q": "cl-001"})
    assert response.status_code == 302 and response["Location"] == "/"
    page = client.get("/").context["page"]
    assert sorted(p.player_id for p in page.object_list) == [f"cl-{i:04d}" for i in range(10, 12)]
    client.post("/caseload/search", {"clear": "1"})
    assert client.get("/").context["page"].paginator.count == 12


def test_dropout_risk_is_shown_with_a_text_label_not_only_colour(clinic, therapist_a):
    client = logged_in(therapist_a)
    add_patients(clinic, therapist_a, 10)
    html = client.get("/?sort=-risk").content.decode()
    assert "risk--high" in html and ">High <" in html.replace("\n", "")
    assert ">Low <" in html.replace("\n", "") and ">Medium <" in html.replace("\n", "")


@pytest.mark.parametrize(
    ("tz_name", "local_now", "utc_day"),
    [
        # UTC−5 (no daylight saving): a minute before local midnight, UTC is already on the next day.
        ("America/Bogota", (2026, 3, 9, 23, 59), (2026, 3, 10)),
        # UTC+10 (no daylight saving): just after local midnight, UTC is still on the day before.
        ("Australia/Brisbane", (2026, 3, 10, 0, 0), (2026, 3, 9)),
    ],
)
@pytest.mark.parametrize(("days_ago", "inactive"), [(7, True), (6, False), (0, False)])
def test_not_active_for_7_days_counts_the_patients_own_local_days(
    clinic, therapist_a, tz_name, local_now, utc_day, days_ago, inactive
):
    """ "Not active for 7 days": no active day in the 7 local days ending today (today and the 6 before),
    in the patient's own calendar, whatever the UTC date is at that moment."""

    now = datetime(*local_now, tzinfo=ZoneInfo(tz_name))
    local_today = now.date()
    assert now.astimezone(ZoneInfo("UTC")).date() == date(*utc_day) != local_today
    patient = CareAssignmentFactory(
        patient=PatientFactory(clinic=clinic, player_id="tz-1", timezone=tz_name), therapist=therapist_a
    ).patient
    ProgressSummary.objects.create(
        patient=patient,
        computed_at=timezone.now(),
        local_date=local_today,
        data={},
        last_active_day=local_today - timedelta(days=days_ago),
    )
    query = CaseloadQuery(filters=frozenset({"inactive_7d"}))
    found = list(selectors.caseload_rows(therapist_a, query, now=now).values_list("player_id", flat=True))
    assert found == (["tz-1"] if inactive else [])
