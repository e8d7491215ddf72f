"""The caseload's measurement-based-care marks and filters (DESIGN §8): "PHQ-9 due" / "GAD-7 due" in each
patient's own local calendar, agreeing with `measures-due`; "Not on track" from the stored results; and a
page that costs the same queries for 2 patients or 10."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from reports.models import MeasureStatus
from reports.selectors import measures_due
from tests.conftest import logged_in
from tests.factories import (
    CareAssignmentFactory,
    ClinicFactory,
    MembershipFactory,
    OutcomeResponseFactory,
    PatientFactory,
    TherapySessionFactory,
)
from tracking import selectors
from tracking.history import local_midnight, local_today
from tracking.models import Role
from tracking.selectors import CaseloadQuery

pytestmark = pytest.mark.django_db

# 15:00 on 15 June in London (the clinic's zone), already 02:00 on 16 June in Auckland: the two zones'
# "today" differ, so a rule read in the wrong zone shows.
NOW = datetime(2026, 6, 15, 14, 0, tzinfo=UTC)
ZONES = ("Europe/London", "Pacific/Auckland")


def _patient(clinic, therapist, player_id, zone=""):
    patient = PatientFactory(clinic=clinic, player_id=player_id, timezone=zone)
    CareAssignmentFactory(patient=patient, therapist=therapist)
    return patient


def _at(zone, days_ago, hour, minute=0):
    """A moment on the local day `days_ago` days before today in `zone`."""
    day = local_today(zone, NOW) - timedelta(days=days_ago)
    return local_midnight(day, zone) + timedelta(hours=hour, minutes=minute)


def _active(patient, zone):
    TherapySessionFactory(patient=patient, started_at=_at(zone, 1, 12))


def _given(patient, instrument, at, total=12):
    OutcomeResponseFactory(patient=patient, instrument=instrument, administered_at=at, total=total)


def _filtered(user, *filters, now=NOW):
    rows = selectors.caseload_rows(user, CaseloadQuery(filters=frozenset(filters)), now=now)
    return sorted(rows.values_list("player_id", flat=True))


def _marks(user, now=NOW):
    """Each row's due marks, as the caseload page decorates it: player id → {instrument: due_since}."""
    page = selectors.caseload_page(user, CaseloadQuery(), 1, per_page=100, now=now)
    marks = {}
    for row in page.object_list:
        marks[row.player_id] = {
            code: mark.due_since for code, mark in (("phq9", row.phq9_due), ("gad7", row.gad7_due)) if mark is not None
        }
    return marks


def _api(patients, now=NOW):
    return {p.player_id: {d.instrument: d.due_since for d in measures_due(p, now)} for p in patients}


@pytest.fixture
def cadence_caseload(clinic, therapist_a):
    """In each of two zones, for an active patient whose GAD-7 is recent: PHQ-9 given interval − 1 local
    days ago (late in the day) and interval days ago (late in the day), and never; and two patients who
    never had a PHQ-9, whose only session was on local day 29 (active) or 30 (inactive) before today."""
    assert clinic.measure_interval_days == 14
    patients = {}
    for zone in ZONES:
        own = "" if zone == clinic.timezone else zone  # London patients use the clinic's zone
        tag = zone.split("/")[1].lower()
        for name, days_ago in (("13d", 13), ("14d", 14)):
            patient = _patient(clinic, therapist_a, f"{tag}-{name}", own)
            _active(patient, zone)
            _given(patient, "phq9", _at(zone, days_ago, 23, 50))  # late: the zone decides the day
            _given(patient, "gad7", _at(zone, 2, 9))
            patients[patient.player_id] = patient
        never = _patient(clinic, therapist_a, f"{tag}-never", own)
        _active(never, zone)
        _given(never, "gad7", _at(zone, 2, 9))
        patients[never.player_id] = never
        for name, days_ago, hour in (("day29", 29, 0), ("day30", 30, 23)):
            # 00:10 on local day 29 (the window's first day) and 23:50 on local day 30 (just outside it)
            patient = _patient(clinic, therapist_a, f"{tag}-{name}", own)
            TherapySessionFactory(patient=patient, started_at=_at(zone, days_ago, hour, 10 if hour == 0 else 50))
            _given(patient, "gad7", _at(zone, 2, 9))
            patients[patient.player_id] = patient
    return patients


