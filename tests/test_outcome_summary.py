"""The stored per-patient outcome summary (issue 14, item 3): the first and latest totals and their count,
kept by database triggers, always equal to what the responses themselves say, whatever writes them; and
the caseload's deteriorating filter, which reads it, costs the same queries and plan for 100 and 500
patients."""

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from reports.instruments import INSTRUMENTS
from reports.models import OutcomeResponse, OutcomeSummary
from tests.conftest import logged_in
from tests.factories import CareAssignmentFactory, OutcomeResponseFactory, PatientFactory
from tracking import selectors
from tracking.selectors import CaseloadQuery

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


def expected() -> dict[tuple[int, str], tuple]:
    """The summaries recomputed from the responses, ordered as reports.outcomes orders them."""
    found: dict[tuple[int, str], list] = {}
    for r in OutcomeResponse.objects.order_by("administered_at", "response_id"):
        found.setdefault((r.patient_id, r.instrument), []).append(r)
    return {
        key: (rows[0].total, rows[0].administered_at, rows[-1].total, rows[-1].administered_at, len(rows))
        for key, rows in found.items()
    }


def stored() -> dict[tuple[int, str], tuple]:
    return {
        (s.patient_id, s.instrument): (s.first_total, s.first_at, s.latest_total, s.latest_at, s.count)
        for s in OutcomeSummary.objects.all()
    }


def test_a_first_response_makes_the_summary_and_later_ones_move_only_the_latest(clinic):
    patient = PatientFactory(clinic=clinic)
    OutcomeResponseFactory(patient=patient, total=18, administered_at=T0)
    OutcomeResponseFactory(patient=patient, total=9, administered_at=T0 + timedelta(days=14))
    summary = OutcomeSummary.objects.get(patient=patient, instrument="phq9")
    assert (summary.first_total, summary.latest_total, summary.count) == (18, 9, 2)
    assert summary.latest_at == T0 + timedelta(days=14)


def test_history_posted_late_becomes_the_first_score(clinic):
    patient = PatientFactory(clinic=clinic)
    OutcomeResponseFactory(patient=patient, total=12, administered_at=T0)
    OutcomeResponseFactory(patient=patient, total=20, administered_at=T0 - timedelta(seconds=1))
    summary = OutcomeSummary.objects.get(patient=patient)
    assert (summary.first_total, summary.latest_total, summary.count) == (20, 12, 2)


def test_a_tie_in_time_is_ordered_by_response_id(clinic):
    patient = PatientFactory(clinic=clinic)
    OutcomeResponseFactory(patient=patient, response_id="r-b", total=5, administered_at=T0)
    OutcomeResponseFactory(patient=patient, response_id="r-c", total=7, administered_at=T0)
    OutcomeResponseFactory(patient=patient, response_id="r-a", total=3, administered_at=T0)
    summary = OutcomeSummary.objects.get(patient=patient)
    assert (summary.first_response_id, summary.first_total) == ("r-a", 3)
    assert (summary.latest_response_id, summary.latest_total) == ("r-c", 7)


def test_each_instrument_has_its_own_summary(clinic):
    patient = PatientFactory(clinic=clinic)
    OutcomeResponseFactory(patient=patient, instrument="phq9", total=15, administered_at=T0)
    OutcomeResponseFactory(patient=patient, instrument="gad7", total=4, administered_at=T0 + timedelta(days=1))
    assert stored() == expected()
    assert {s.instrument: s.count for s in OutcomeSummary.objects.filter(patient=patient)} == {"phq9": 1, "gad7": 1}


def test_an_update_or_delete_rebuilds_the_summary_and_the_last_delete_removes_it(clinic):
    patient = PatientFactory(clinic=clinic)
    first = OutcomeResponseFactory(patient=patient, total=18, administered_at=T0)
    last = OutcomeResponseFactory(patient=patient, total=9, administered_at=T0 + timedelta(days=14))
    OutcomeResponse.objects.filter(pk=first.pk).update(administered_at=T0 + timedelta(days=30))
    assert OutcomeSummary.objects.get(patient=patient).latest_total == 18
    OutcomeResponse.objects.filter(pk=first.pk).update(instrument="gad7", total=6)
    assert stored() == expected()
    last.delete()
    assert not OutcomeSummary.objects.filter(patient=patient, instrument="phq9").exists()
    assert stored() == expected()


