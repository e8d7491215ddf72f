"""The progress service against the database: local days, stored milestones, recommendations, reads."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.factories import ProgressMarkerFactory, TherapySessionFactory
from tests.test_ingest import post
from tracking import history, read_models, recompute, tasks
from tracking.models import (
    ClinicMilestoneRule,
    Milestone,
    Patient,
    ProgressHighlight,
    ProgressSummary,
    Recommendation,
    TherapySession,
)
from tracking.services import recommendation_dismiss
from tracking.signals import milestone_achieved


def local_noon(patient, days_ago: int, hour: int = 12) -> datetime:
    """A moment `days_ago` patient-local days before today, at `hour` local time, in UTC."""
    day = history.local_today(patient.tz_name) - timedelta(days=days_ago)
    return history.local_midnight(day, patient.tz_name) + timedelta(hours=hour)


def sessions_on(patient, days_ago: list[int], per_day: int = 1, minutes: float = 20.0):
    return [
        TherapySessionFactory(
            patient=patient, started_at=local_noon(patient, d) + timedelta(minutes=30 * n), duration_minutes=minutes
        )
        for d in days_ago
        for n in range(per_day)
    ]


def test_a_late_evening_session_counts_on_the_patients_local_day(patient_a):
    patient_a.timezone = "America/New_York"  # UTC−5 in November
    patient_a.save()
    TherapySessionFactory(patient=patient_a, started_at=datetime(2026, 11, 20, 4, 30, tzinfo=UTC))  # 23:30 on the 19th
    found = history.patient_history(patient_a, today=date(2026, 11, 20))
    assert [d.day for d in found.active_days] == [date(2026, 11, 19)]
    assert found.active_days[0].first_started_at == datetime(2026, 11, 20, 4, 30, tzinfo=UTC)
    today, sessions, _ = history.activity_by_day(patient_a, 2, today=date(2026, 11, 20))
    assert sessions == {date(2026, 11, 19): (1, 20.0)}


def test_markers_of_every_session_status_are_counted(patient_a):
    for status in ("active", "paused", "completed", "abandoned"):
        ProgressMarkerFactory(
            session=TherapySessionFactory(patient=patient_a, status=status, started_at=local_noon(patient_a, 1))
        )
    found = history.patient_history(patient_a)
    assert found.marker_counts == {"skill_acquired": 4}
    assert found.markers_recent == 4 and found.skills_last_7_days == 4


def test_milestones_are_stored_once_with_the_moment_the_threshold_was_crossed(
    patient_a, django_capture_on_commit_callbacks
):
    # An old 7-day run (broken since) and today's session: the streak milestone is still earned.
    old_run = sessions_on(patient_a, list(range(40, 33, -1)))
    sessions_on(patient_a, [0])
    fired = []
    receiver = lambda sender, milestone, highlight, **kw: fired.append((milestone.title, highlight.pk))  # noqa: E731
    milestone_achieved.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert recompute.patient_recompute(patient_a.pk)
        with django_capture_on_commit_callbacks(execute=True):
            recompute.patient_recompute(patient_a.pk)  # again: nothing new
    finally:
        milestone_achieved.disconnect(receiver)

    milestones = {m.title: m for m in Milestone.objects.filter(patient=patient_a)}
    assert set(milestones) == {"One Week Streak", "5 Sessions Completed"}
    assert milestones["One Week Streak"].achieved_at == old_run[6].started_at  # the 7th day of the run
    assert milestones["5 Sessions Completed"].achieved_at == old_run[4].started_at  # the 5th session
    assert ProgressHighlight.objects.filter(patient=patient_a, celebration_shown=False).count() == 2
    assert sorted(title for title, _ in fired) == ["5 Sessions Completed", "One Week Streak"]
    summary = ProgressSummary.objects.get(patient=patient_a)
    assert summary.current_streak_days == 1 and summary.data["longest_streak_days"] == 7
    patient_a.refresh_from_db()
    assert read_models.is_fresh(patient_a)


def test_six_active_days_earn_no_streak_milestone(patient_a):
    sessions_on(patient_a, [6, 5, 4, 3, 2, 1])
    recompute.patient_recompute(patient_a.pk)
    assert not Milestone.objects.filter(patient=patient_a, family="streak").exists()
    in_progress = ProgressSummary.objects.get(patient=patient_a).data["milestones_in_progress"]
    streak = next(m for m in in_progress if m["family"] == "streak")
    assert (streak["threshold"], streak["current"], streak["percent"]) == (7, 6, 85.7)


def test_a_dismissed_recommendation_stays_dismissed_until_its_condition_lapses(patient_a, therapist_a):
    sessions_on(patient_a, [30])  # long absent: dropout risk 0.5 + 0.2 + ... > 0.6
    recompute.patient_recompute(patient_a.pk)
    rec = Recommendation.objects.get(patient=patient_a, type="shorter_sessions")
    assert rec.priority == 1 and "Dropout risk score is" in rec.reasoning and "above 0.6" in rec.reasoning
    recommendation_dismiss(recommendation=rec, user=therapist_a)

    recompute.patient_recompute(patient_a.pk)
    rec.refresh_from_db()
    assert rec.dismissed and rec.expires_at is None
    assert read_models.progress_read_or_recompute(Patient.objects.get(pk=patient_a.pk), "insights") == {
        "recommendations": []
    }

    sessions_on(patient_a, [0, 1, 2, 3], per_day=2)  # back and engaged: the condition no longer holds
    recompute.patient_recompute(patient_a.pk)
    rec.refresh_from_db()
    assert rec.expires_at is not None

    TherapySession.objects.filter(patient=patient_a).exclude(started_at__lt=local_noon(patient_a, 29)).delete()
    recompute.patient_recompute(patient_a.pk)  # the risk returns: a fresh, undismissed recommendation
    rec.refresh_from_db()
    assert (rec.dismissed, rec.expires_at) == (False, None)


@pytest.fixture
def active_patient(patient_a):
    sessions = sessions_on(patient_a, list(range(9, -1, -1)), per_day=1, minutes=15)
    for s in sessions[-4:]:
        ProgressMarkerFactory(session=s, type="skill_acquired", achieved_at=s.started_at + timedelta(minutes=3))
    return patient_a


def test_progress_api_returns_the_summary_with_its_explanations(personas, active_patient):
    response = personas["therapist_a"].get(f"/api/v1/patients/{active_patient.player_id}/progress")
    assert response.status_code == 200
    data = response.json()
    assert (data["total_sessions"], data["total_time_minutes"], data["current_streak_days"]) == (10, 150.0, 10)
    assert data["sessions_this_week"] == 7 and data["markers_recent"] == 4
    assert data["explanations"]["therapeutic_momentum"]["value"] == data["therapeutic_momentum"]
    assert {t["label"] for t in data["explanations"]["dropout_risk_score"]["terms"]}
    assert len(data["recent_sessions"]) == 10


def test_milestones_and_insights_api(api, active_patient):
    milestones = api.get(f"/api/v1/patients/{active_patient.player_id}/milestones").json()
    assert [m["title"] for m in milestones["milestones"]] == [
        "5 Sessions Completed",
        "One Week Streak",
        "10 Sessions Completed",
    ]
    assert {h["title"] for h in milestones["highlights"]} == {m["title"] for m in milestones["milestones"]}
    assert {(m["family"], m["threshold"]) for m in milestones["in_progress"]} == {
        ("streak", 14),
        ("sessions", 25),
        ("skills", 5),
        ("breakthroughs", 1),
    }
    insights = api.get(f"/api/v1/patients/{active_patient.player_id}/insights").json()
    assert [r["type"] for r in insights["recommendations"]] == ["maintain_pace", "continue_approach"]
    assert insights["recommendations"][1]["title"] == "Continue mindfulness practice"


def test_viz_buckets_end_today_and_sum_to_the_window(api, active_patient):
    response = api.get(f"/api/v1/patients/{active_patient.player_id}/viz?days=7")
    assert response.status_code == 200
    viz = response.json()
    today = history.local_today(active_patient.tz_name)
    assert viz["time_buckets"][-1] == today.isoformat() and len(viz["time_buckets"]) == 7
    assert sum(viz["series"]["sessions"]) == 7 and sum(viz["series"]["duration_minutes"]) == 105
    assert sum(viz["series"]["skills_acquired"]) == 4
    assert viz["meta"]["period_days"] == 7 and viz["meta"]["timezone"] == "Europe/London"
    assert len(api.get(f"/api/v1/patients/{active_patient.player_id}/viz").json()["time_buckets"]) == 14


@pytest.mark.parametrize("days", ["0", "91", "-3", "abc", "1.5"])
def test_viz_days_outside_1_to_90_is_a_400_that_says_so(api, patient_a, days):
    response = api.get(f"/api/v1/patients/{patient_a.player_id}/viz?days={days}")
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["field"] == "days" and "between 1 and 90" in error["reason"]


def test_the_game_marks_a_highlight_celebrated(api, active_patient, other_token, client):
    highlight = api.get(f"/api/v1/patients/{active_patient.player_id}/milestones").json()["highlights"][0]
    url = f"/api/v1/patients/{active_patient.player_id}/highlights/{highlight['id']}/celebrated"
    response = api.post(url)
    assert response.status_code == 200 and response.json()["celebration_shown"] is True
    assert api.post(url).status_code == 200  # idempotent
    assert ProgressHighlight.objects.get(pk=highlight["id"]).celebration_shown
    shown = api.get(f"/api/v1/patients/{active_patient.player_id}/milestones").json()["highlights"]
    assert next(h for h in shown if h["id"] == highlight["id"])["celebration_shown"] is True
    other = client.__class__(headers={"Authorization": f"Bearer {other_token}"})
    assert other.post(url).status_code == 404


def test_ingest_marks_analytics_stale_and_reads_recompute(api, clinic):
    now = timezone.now().replace(microsecond=0)
    batch = {
        "sessions": [
            {
                "session_id": "x1",
                "player_id": "p-new",
                "started_at": now.isoformat(),
                "status": "completed",
                "duration_minutes": 12,
            }
        ]
    }
    post(api, batch)
    patient = Patient.objects.get(player_id="p-new")
    assert not read_models.is_fresh(patient)
    assert api.get("/api/v1/patients/p-new/progress").json()["total_sessions"] == 1
    patient.refresh_from_db()
    assert read_models.is_fresh(patient)


def _query_counts(client, player_id: str) -> dict[str, int]:
    counts = {}
    for part in ("progress", "milestones", "insights", "viz?days=90"):
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(f"/api/v1/patients/{player_id}/{part}").status_code == 200
        counts[part] = len(ctx.captured_queries)
    return counts


def test_read_endpoints_cost_the_same_queries_for_10_and_10000_sessions(api, clinic, django_assert_num_queries):
    small, large = (
        Patient.objects.create(clinic=clinic, player_id="small"),
        Patient.objects.create(clinic=clinic, player_id="large"),
    )
    start = timezone.now() - timedelta(days=365)
    for patient, n in ((small, 10), (large, 10_000)):
        TherapySession.objects.bulk_create(
            TherapySession(
                clinic=clinic,
                patient=patient,
                session_id=f"{patient.player_id}-{i}",
                started_at=start + timedelta(minutes=52 * i),
                status="completed",
                duration_minutes=10,
            )
            for i in range(n)
        )
        recompute.patient_recompute(patient.pk)
    api.get("/api/v1/patients/small/alerts")  # the token's first use records last_used_at: not part of a read
    cache.clear()
    api.get("/api/v1/patients/small/alerts")  # the token is cached again (≤ 5 s); the analytics are not
    small_counts, large_counts = _query_counts(api, "small"), _query_counts(api, "large")
    assert small_counts == large_counts
    # Pinned: the patient (the token comes from the cache); on a cache miss the stored summary, recent
    # sessions, milestones, highlights and recommendations (all three reads share one cached model); viz:
    # the window's two aggregates. Each read also appends its patient.read audit event (the next seq with
    # the chain's head locked; the insert and the head's move: 2).
    assert large_counts == {"progress": 8, "milestones": 3, "insights": 3, "viz?days=90": 5}
    with django_assert_num_queries(3):  # a cached read: the patient only, and the audit event
        api.get("/api/v1/patients/large/milestones")


def _stored(patient_ids) -> dict:
    return {
        s.patient_id: {k: v for k, v in s.data.items() if k != "computed_at"}
        for s in ProgressSummary.objects.filter(patient_id__in=patient_ids)
    }


def test_a_group_recompute_equals_one_at_a_time_across_time_zones(clinic, therapist_a):
    patients = []
    for n, tz in enumerate(["", "America/New_York", "Asia/Tokyo", ""]):
        patient = Patient.objects.create(clinic=clinic, player_id=f"g-{n}", timezone=tz)
        sessions = sessions_on(patient, list(range(n, n + 8)), per_day=n + 1)
        for s in sessions[::2]:
            ProgressMarkerFactory(session=s, type="skill_acquired" if n % 2 else "breakthrough")
        patients.append(patient)
    ids = [p.pk for p in patients]
    for pid in ids:
        recompute.patient_recompute(pid)
    one_at_a_time = _stored(ids)
    milestones = sorted(Milestone.objects.values_list("patient_id", "family", "threshold", "achieved_at"))
    Milestone.objects.all().delete()
    ProgressSummary.objects.all().delete()
    assert recompute.patients_recompute(ids) == 4
    assert _stored(ids) == one_at_a_time
    assert sorted(Milestone.objects.values_list("patient_id", "family", "threshold", "achieved_at")) == milestones


def test_a_group_recompute_costs_the_same_queries_for_3_and_30_patients(clinic, django_assert_num_queries):
    def make(n, start):
        out = []
        for i in range(start, start + n):
            patient = Patient.objects.create(clinic=clinic, player_id=f"q-{i}")
            sessions_on(patient, [i % 5, i % 5 + 1])
            out.append(patient.pk)
        return out

    few, many = make(3, 0), make(30, 3)
    recompute.patients_recompute(few + many)  # first run stores milestones etc.; the steady state is measured
    with CaptureQueriesContext(connection) as small:
        recompute.patients_recompute(few)
    with CaptureQueriesContext(connection) as large:
        recompute.patients_recompute(many)
    assert len(small.captured_queries) == len(large.captured_queries)


def test_a_clinics_own_milestone_rules_apply_at_the_next_recompute(patient_a):
    sessions_on(patient_a, [2, 1, 0])
    recompute.patient_recompute(patient_a.pk)
    assert not Milestone.objects.filter(patient=patient_a).exists()
    ClinicMilestoneRule.objects.create(clinic=patient_a.clinic, family="sessions", threshold=3, title="Three sessions")
    recompute.patient_recompute(patient_a.pk)
    assert list(Milestone.objects.filter(patient=patient_a).values_list("title", flat=True)) == ["Three sessions"]


def test_the_reconciler_sends_a_stale_patient_once_until_its_recompute_starts(clinic):

    stale = Patient.objects.create(clinic=clinic, player_id="stale", data_changed_at=timezone.now())
    assert tasks.reconcile_analytics() == 1
    assert tasks.reconcile_analytics() == 0  # still queued: not sent again
    tasks.recompute_patient_group([stale.pk])  # the group runs (here in-process)
    assert tasks.reconcile_analytics() == 0  # fresh now
    Patient.objects.filter(pk=stale.pk).update(data_changed_at=timezone.now() + timedelta(seconds=1))
    assert tasks.reconcile_analytics() == 1  # changed again: sent again