def test_phq9_due_filter_marks_and_the_api_agree_at_the_thresholds_in_two_zones(therapist_a, cadence_caseload):
    expected = {
        f"{tag}-{name}" for tag in ("london", "auckland") for name in ("14d", "never", "day29")
    }  # not 13d (a day early) and not day30 (inactive)
    assert set(_filtered(therapist_a, "phq9_due")) == expected

    api = _api(cadence_caseload.values())
    marks = _marks(therapist_a)
    assert marks == api  # the page's marks are the API's answer, patient by patient
    assert {pid for pid, due in api.items() if "phq9" in due} == expected
    assert _filtered(therapist_a, "gad7_due") == []  # GAD-7 was given two days ago: due for no one

    for zone in ZONES:
        tag = zone.split("/")[1].lower()
        today = local_today(zone, NOW)
        assert marks[f"{tag}-14d"] == {"phq9": today}  # due since today: its last local date + 14
        assert marks[f"{tag}-never"] == {"phq9": None}  # never given: due, with no date
        assert marks[f"{tag}-day30"] == {}  # inactive: nothing due, not even a never-given measure
    # Auckland's today is already the 16th, London's still the 15th.
    assert local_today("Pacific/Auckland", NOW) == local_today("Europe/London", NOW) + timedelta(days=1)


def test_a_day_later_the_thresholds_move_with_the_patients_calendar(therapist_a, cadence_caseload):
    later = NOW + timedelta(days=1)
    # 13d is now 14 days old (due); day29 has become day 30 (inactive); day30 stays inactive
    expected = {f"{tag}-{name}" for tag in ("london", "auckland") for name in ("13d", "14d", "never")}
    assert set(_filtered(therapist_a, "phq9_due", now=later)) == expected
    assert _marks(therapist_a, now=later) == _api(cadence_caseload.values(), now=later)


def test_the_clinics_interval_counts_and_each_clinic_uses_its_own(clinic, therapist_a, cadence_caseload):
    clinic.measure_interval_days = 7
    clinic.save()
    # with 7 days, the GAD-7 of two days ago is not due yet; both PHQ-9s (13 and 14 days) are
    assert set(_filtered(therapist_a, "phq9_due")) == {
        f"{tag}-{name}" for tag in ("london", "auckland") for name in ("13d", "14d", "never", "day29")
    }
    # a second clinic of the same therapist, interval 2, in New York: its GAD-7 of two days ago is due
    other = ClinicFactory(slug="eastside", timezone="America/New_York", measure_interval_days=2)
    MembershipFactory(clinic=other, user=therapist_a, role=Role.THERAPIST)
    del therapist_a._clinic_roles  # the roles are cached on the user object, as for one request
    east = _patient(other, therapist_a, "east-2d")
    _active(east, "America/New_York")
    _given(east, "gad7", _at("America/New_York", 2, 23, 50))
    _given(east, "phq9", _at("America/New_York", 1, 9))
    east_early = _patient(other, therapist_a, "east-1d")
    _active(east_early, "America/New_York")
    _given(east_early, "gad7", _at("America/New_York", 1, 0, 10))
    _given(east_early, "phq9", _at("America/New_York", 1, 9))
    assert _filtered(therapist_a, "gad7_due") == ["east-2d"]
    assert _filtered(therapist_a, "gad7_due", "phq9_due") == []  # filters combine: both due
    everyone = [*cadence_caseload.values(), east, east_early]
    assert _marks(therapist_a) == _api(everyone)


def test_the_due_filter_combines_with_the_others_and_the_search(client, therapist_a, cadence_caseload):
    cadence_caseload["london-14d"].risk_flag = True
    cadence_caseload["london-14d"].save()
    cadence_caseload["london-13d"].risk_flag = True
    cadence_caseload["london-13d"].save()
    assert _filtered(therapist_a, "phq9_due", "at_risk") == ["london-14d"]
    query = CaseloadQuery(filters=frozenset({"phq9_due"}), search="auck")
    rows = selectors.caseload_rows(therapist_a, query, now=NOW)
    assert sorted(rows.values_list("player_id", flat=True)) == ["auckland-14d", "auckland-day29", "auckland-never"]


@time_machine.travel(NOW, tick=False)
def test_the_page_marks_due_measures_with_their_date_and_offers_the_filters(therapist_a, cadence_caseload):
    client = logged_in(therapist_a)
    html = client.get("/").content.decode()
    for label in ("PHQ-9 due", "GAD-7 due", "Not on track"):
        assert f">{label}</a>" in html  # the filter chips
    assert 'href="?sort=attention&amp;filter=phq9_due"' in html
    response = client.get("/?filter=phq9_due")
    rows = response.context["page"].object_list
    assert sorted(r.player_id for r in rows) == sorted(_filtered(therapist_a, "phq9_due"))
    html = response.content.decode()
    assert html.count('data-mark="due"') == len(rows)  # one mark each: their GAD-7 is recent
    for zone in ZONES:
        today = local_today(zone, NOW)
        last = today - timedelta(days=14)
        assert (
            f'title="PHQ-9 due since {today.isoformat()}: last given {last.isoformat()}, '
            'and the clinic&#x27;s interval is 14 days."' in html
        )
    assert html.count('title="PHQ-9 has never been given to this patient."') == 4  # never, day29 × 2 zones