def test_deleting_a_patient_leaves_no_summary(clinic):
    patient = PatientFactory(clinic=clinic)
    OutcomeResponseFactory(patient=patient)
    patient.delete()
    assert not OutcomeSummary.objects.exists()


@pytest.mark.parametrize(
    ("instrument", "first", "latest", "worse"),
    [
        ("phq9", 8, 13, False),  # 5 points: below the PHQ-9's reliable change of 6
        ("phq9", 8, 14, True),  # exactly 6
        ("phq9", 8, 20, True),
        ("phq9", 14, 8, False),  # reliable improvement is not deterioration
        ("gad7", 5, 8, False),  # 3 points: below the GAD-7's reliable change of 4
        ("gad7", 5, 9, True),  # exactly 4
        ("gad7", 0, 21, True),
        ("gad7", 9, 5, False),
    ],
)
def test_the_stored_flag_is_a_reliable_deterioration_from_the_first_to_the_latest_total(
    clinic, instrument, first, latest, worse
):
    patient = PatientFactory(clinic=clinic)
    OutcomeResponseFactory(patient=patient, instrument=instrument, total=first, administered_at=T0)
    OutcomeResponseFactory(
        patient=patient, instrument=instrument, total=latest, administered_at=T0 + timedelta(days=14)
    )
    assert OutcomeSummary.objects.get(patient=patient).reliably_worse is worse


def test_the_stored_flag_covers_exactly_the_measures_the_caseload_tracks():
    # the filter reads the flag of every summary: it must be computed for the caseload's measures only
    assert set(INSTRUMENTS.values()) == set(selectors.CADENCE_INSTRUMENTS)


def test_the_stored_flag_follows_the_latest_total_and_a_late_first_score(clinic):
    patient = PatientFactory(clinic=clinic)
    OutcomeResponseFactory(patient=patient, total=8, administered_at=T0)
    OutcomeResponseFactory(patient=patient, total=14, administered_at=T0 + timedelta(days=14))
    assert OutcomeSummary.objects.get(patient=patient).reliably_worse
    later = OutcomeResponseFactory(patient=patient, total=9, administered_at=T0 + timedelta(days=28))
    assert not OutcomeSummary.objects.get(patient=patient).reliably_worse
    OutcomeResponse.objects.filter(pk=later.pk).update(total=15)  # a corrected latest total: 7 points worse
    assert OutcomeSummary.objects.get(patient=patient).reliably_worse
    # an earlier, higher score posted late becomes the first: 15 is not worse than 20
    OutcomeResponseFactory(patient=patient, total=20, administered_at=T0 - timedelta(days=7))
    assert not OutcomeSummary.objects.get(patient=patient).reliably_worse


def test_a_random_sequence_of_writes_always_matches_the_responses(clinic):
    rng = random.Random(14)
    patients = [PatientFactory(clinic=clinic) for _ in range(3)]
    made: list[int] = []
    for step in range(150):
        action = rng.random()
        if action < 0.6 or not made:
            response = OutcomeResponseFactory(
                patient=rng.choice(patients),
                instrument=rng.choice(["phq9", "gad7"]),
                response_id=f"rnd-{rng.randrange(40):02d}-{step}",
                total=rng.randrange(0, 22),
                administered_at=T0 + timedelta(hours=rng.randrange(10)),  # many ties in time
            )
            made.append(response.pk)
        elif action < 0.8:
            OutcomeResponse.objects.filter(pk=rng.choice(made)).update(
                total=rng.randrange(0, 22), administered_at=T0 + timedelta(hours=rng.randrange(10))
            )
        else:
            pk = made.pop(rng.randrange(len(made)))
            OutcomeResponse.objects.filter(pk=pk).delete()
        assert stored() == expected(), f"step {step}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers: PostgreSQL")
def test_concurrent_writers_for_one_patient_count_every_response(clinic):
    patient = PatientFactory(clinic=clinic)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            barrier.wait(timeout=10)
            for n in range(25):
                OutcomeResponseFactory(
                    patient=patient,
                    response_id=f"w{worker}-{n:02d}",
                    total=(worker * 25 + n) % 28,
                    administered_at=T0 + timedelta(minutes=(n * 7 + worker) % 60),
                )
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert OutcomeSummary.objects.get(patient=patient).count == 100
    assert stored() == expected()


