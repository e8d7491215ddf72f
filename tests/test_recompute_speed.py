"""The recompute's costs (issue 14, item 2): its query count pinned, the milestone rules read once per
clinic of a group, a summary written only when it changed, the active days from PostgreSQL's arrays equal
to the portable per-day rows, and the one-pass rules equal to their definitions."""

import gc
import json
import random
import threading
from datetime import UTC, date, datetime, timedelta
from unittest import mock

import pytest
from django.core.cache import cache
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from reports.models import Alert, AlertKind
from tests.factories import PatientFactory, ProgressMarkerFactory, TherapySessionFactory
from tests.test_progress import sessions_on
from tracking import analytics, history, recompute, selectors
from tracking.models import ClinicMilestoneRule, Milestone, Patient, ProgressSummary


def _group(clinic, n, start=0):
    patients = []
    for i in range(start, start + n):
        patient = Patient.objects.create(clinic=clinic, player_id=f"speed-{i}")
        sessions_on(patient, [i % 5, i % 5 + 1, i % 5 + 2])
        patients.append(patient.pk)
    return patients


def test_a_steady_group_recompute_runs_a_pinned_number_of_queries(clinic, other_clinic):
    few = _group(clinic, 3)
    many = _group(clinic, 20, start=3) + _group(other_clinic, 20, start=23)
    recompute.patients_recompute(few + many)  # the first run stores milestones and summaries
    cache.clear()  # the rules are read from the database in both runs
    with CaptureQueriesContext(connection) as small:
        recompute.patients_recompute(few)
    cache.clear()
    with CaptureQueriesContext(connection) as large:
        recompute.patients_recompute(many)
    # Of 40 patients in two clinics and two time zones, only the per-clinic rules (when not cached) and
    # the per-zone reads are repeated.
    clinics = zones = 2
    per_zone = 2  # active days, marker counts
    assert len(large.captured_queries) == len(small.captured_queries) + (clinics - 1) + (zones - 1) * per_zone
    # Pinned: the patients, stored milestones, the clinic's rules, open alerts, the zone's active days and
    # marker counts (read without a lock); then savepoint and release, the patients locked with their
    # stamps, the stored summaries (nothing written: unchanged), the recommendations, two expected-recovery
    # reads (no response since the results were checked: nothing more), the analytics stamp.
    assert len(small.captured_queries) == 14, [q["sql"][:80] for q in small.captured_queries]


def test_the_milestone_rules_are_read_once_per_clinic_of_a_group(clinic, other_clinic):
    ClinicMilestoneRule.objects.create(clinic=other_clinic, family="sessions", threshold=2, title="Two")
    ids = _group(clinic, 5) + _group(other_clinic, 5, start=5)
    cache.clear()
    keys = []
    real_get = cache.get

    def counting_get(key, *args, **kwargs):
        keys.append(key)
        return real_get(key, *args, **kwargs)

    with mock.patch.object(cache, "get", side_effect=counting_get):
        recompute.patients_recompute(ids)
    rule_reads = [k for k in keys if k in {ClinicMilestoneRule.cache_key(c.pk) for c in (clinic, other_clinic)}]
    assert sorted(rule_reads) == sorted(
        [ClinicMilestoneRule.cache_key(clinic.pk), ClinicMilestoneRule.cache_key(other_clinic.pk)]
    )
    assert set(Patient.objects.get(player_id="speed-5").milestones.values_list("title", flat=True)) == {"Two"}


def _summary_version(patient_id):
    with connection.cursor() as cursor:
        cursor.execute("SELECT xmin::text FROM tracking_progresssummary WHERE patient_id = %s", [patient_id])
        return cursor.fetchone()[0]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="reads PostgreSQL's row version")
def test_an_unchanged_summary_is_not_rewritten_but_the_patient_is_stamped(patient_a):
    sessions_on(patient_a, [2, 1, 0])
    recompute.patient_recompute(patient_a.pk)
    summary = ProgressSummary.objects.get(patient=patient_a)
    version = _summary_version(patient_a.pk)
    patient_a.refresh_from_db()
    first_stamp = patient_a.analytics_computed_at

    Patient.objects.filter(pk=patient_a.pk).update(data_changed_at=timezone.now())  # a change that changes nothing
    assert recompute.patient_recompute(patient_a.pk)
    patient_a.refresh_from_db()
    assert patient_a.analytics_computed_at > first_stamp  # fresh again: reconcile and the read cache see it
    assert patient_a.data_changed_at <= patient_a.analytics_computed_at
    assert _summary_version(patient_a.pk) == version  # the row was not written
    assert ProgressSummary.objects.get(patient=patient_a).computed_at == summary.computed_at

    TherapySessionFactory(patient=patient_a, started_at=timezone.now() - timedelta(minutes=5))
    recompute.patient_recompute(patient_a.pk)
    changed = ProgressSummary.objects.get(patient=patient_a)
    assert _summary_version(patient_a.pk) != version
    assert changed.computed_at > summary.computed_at
    assert changed.data["total_sessions"] == 4


