"""Every per-patient time query uses a (patient, time) index (issue 14, item 3).

With a few thousand sessions and markers across patients and fresh planner statistics (`ANALYZE`, the
planner left to its defaults), each query is captured while the real function runs, then explained with
`EXPLAIN (FORMAT JSON)`. A query fails when its plan reads the table by a sequential scan or only through
the foreign-key index on `patient_id` alone: a patient's year of history read to keep two weeks of it.
"""

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import PatientFactory
from tracking import history, recompute, selectors
from tracking.models import MarkerType, ProgressMarker, TherapySession

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL query plans")

TODAY = date(2026, 11, 20)
PATIENTS = 12
DAYS = 365
SESSIONS_A_DAY = 1  # every patient: a year of daily sessions, a marker with each; 4,380 of each in all
TABLES = {TherapySession._meta.db_table, ProgressMarker._meta.db_table}


@pytest.fixture
def cohort(clinic):
    patients = [PatientFactory(clinic=clinic, player_id=f"plan-{n}") for n in range(PATIENTS)]
    start = datetime.combine(TODAY - timedelta(days=DAYS - 1), datetime.min.time(), tzinfo=UTC)
    sessions = TherapySession.objects.bulk_create(
        TherapySession(
            clinic=clinic,
            patient=patient,
            session_id=f"plan-{patient.pk}-{d}-{n}",
            started_at=start + timedelta(days=d, hours=10 + n),
            status="completed",
            duration_minutes=20.0,
        )
        for patient in patients
        for d in range(DAYS)
        for n in range(SESSIONS_A_DAY)
    )
    kinds = [MarkerType.SKILL_ACQUIRED, MarkerType.BREAKTHROUGH, MarkerType.INSIGHT, MarkerType.MILESTONE]
    ProgressMarker.objects.bulk_create(
        ProgressMarker(
            clinic=clinic,
            session=s,
            patient_id=s.patient_id,
            marker_id=f"m-{s.session_id}",
            type=kinds[i % len(kinds)],
            achieved_at=s.started_at + timedelta(minutes=5),
            therapeutic_value=0.5,
        )
        for i, s in enumerate(sessions)
    )
    with connection.cursor() as cursor:
        for table in sorted(TABLES):
            cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")
    return patients


def _indexes(table: str) -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return {name: c["columns"] for name, c in constraints.items() if c["index"] or c["primary_key"]}


def _scans(node: dict):
    yield node
    for child in node.get("Plans", ()):
        yield from _scans(child)


def _table_scans(sql: str, *, planner_defaults: bool = True) -> list[tuple[str, str, str | None]]:
    """(table, node type, index name) of every node of the plan that reads one of the history tables."""
    with connection.cursor() as cursor:
        if planner_defaults:  # said out loud: sequential and bitmap scans allowed, the planner chooses
            cursor.execute("SET LOCAL enable_seqscan = on")
            cursor.execute("SET LOCAL enable_bitmapscan = on")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        (plan,) = cursor.fetchone()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    found = []
    for node in _scans(plan[0]["Plan"]):
        relation = node.get("Relation Name")
        index = node.get("Index Name")
        if relation is None and index is not None:  # a Bitmap Index Scan names only its index
            relation = next((t for t in TABLES if index in _indexes(t)), None)
        if relation in TABLES:
            found.append((relation, node["Node Type"], index))
    return found


def _captured(function) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        function()
    return [q["sql"] for q in queries.captured_queries if any(t in q["sql"] for t in TABLES)]


def assert_time_index(sql: str, *, planner_defaults: bool = True) -> None:
    scans = _table_scans(sql, planner_defaults=planner_defaults)
    assert scans, f"no scan of the history tables in the plan of {sql}"
    for table, node_type, index in scans:
        assert node_type != "Seq Scan", f"sequential scan of {table}: {sql}"
        if node_type == "Bitmap Heap Scan":
            continue  # its Bitmap Index Scan child names the index, and is checked as its own node
        columns = _indexes(table).get(index or "")
        assert columns is not None, f"{node_type} of {table} without an index: {sql}"
        assert columns[0] == "patient_id" and len(columns) > 1, (
            f"{table} read through {index} {columns}, not a (patient, time) index: {sql}"
        )


def test_the_viz_window_uses_the_patient_time_indexes(cohort):
    patient = cohort[3]
    queries = _captured(lambda: history.activity_by_day(patient, 14, today=TODAY))
    assert len(queries) == 2  # sessions and markers of the window
    for sql in queries:
        assert_time_index(sql)


def test_get_visualization_data_uses_the_patient_time_indexes(cohort):
    patient = cohort[5]
    queries = _captured(lambda: recompute.get_visualization_data(patient, days=90))
    assert len(queries) == 2
    for sql in queries:
        assert_time_index(sql)


def test_the_moments_of_the_nth_session_skill_and_breakthrough_use_the_time_indexes(cohort):
    patient = cohort[7]
    queries = _captured(lambda: history.patient_history(patient, today=TODAY))
    moments = [sql for sql in queries if "LIMIT" in sql and "ORDER BY" in sql]
    assert len(moments) == 3  # first recompute: nothing stored yet, so the N-th moment of each family
    for sql in moments:
        assert_time_index(sql)


def test_the_recent_sessions_use_the_patient_time_index(cohort):
    patient = cohort[1]
    [sql] = _captured(lambda: selectors.recent_sessions(patient, 30))
    assert_time_index(sql)


def test_no_history_table_has_an_index_on_patient_id_alone(db):
    """The (patient, time) indexes serve the foreign keys; a patient_id-only index beside them was what
    the planner chose, reading a patient's whole history for a window."""
    for table in sorted(TABLES):
        assert not [name for name, cols in _indexes(table).items() if cols == ["patient_id"]], table


def test_the_check_refuses_a_foreign_key_only_or_sequential_plan(cohort):
    """The check itself, on plans forced only here: through `patient_id` alone, and a sequential scan."""
    table = TherapySession._meta.db_table
    patient = cohort[0]
    [window] = [sql for sql in _captured(lambda: history.activity_by_day(patient, 14, today=TODAY)) if table in sql]
    with connection.cursor() as cursor:  # inside the test's transaction: all of it is rolled back
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the deferred foreign-key checks run first
        cursor.execute(f"CREATE INDEX plan_patient_only ON {table} (patient_id)")
        cursor.execute("DROP INDEX session_patient_time")
        cursor.execute("SET LOCAL enable_seqscan = off")
    with pytest.raises(AssertionError, match=r"not a \(patient, time\) index"):
        assert_time_index(window, planner_defaults=False)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = on")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
    with pytest.raises(AssertionError, match="sequential scan"):
        assert_time_index(window, planner_defaults=False)