# ----- not on track ---------------------------------------------------------------------------------


def _status(patient, instrument, not_on_track, basis="", **trajectory):
    return MeasureStatus.objects.create(
        patient=patient,
        instrument=instrument,
        not_on_track=not_on_track,
        basis=basis,
        intake_band="moderately_severe",
        trajectory=trajectory,
        computed_at=timezone.now(),
    )


REFERENCE = {"week": 8, "latest": 17, "n_patients": 12, "n_scores": 30, "p25": 9.0, "p50": 12.0, "p75": 14.5}
NO_REFERENCE = {"week": 9, "latest": 16, "n_patients": None, "n_scores": None, "p25": None, "p50": None, "p75": None}


@pytest.fixture
def statuses(clinic, therapist_a, therapist_b):
    above = _patient(clinic, therapist_a, "nt-reference")
    _status(above, "phq9", True, "clinic_reference", **REFERENCE)
    _status(above, "gad7", False, "clinic_reference", week=8, latest=5, n_patients=11, n_scores=28, p75=9.0)
    flat = _patient(clinic, therapist_a, "nt-flat")
    _status(flat, "gad7", True, "no_reliable_improvement", **NO_REFERENCE)
    on_track = _patient(clinic, therapist_a, "nt-on-track")
    _status(on_track, "phq9", False, "no_reliable_improvement", week=7, latest=6)
    unknown = _patient(clinic, therapist_a, "nt-unknown")
    _status(unknown, "phq9", None)
    _patient(clinic, therapist_a, "nt-none")
    someone_elses = _patient(clinic, therapist_b, "nt-other-therapist")
    _status(someone_elses, "phq9", True, "clinic_reference", **REFERENCE)
    return above, flat


def test_not_on_track_filter_lists_exactly_the_patients_with_a_true_result(therapist_a, statuses):
    assert _filtered(therapist_a, "not_on_track") == ["nt-flat", "nt-reference"]


def test_not_on_track_marks_state_their_basis_and_inputs(therapist_a, statuses):
    page = selectors.caseload_page(therapist_a, CaseloadQuery(filters=frozenset({"not_on_track"})), 1, now=NOW)
    by_id = {row.player_id: row for row in page.object_list}
    above, flat = by_id["nt-reference"], by_id["nt-flat"]
    assert above.phq9_off_track.basis == "clinic_reference" and above.gad7_off_track is None
    assert above.phq9_off_track.explanation == (
        "PHQ-9 not on track. Week 8: 17 is above the clinic's 75th percentile 14.5 (12 patients, 30 scores)."
    )
    assert flat.phq9_off_track is None and flat.gad7_off_track.basis == "no_reliable_improvement"
    assert flat.gad7_off_track.explanation == (
        "GAD-7 not on track. Week 9: 16 is still at caseness (8 or more), with no reliable improvement "
        "since the first score (no clinic reference at this week)."
    )
    html = logged_in(therapist_a).get("/?filter=not_on_track").content.decode()
    assert html.count('data-mark="not-on-track"') == 2
    assert 'title="PHQ-9 not on track. Week 8: 17 is above the clinic&#x27;s 75th percentile 14.5' in html
    assert 'data-basis="no_reliable_improvement"' in html


def _caseload_of(clinic, therapist, n, start=0):
    for i in range(start, start + n):
        patient = _patient(clinic, therapist, f"q-{i:03d}")
        TherapySessionFactory(patient=patient, started_at=timezone.now() - timedelta(days=1))
        _given(patient, "phq9", timezone.now() - timedelta(days=20), total=18)
        _status(patient, "phq9", True, "clinic_reference", **REFERENCE)
        _status(patient, "gad7", True, "no_reliable_improvement", **NO_REFERENCE)


def test_the_marked_and_filtered_page_costs_the_same_queries_for_2_and_10_patients(
    clinic, therapist_a, django_assert_num_queries
):
    client = logged_in(therapist_a)
    client.get("/")  # the session's first request: not measured
    url = "/?filter=phq9_due&filter=gad7_due&filter=not_on_track&sort=phq9"
    # session, user, roles, the paginator's count, the (time zone, interval) pairs of each due filter (2),
    # the page of rows (marks and statuses in the same query), session save (2), the caseload.read audit
    # event (the next seq with the chain's head locked; the insert and the head's move: 2)
    for n, start in ((2, 0), (8, 2)):
        _caseload_of(clinic, therapist_a, n, start)
        with django_assert_num_queries(12):
            response = client.get(url)
        assert response.context["page"].paginator.count == start + n
        assert response.content.decode().count('data-mark="not-on-track"') == 2 * (start + n)
    # unfiltered, the marks cost nothing more than the page did before them
    with django_assert_num_queries(10):
        client.get("/?sort=phq9")