def test_a_summary_of_a_new_local_day_is_written(patient_a):
    sessions_on(patient_a, [1])
    recompute.patient_recompute(patient_a.pk)
    ProgressSummary.objects.filter(patient=patient_a).update(local_date=date(2000, 1, 1))
    recompute.patient_recompute(patient_a.pk)
    assert ProgressSummary.objects.get(patient=patient_a).local_date == history.local_today(patient_a.tz_name)


@pytest.mark.parametrize("tz", ["Europe/London", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"])
def test_the_active_days_from_arrays_equal_the_per_day_rows(clinic, tz):
    rng = random.Random(tz)
    patients = [PatientFactory(clinic=clinic, player_id=f"arr-{n}") for n in range(4)]
    base = datetime(2026, 3, 20, tzinfo=UTC)  # across the spring clock changes
    for patient in patients[:3]:
        for _ in range(60):
            started = base + timedelta(minutes=rng.randrange(0, 60 * 24 * 30), microseconds=rng.randrange(10**6))
            TherapySessionFactory(patient=patient, started_at=started, duration_minutes=rng.choice([0, 7.5, 20]))
    ids = [p.pk for p in patients]
    arrays = history.active_days_by_patient(tz, ids)
    rows = history.active_days_per_row(tz, ids)
    assert arrays == rows
    assert set(arrays) == {p.pk for p in patients[:3]}  # a patient without sessions has no entry
    for days in arrays.values():
        assert all(d.first_started_at.tzinfo is not None for d in days)


def test_the_n_th_moment_queries_run_only_when_a_milestone_is_first_reached(patient_a):
    sessions_on(patient_a, [6, 5, 4, 3, 2, 1, 0])
    ProgressMarkerFactory(session=patient_a.sessions.first(), type="breakthrough")
    recompute.patient_recompute(patient_a.pk)  # stores "5 Sessions", "One Week Streak", "Breakthrough 1"
    with CaptureQueriesContext(connection) as queries:
        history.patient_history(patient_a)
    assert not [q for q in queries.captured_queries if "LIMIT" in q["sql"]]


# ----- the one-pass rules against their definitions -------------------------------------------------


def _random_history(rng: random.Random, today: date) -> analytics.PatientHistory:
    days, day = [], today - timedelta(days=rng.randrange(0, 400))
    for _ in range(rng.randrange(0, 120)):
        day -= timedelta(days=rng.choice([1, 1, 1, 2, 3, 9]))
        start = datetime(day.year, day.month, day.day, 9, tzinfo=UTC) + timedelta(minutes=rng.randrange(600))
        days.append(analytics.ActiveDay(day, rng.randrange(1, 4), rng.choice([0.0, 5.0, 12.5, 30.0]), start))
    if rng.random() < 0.2:  # a day after today (clock skew) is kept out of every window
        days.insert(0, analytics.ActiveDay(today + timedelta(days=1), 1, 10.0, datetime(2030, 1, 1, tzinfo=UTC)))
    return analytics.PatientHistory(today=today, timezone="UTC", active_days=tuple(sorted(days)))


def test_one_pass_metrics_and_streak_crossings_equal_the_definitions():
    rng = random.Random(14)
    today = date(2026, 11, 20)
    for _ in range(400):
        h = _random_history(rng, today)
        m = analytics.engagement_metrics(h)
        days = h.active_days
        day_list = [d.day for d in days]
        assert m.total_sessions == sum(d.sessions for d in days)
        assert m.sessions_this_week == analytics.sessions_between(days, today - timedelta(days=6), today)
        assert m.sessions_this_month == analytics.sessions_between(days, today - timedelta(days=29), today)
        assert m.sessions_previous_7 == analytics.sessions_between(
            days, today - timedelta(days=13), today - timedelta(days=7)
        )
        assert m.current_streak_days == analytics.current_streak(day_list, today)
        assert m.longest_streak_days == analytics.longest_streak(day_list)
        assert analytics.family_count(h, "streak") == analytics.current_streak(day_list, today)
        thresholds = (1, 2, 3, 7, 14, 30, 45)
        crossings = analytics.streak_crossings(days, thresholds)
        assert crossings == {n: at for n in thresholds if (at := analytics.streak_reached_at(days, n)) is not None}


def test_the_progress_read_says_when_it_was_last_computed_even_when_the_summary_did_not_change(api, clinic):
    patient = Patient.objects.create(clinic=clinic, player_id="stamp")
    sessions_on(patient, [0, 1, 2])
    recompute.patient_recompute(patient.pk)
    first = api.get("/api/v1/patients/stamp/progress").json()["computed_at"]
    Patient.objects.filter(pk=patient.pk).update(data_changed_at=timezone.now())  # stale, nothing new
    cache.clear()
    second = api.get("/api/v1/patients/stamp/progress").json()["computed_at"]  # recomputed on read
    assert ProgressSummary.objects.get(patient=patient).computed_at.isoformat() == first  # not rewritten
    assert second > first


def test_the_hand_written_group_queries_give_the_rows_of_their_orm_forms(clinic):
    """history's PostgreSQL SQL for stored milestones, open alerts and marker counts, against the ORM
    query each one replaces (the form SQLite runs): the same rows, in the same order where it matters."""
    rng = random.Random(14)
    patients = [PatientFactory(clinic=clinic, player_id=f"raw-{n}") for n in range(4)]
    now = timezone.now()
    kinds = ["skill_acquired", "breakthrough", "insight", "milestone"]
    for patient in patients[:3]:
        session = TherapySessionFactory(patient=patient, started_at=now - timedelta(days=20))
        for _ in range(30):
            ProgressMarkerFactory(
                session=session, type=rng.choice(kinds), achieved_at=now - timedelta(hours=rng.randrange(24 * 20))
            )
        for severity in rng.sample(["moderate", "urgent", "high", "urgent"], 3):
            Alert.objects.create(
                clinic=clinic,
                patient=patient,
                kind=rng.choice(list(AlertKind)),
                severity=severity,
                reason="r",
                occurred_at=now - timedelta(minutes=rng.randrange(600)),
                acknowledged_at=now if rng.random() < 0.3 else None,
            )
    sessions_on(patients[0], [6, 5, 4, 3, 2, 1, 0])
    recompute.patients_recompute([p.pk for p in patients])  # stores milestones
    ids = [p.pk for p in patients]
    assert Milestone.objects.filter(patient_id__in=ids).exists()
    assert history.stored_milestones(ids) == history.stored_milestones(ids, orm=True)
    alerts = history.open_alerts_by_patient(ids)
    assert alerts and alerts == history.open_alerts_by_patient(ids, orm=True)
    window = (now - timedelta(days=13), now - timedelta(days=6), now)
    raw = sorted(history.marker_counts_by_type(ids, *window))
    assert raw and raw == sorted(history.marker_counts_by_type(ids, *window, orm=True))
    practising = TherapySessionFactory(patient=patients[3], started_at=now - timedelta(days=2), approaches=["cbt", 3])
    plain = TherapySessionFactory(patient=patients[3], started_at=now - timedelta(days=1), approaches=[])
    for session in (practising, practising, plain):
        ProgressMarkerFactory(session=session, type="skill_acquired", achieved_at=session.started_at)
    approaches = history.skill_approaches(ids, now - timedelta(days=6), now)
    assert approaches == history.skill_approaches(ids, now - timedelta(days=6), now, orm=True)
    assert approaches[patients[3].pk] == {"cbt": 2}
    summaries = history.stored_summaries(ids)
    assert len(summaries) == 4 and summaries == history.stored_summaries(ids, orm=True)


def test_the_hand_written_recent_sessions_equal_their_orm_form(patient_a):
    for n in range(5):
        TherapySessionFactory(
            patient=patient_a,
            started_at=datetime(2026, 3, 1, 10, tzinfo=UTC) + timedelta(days=n // 2),  # ties in the day
            approaches=["mindfulness", f"a-{n}"],
            world="Forest" if n % 2 else "",
        )
    TherapySessionFactory(patient=patient_a, ended_at=None, status="abandoned")
    raw = selectors.recent_sessions(patient_a, 4)
    assert raw == selectors.recent_sessions(patient_a, 4, orm=True)
    assert len(raw) == 4 and raw[0]["approaches"][0] == "mindfulness"


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: PostgreSQL")
def test_an_ingest_is_not_kept_waiting_while_a_group_computes(clinic, api, monkeypatch):
    """The group reads and computes without a lock: an ingest for one of its patients commits while the
    group is still computing, and the patient stays stale (the group's stamp is older than the data).
    With the rows locked while computing, the ingest would wait past its 5 s lock timeout."""
    patient = Patient.objects.create(clinic=clinic, player_id="unlocked-1")
    sessions_on(patient, [2, 1, 0])
    computing, release = threading.Event(), threading.Event()
    real = recompute._compute_many

    def slow_compute(patients):
        computations = real(patients)
        computing.set()
        assert release.wait(timeout=30)
        return computations

    def group() -> None:
        try:
            recompute.patients_recompute([patient.pk])
        finally:
            connections.close_all()

    monkeypatch.setattr(recompute, "_compute_many", slow_compute)
    worker = threading.Thread(target=group)
    worker.start()
    try:
        assert computing.wait(timeout=30)
        body = {
            "sessions": [
                {
                    "session_id": "unlocked-s",
                    "player_id": "unlocked-1",
                    "started_at": timezone.now().isoformat(),
                    "status": "completed",
                    "duration_minutes": 5,
                }
            ],
            "markers": [],
        }
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '5s'")
        response = api.post("/api/v1/ingest", json.dumps(body), content_type="application/json")
        assert response.status_code == 201  # while the group still computes
    finally:
        release.set()
        worker.join(timeout=30)
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    patient.refresh_from_db()
    assert patient.analytics_computed_at < patient.data_changed_at  # found stale, computed again later


@pytest.mark.django_db(transaction=True)
def test_two_recomputes_of_one_patient_at_once_store_its_milestones_once(clinic, monkeypatch):
    """One recompute computes while another computes and stores the same patient's new milestones: the
    first finds the patient's stamp moved when it takes the lock, computes again from what is stored,
    and stores without a duplicate (before, the group failed on the milestones' uniqueness)."""
    patient = Patient.objects.create(clinic=clinic, player_id="raced-1")
    sessions_on(patient, [6, 5, 4, 3, 2, 1, 0])  # 7 sessions on 7 days: "5 Sessions", "One Week Streak"
    computing, release = threading.Event(), threading.Event()
    real = recompute._compute_many
    results: list[int] = []

    def held_compute(patients):
        computations = real(patients)
        if threading.current_thread().name == "held":
            computing.set()
            assert release.wait(timeout=30)
        return computations

    def held() -> None:
        try:
            results.append(recompute.patients_recompute([patient.pk]))
        finally:
            connections.close_all()

    monkeypatch.setattr(recompute, "_compute_many", held_compute)
    worker = threading.Thread(target=held, name="held")
    worker.start()
    try:
        assert computing.wait(timeout=30)
        assert recompute.patients_recompute([patient.pk]) == 1  # stores the milestones first
    finally:
        release.set()
        worker.join(timeout=30)
    assert results == [1]
    patient.refresh_from_db()
    assert patient.analytics_failures == 0 and patient.analytics_error == ""
    families = list(Milestone.objects.filter(patient=patient).values_list("family", "threshold"))
    assert len(families) == len(set(families)) >= 2


def _collections_during(work):
    """How many cyclic garbage collections ran while `work` ran."""
    started = []

    def count(phase, info):
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(count)
    try:
        work()
    finally:
        gc.callbacks.remove(count)
    return len(started)


def test_a_group_recompute_runs_with_the_cyclic_collector_paused(clinic):
    ids = _group(clinic, 30)
    recompute.patients_recompute(ids)  # the first run stores; both runs below are steady
    assert gc.isenabled()
    # The control: the same group with the collector running collects (the test could fail).
    unpaused = _collections_during(lambda: recompute._recompute_with_fallback(ids, stop_on=(), skip_locked=False))
    assert unpaused > 0
    assert _collections_during(lambda: recompute.patients_recompute(ids)) == 0
    assert gc.isenabled()


def test_the_collector_resumes_after_a_recompute_that_raised(clinic, monkeypatch):
    ids = _group(clinic, 2)

    def interrupted(*args, **kwargs):
        assert not gc.isenabled()
        raise TimeoutError

    monkeypatch.setattr(recompute, "_recompute_together", interrupted)
    with pytest.raises(TimeoutError):
        recompute.patients_recompute(ids, stop_on=(TimeoutError,))
    assert gc.isenabled()


def test_recomputes_at_once_share_one_pause_and_leave_a_stopped_collector_stopped():
    first, second = recompute.cyclic_gc_paused(), recompute.cyclic_gc_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second is still running
    second.__exit__(None, None, None)
    assert gc.isenabled()

    gc.disable()  # stopped by someone else before: not started by a recompute's end
    try:
        with recompute.cyclic_gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