def deteriorating_caseload(clinic, therapist, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        patient = CareAssignmentFactory(
            patient=PatientFactory(clinic=clinic, player_id=f"dt-{i:04d}"), therapist=therapist
        ).patient
        OutcomeResponseFactory(patient=patient, total=8, administered_at=T0)
        # every third patient rises by 6 (reliable deterioration on the PHQ-9), the others by 2
        OutcomeResponseFactory(patient=patient, total=14 if i % 3 == 0 else 10, administered_at=T0 + timedelta(days=28))


def test_the_deteriorating_filter_costs_the_same_queries_for_100_and_500_patients(clinic, therapist_a):
    client = logged_in(therapist_a)
    deteriorating_caseload(clinic, therapist_a, 100)
    client.get("/")  # the session's first request: not part of the measure
    with CaptureQueriesContext(connection) as few:
        page = client.get("/?filter=deteriorating")
    assert page.status_code == 200 and page.context["page"].paginator.count == 34
    deteriorating_caseload(clinic, therapist_a, 400, start=100)
    with CaptureQueriesContext(connection) as many:
        page = client.get("/?filter=deteriorating")
    assert page.status_code == 200 and page.context["page"].paginator.count == 167
    # the page's 10, and the filter's own: the ids of the caseload's reliably worse patients
    assert len(few.captured_queries) == len(many.captured_queries) == 11


def _plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", ()):
        yield from _plan_nodes(child)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL query plans")
def test_the_deteriorating_filter_reads_no_response_per_patient(clinic, therapist_a):
    """The caseload query's plan never touches the responses table: first and latest come from the
    summary's two joins, not from subqueries run once per patient."""
    deteriorating_caseload(clinic, therapist_a, 60)
    rows = selectors.caseload_rows(therapist_a, CaseloadQuery(filters=frozenset({"deteriorating"})))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE reports_outcomeresponse")
        cursor.execute("ANALYZE reports_outcomesummary")
        sql, params = rows.query.sql_with_params()
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0][0]["Plan"]  # psycopg decodes the JSON
    relations = {node.get("Relation Name") for node in _plan_nodes(plan)}
    assert "reports_outcomesummary" in relations
    assert OutcomeResponse._meta.db_table not in relations
    assert len(rows) == 20


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL query plans")
def test_the_deteriorating_filter_can_read_the_partial_index_of_reliably_worse_summaries(clinic, therapist_a):
    """The filter's condition is the partial index's, so that PostgreSQL can read the few summaries it
    names instead of every assigned patient's (on a table this small it would rather scan the table, so
    sequential scans are turned off to ask whether the index applies)."""
    deteriorating_caseload(clinic, therapist_a, 30)
    worse = selectors.reliably_worse_in_caseload(therapist_a)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        sql, params = worse.query.sql_with_params()
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0][0]["Plan"]
    assert "outcome_summary_worse" in {node.get("Index Name") for node in _plan_nodes(plan)}
    rows = selectors.caseload_rows(therapist_a, CaseloadQuery(filters=frozenset({"deteriorating"})))
    assert sorted(p.player_id for p in rows) == [f"dt-{i:04d}" for i in range(0, 30, 3)]


def test_a_patient_worse_on_both_measures_is_one_row_of_the_filter(clinic, therapist_a):
    patient = CareAssignmentFactory(patient=PatientFactory(clinic=clinic), therapist=therapist_a).patient
    for instrument, first, latest in (("phq9", 5, 15), ("gad7", 3, 12)):
        OutcomeResponseFactory(patient=patient, instrument=instrument, total=first, administered_at=T0)
        OutcomeResponseFactory(
            patient=patient, instrument=instrument, total=latest, administered_at=T0 + timedelta(days=14)
        )
    other = CareAssignmentFactory(patient=PatientFactory(clinic=clinic), therapist=therapist_a).patient
    OutcomeResponseFactory(patient=other, total=20, administered_at=T0)  # one score: no change to speak of
    unassigned = PatientFactory(clinic=clinic)  # reliably worse, but another therapist's concern
    OutcomeResponseFactory(patient=unassigned, total=2, administered_at=T0)
    OutcomeResponseFactory(patient=unassigned, total=20, administered_at=T0 + timedelta(days=14))
    rows = selectors.caseload_rows(therapist_a, CaseloadQuery(filters=frozenset({"deteriorating"})))
    assert [p.pk for p in rows] == [patient.pk]
