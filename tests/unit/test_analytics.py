"""Unit tests pinning every rule of DESIGN.md §4 at and around its thresholds (no database)."""

import json
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest

from tracking.analytics import (
    DEFAULT_MILESTONE_RULES,
    AchievedMilestone,
    ActiveDay,
    EngagementMetrics,
    MilestoneRule,
    PatientHistory,
    ScoredValue,
    active_days_from_sessions,
    compute_summary,
    current_streak,
    detect_milestones,
    dropout_risk,
    engagement_metrics,
    engagement_trend,
    highlight_for_milestone,
    in_progress_milestones,
    is_disengaged,
    local_day,
    longest_streak,
    most_practised_approach,
    overall_progress_score,
    progress_trend,
    readiness_for_advancement,
    recommendations,
    therapeutic_momentum,
    thresholds_for,
    visualization_series,
)

TODAY = date(2025, 3, 20)
STREAK_RULES = tuple(r for r in DEFAULT_MILESTONE_RULES if r.family == "streak")


def ago(offset: int) -> date:
    return TODAY - timedelta(days=offset)


def at(day: date, hour: int = 9, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=UTC)


def active(*offsets: int, sessions: int = 1, minutes: float = 20.0) -> tuple[ActiveDay, ...]:
    """One ActiveDay per offset (days before TODAY), ascending."""
    return tuple(
        ActiveDay(ago(o), sessions, minutes * sessions, at(ago(o))) for o in sorted(set(offsets), reverse=True)
    )


def history(*offsets: int, **fields) -> PatientHistory:
    return PatientHistory(today=TODAY, timezone="UTC", active_days=active(*offsets), **fields)


def rule(family: str, threshold: int) -> MilestoneRule:
    return next(r for r in DEFAULT_MILESTONE_RULES if r.family == family and r.threshold == threshold)


def titles(milestones) -> list[str]:
    return [m.rule.title for m in milestones]


# A patient with no dropout term at all: active today, 2 sessions in each week, 20-minute sessions, streak 1.
CALM = EngagementMetrics(
    total_sessions=10,
    total_time_minutes=200.0,
    average_session_length=20.0,
    sessions_this_week=2,
    sessions_this_month=10,
    sessions_last_7=2,
    sessions_previous_7=2,
    last_active_day=TODAY,
    days_since_last_active=0,
    current_streak_days=1,
    longest_streak_days=3,
)


# --- days and streaks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offsets", "expected"),
    [
        ((), 0),
        ((0,), 1),
        ((0, 1, 2), 3),
        ((1, 2, 3), 3),  # a streak through yesterday still counts
        ((1,), 1),
        ((2, 3, 4), 0),  # latest active day before yesterday: no current streak
        ((0, 2, 3), 1),
    ],
)
def test_current_streak(offsets, expected):
    assert current_streak([ago(o) for o in offsets], TODAY) == expected


@pytest.mark.parametrize(
    ("offsets", "expected"),
    [((), 0), ((5,), 1), ((9, 8, 7, 6, 5, 2, 1, 0), 5), ((0, 1, 2, 10, 11), 3)],
)
def test_longest_streak(offsets, expected):
    assert longest_streak([ago(o) for o in offsets]) == expected


@pytest.mark.parametrize(
    ("utc_moment", "timezone", "expected"),
    [
        # 23:30 on the 15th in New York (UTC−5 in January) is 04:30 UTC on the 16th: it counts on the 15th.
        (datetime(2025, 1, 16, 4, 30, tzinfo=UTC), "America/New_York", date(2025, 1, 15)),
        (datetime(2025, 1, 16, 4, 30, tzinfo=UTC), "UTC", date(2025, 1, 16)),
        (datetime(2025, 1, 16, 5, 0, tzinfo=UTC), "America/New_York", date(2025, 1, 16)),
    ],
)
def test_local_day(utc_moment, timezone, expected):
    assert local_day(utc_moment, timezone) == expected


def test_local_day_rejects_naive_datetime():
    with pytest.raises(ValueError, match="timezone-aware"):
        local_day(datetime(2025, 1, 16, 4, 30), "UTC")


def test_active_days_from_sessions_groups_by_local_start_day():
    evening = datetime(2025, 1, 16, 4, 30, tzinfo=UTC)  # 23:30 on the 15th in New York
    morning = datetime(2025, 1, 15, 14, 0, tzinfo=UTC)  # 09:00 on the 15th
    next_day = datetime(2025, 1, 16, 15, 0, tzinfo=UTC)
    days = active_days_from_sessions([(evening, 10.0), (next_day, 5.0), (morning, 30.0)], "America/New_York")
    assert days == (
        ActiveDay(date(2025, 1, 15), 2, 40.0, morning),
        ActiveDay(date(2025, 1, 16), 1, 5.0, next_day),
    )


def test_history_requires_ascending_days():
    with pytest.raises(ValueError, match="ascending"):
        PatientHistory(today=TODAY, timezone="UTC", active_days=tuple(reversed(active(0, 1))))


# --- engagement metrics -------------------------------------------------------------------------


def test_engagement_metrics_windows():
    # Offsets 0 and 6 are this week, 7 and 13 the week before, 29 the last day of the month window.
    metrics = engagement_metrics(history(0, 6, 7, 13, 14, 29, 30))
    assert metrics == EngagementMetrics(
        total_sessions=7,
        total_time_minutes=140.0,
        average_session_length=20.0,
        sessions_this_week=2,
        sessions_this_month=6,
        sessions_last_7=2,
        sessions_previous_7=2,
        last_active_day=TODAY,
        days_since_last_active=0,
        current_streak_days=1,
        longest_streak_days=2,
    )


def test_engagement_metrics_without_sessions():
    metrics = engagement_metrics(history())
    assert (metrics.total_sessions, metrics.average_session_length, metrics.last_active_day) == (0, 0.0, None)
    assert metrics.days_since_last_active is None


def test_average_session_length_is_minutes_per_session():
    days = (ActiveDay(ago(1), 3, 25.0, at(ago(1))), ActiveDay(ago(0), 1, 15.0, at(ago(0))))
    metrics = engagement_metrics(PatientHistory(today=TODAY, timezone="UTC", active_days=days))
    assert (metrics.total_sessions, metrics.total_time_minutes, metrics.average_session_length) == (4, 40.0, 10.0)


# --- dropout risk -------------------------------------------------------------------------------

# Base for the streak reductions: average under 10 (+0.1) and fewer sessions than the week before (+0.1).
RISKY = replace(CALM, average_session_length=5.0, sessions_previous_7=3)


@pytest.mark.parametrize(
    ("base", "changes", "expected"),
    [
        (CALM, {}, 0.0),
        (CALM, {"days_since_last_active": 3}, 0.0),
        (CALM, {"days_since_last_active": 4}, 0.2),
        (CALM, {"days_since_last_active": 7}, 0.2),
        (CALM, {"days_since_last_active": 8}, 0.4),
        (CALM, {"days_since_last_active": 14}, 0.4),
        (CALM, {"days_since_last_active": 15}, 0.5),
        (CALM, {"sessions_this_week": 0, "sessions_last_7": 0, "sessions_previous_7": 0}, 0.2),
        (CALM, {"sessions_this_week": 1, "sessions_last_7": 1, "sessions_previous_7": 1}, 0.1),
        (CALM, {"sessions_this_week": 2, "sessions_last_7": 2, "sessions_previous_7": 2}, 0.0),
        (CALM, {"sessions_last_7": 2, "sessions_previous_7": 3}, 0.1),
        (CALM, {"sessions_last_7": 2, "sessions_previous_7": 2}, 0.0),
        (CALM, {"sessions_last_7": 3, "sessions_previous_7": 2}, 0.0),
        (CALM, {"average_session_length": 9.99}, 0.1),
        (CALM, {"average_session_length": 10.0}, 0.0),
        (RISKY, {}, 0.2),
        (RISKY, {"current_streak_days": 2}, 0.2),
        (RISKY, {"current_streak_days": 3}, 0.1),
        (RISKY, {"current_streak_days": 6}, 0.1),
        (RISKY, {"current_streak_days": 7}, 0.0),
        (CALM, {"current_streak_days": 7}, 0.0),  # −0.2 clamped up to 0
        # 8 days away (+0.4) and no session this week (+0.2) is exactly 0.6, not a float above it.
        (
            CALM,
            {"days_since_last_active": 8, "sessions_this_week": 0, "sessions_last_7": 0, "sessions_previous_7": 0},
            0.6,
        ),
    ],
)
def test_dropout_risk_terms(base, changes, expected):
    assert dropout_risk(replace(base, **changes)).value == expected


def test_dropout_risk_for_a_patient_without_sessions():
    risk = dropout_risk(engagement_metrics(history()))
    assert risk.value == 0.8
    assert [c for _, c in risk.terms] == [0.5, 0.2, 0.1]  # no session ever, none this week, average 0 < 10
    assert risk.terms[0][0] == "No session ever"


def test_dropout_risk_clamps_to_one():
    inconsistent = replace(CALM, total_sessions=0, days_since_last_active=20, sessions_this_week=0, sessions_last_7=0)
    risk = dropout_risk(replace(inconsistent, average_session_length=0.0))
    assert sum(c for _, c in risk.terms) > 1
    assert risk.value == 1.0


def test_dropout_risk_explains_itself():
    risk = dropout_risk(replace(RISKY, days_since_last_active=15, current_streak_days=0))
    assert risk.value == 0.7
    assert risk.terms == (
        ("15 days since the last active day (more than 14)", 0.5),
        ("Fewer sessions in the last 7 days (2) than in the 7 before (3)", 0.1),
        ("Average session length 5 min (under 10)", 0.1),
    )
    assert risk.inputs["days_since_last_active"] == 15


# --- momentum, readiness, overall ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("markers", "streak", "week", "expected"),
    [
        (0, 0, 0, 0.3),
        (5, 3, 2, 0.53),  # 0.3 + 0.1 + 0.03 + 0.1
        (15, 0, 0, 0.6),  # the markers term reaches its cap of 0.3 at 15 markers
        (100, 0, 0, 0.6),
        (0, 20, 0, 0.5),  # streak term capped at 0.2
        (0, 100, 0, 0.5),
        (0, 0, 4, 0.5),  # week term capped at 0.2
        (0, 0, 10, 0.5),
        (100, 100, 100, 1.0),
    ],
)
def test_therapeutic_momentum(markers, streak, week, expected):
    momentum = therapeutic_momentum(markers_recent=markers, current_streak=streak, sessions_this_week=week)
    assert momentum.value == expected
    assert len(momentum.terms) == 4


@pytest.mark.parametrize(
    ("momentum", "milestones", "streak", "expected"),
    [
        (0.0, 0, 0, 0.2),
        (0.5, 2, 5, 0.5),  # 0.2 + 0.15 + 0.1 + 0.05
        (0.0, 6, 0, 0.5),  # milestones term capped at 0.3
        (0.0, 50, 0, 0.5),
        (0.0, 0, 20, 0.4),  # streak term capped at 0.2
        (0.0, 0, 90, 0.4),
        (1.0, 50, 90, 1.0),
    ],
)
def test_readiness_for_advancement(momentum, milestones, streak, expected):
    readiness = readiness_for_advancement(momentum=momentum, milestones_achieved=milestones, current_streak=streak)
    assert readiness.value == expected


@pytest.mark.parametrize(
    ("achieved", "in_progress", "momentum", "streak", "expected"),
    [
        (2, 2, 0.5, 15, 0.5),  # 0.4·½ + 0.3·0.5 + 0.3·½
        (4, 0, 1.0, 30, 1.0),
        (0, 4, 0.3, 0, 0.09),
        (1, 3, 0.0, 60, 0.4),  # streak share capped at 1
        (0, 0, 0.5, 0, 0.15),  # no milestone rules at all: share 0
    ],
)
def test_overall_progress_score(achieved, in_progress, momentum, streak, expected):
    score = overall_progress_score(achieved=achieved, in_progress=in_progress, momentum=momentum, current_streak=streak)
    assert score.value == expected


def test_family_whose_last_threshold_is_achieved_has_nothing_in_progress():
    moments = {n: at(ago(40 - n)) for n in (1, 3, 5)}
    summary = compute_summary(history(0, marker_counts={"breakthrough": 5}, nth_breakthrough_at=moments))
    assert titles(summary.milestones_achieved) == [f"Breakthrough Explorer Level {n}" for n in (1, 2, 3)]
    assert [p.rule.family for p in summary.milestones_in_progress] == ["streak", "skills", "sessions"]
    overall = summary.overall_progress_score
    assert overall.inputs["milestones_achieved"] == 3
    assert overall.inputs["milestones_in_progress"] == 3
    momentum = summary.therapeutic_momentum.value  # 0.3 + 0.01 + 0.05
    assert overall.value == round(0.4 * 3 / 6 + 0.3 * momentum + 0.3 * 1 / 30, 4)


# --- trends -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markers", "week", "streak", "risk", "expected"),
    [
        (10, 3, 5, 0.0, "improving"),
        (10, 3, 5, 0.9, "improving"),  # first match wins
        (9, 3, 5, 0.0, "stable"),
        (10, 2, 5, 0.0, "stable"),
        (10, 3, 4, 0.0, "stable"),
        (5, 2, 2, 0.9, "stable"),  # the second rule matches before the dropout check
        (4, 2, 2, 0.0, "stable"),  # falls through to "else stable"
        (5, 1, 2, 0.0, "stable"),
        (5, 2, 1, 0.0, "stable"),
        (4, 0, 0, 0.0, "declining"),  # no session this week
        (4, 1, 1, 0.61, "declining"),
        (4, 1, 1, 0.6, "stable"),
    ],
)
def test_progress_trend(markers, week, streak, risk, expected):
    trend = progress_trend(markers_recent=markers, sessions_this_week=week, current_streak=streak, dropout_risk=risk)
    assert trend == expected


@pytest.mark.parametrize(
    ("last", "previous", "risk", "expected"),
    [
        (3, 2, 0.9, "increasing"),
        (2, 3, 0.41, "decreasing"),
        (2, 3, 0.4, "stable"),
        (2, 2, 0.9, "stable"),
        (0, 0, 0.8, "stable"),
    ],
)
def test_engagement_trend(last, previous, risk, expected):
    assert engagement_trend(sessions_last_7=last, sessions_previous_7=previous, dropout_risk=risk) == expected


# --- milestones ---------------------------------------------------------------------------------


def test_default_rules():
    assert {
        f: thresholds_for(DEFAULT_MILESTONE_RULES, f) for f in ("streak", "skills", "sessions", "breakthroughs")
    } == {
        "streak": (7, 14, 30),
        "skills": (5, 10, 20),
        "sessions": (5, 10, 25, 50, 100),
        "breakthroughs": (1, 3, 5),
    }
    assert rule("streak", 14).title == "Two Week Streak"
    assert rule("skills", 10).title == "Skill Builder Level 2"
    assert rule("sessions", 25).title == "25 Sessions Completed"
    assert rule("breakthroughs", 5).title == "Breakthrough Explorer Level 3"


@pytest.mark.parametrize(("family", "threshold"), [("streaks", 7), ("skills", 0)])
def test_milestone_rule_validation(family, threshold):
    with pytest.raises(ValueError):
        MilestoneRule(family, threshold, "t", "d")


@pytest.mark.parametrize(("run_length", "earned"), [(6, False), (7, True)])
def test_streak_milestone_needs_seven_consecutive_days(run_length, earned):
    hist = history(*range(run_length))
    achieved = detect_milestones(hist, STREAK_RULES)
    assert titles(achieved) == (["One Week Streak"] if earned else [])
    if earned:
        assert achieved[0].achieved_at == at(TODAY)  # the 7th day of the run is today


def test_streak_milestone_from_an_earlier_broken_run_is_kept():
    # A 7-day run 30..24 days ago (two sessions on its 7th day), a gap, then 3 days; nothing today or yesterday.
    starts = [(at(ago(o)), 20.0) for o in (30, 29, 28, 27, 26, 25, 10, 9, 8)]
    starts += [(at(ago(24), 18), 20.0), (at(ago(24), 7, 15), 20.0)]
    hist = PatientHistory(today=TODAY, timezone="UTC", active_days=active_days_from_sessions(starts, "UTC"))
    achieved = detect_milestones(hist, STREAK_RULES)
    assert achieved == [AchievedMilestone(rule("streak", 7), at(ago(24), 7, 15))]
    (streak_next,) = in_progress_milestones(hist, achieved, STREAK_RULES)
    assert (streak_next.rule.threshold, streak_next.current, streak_next.percent) == (14, 0, 0.0)


def test_longer_streak_milestones_take_the_first_run_reaching_them():
    hist = history(*range(40, 25, -1), *range(14, -1, -1))  # two 15-day runs; the first reaches 7 and 14
    achieved = {m.rule.threshold: m.achieved_at for m in detect_milestones(hist, STREAK_RULES)}
    assert achieved == {7: at(ago(34)), 14: at(ago(27))}


@pytest.mark.parametrize(("skills", "earned"), [(4, False), (5, True)])
def test_skill_builder_needs_five_skill_markers(skills, earned):
    moment = at(ago(3), 16)
    hist = history(0, marker_counts={"skill_acquired": skills}, nth_skill_at={5: moment} if earned else {})
    achieved = [m for m in detect_milestones(hist) if m.rule.family == "skills"]
    assert achieved == ([AchievedMilestone(rule("skills", 5), moment)] if earned else [])


def test_count_milestones_are_dated_by_the_nth_item():
    session_5, session_10, breakthrough_1 = at(ago(9)), at(ago(3)), at(ago(5), 11)
    hist = PatientHistory(
        today=TODAY,
        timezone="UTC",
        active_days=active(9, 3, sessions=6),
        marker_counts={"breakthrough": 2},
        nth_session_started_at={5: session_5, 10: session_10},
        nth_breakthrough_at={1: breakthrough_1},
    )
    assert [(m.rule.title, m.achieved_at) for m in detect_milestones(hist)] == [
        ("5 Sessions Completed", session_5),
        ("10 Sessions Completed", session_10),
        ("Breakthrough Explorer Level 1", breakthrough_1),
    ]


def test_reached_milestone_without_its_moment_is_an_error():
    with pytest.raises(ValueError, match="skills milestone 5"):
        detect_milestones(history(0, marker_counts={"skill_acquired": 6}))


def test_in_progress_percentages():
    hist = PatientHistory(
        today=TODAY,
        timezone="UTC",
        active_days=active(2, 1, 0, sessions=4),
        marker_counts={"skill_acquired": 3},
        nth_session_started_at={5: at(ago(1)), 10: at(ago(0))},
    )
    progress = in_progress_milestones(hist, detect_milestones(hist))
    assert [(p.rule.title, p.current, p.percent) for p in progress] == [
        ("One Week Streak", 3, 42.9),
        ("Skill Builder Level 1", 3, 60.0),
        ("25 Sessions Completed", 12, 48.0),
        ("Breakthrough Explorer Level 1", 0, 0.0),
    ]


def test_custom_rules_are_honoured():
    rules = (MilestoneRule("streak", 3, "Three in a row", "3 days"), MilestoneRule("streak", 5, "Five", "5 days"))
    hist = history(0, 1, 2)
    achieved = detect_milestones(hist, rules)
    assert titles(achieved) == ["Three in a row"]
    assert [(p.rule.title, p.percent) for p in in_progress_milestones(hist, achieved, rules)] == [("Five", 60.0)]


def test_highlight_for_milestone():
    moment = at(ago(2))
    highlight = highlight_for_milestone(AchievedMilestone(rule("skills", 5), moment))
    assert (highlight.type, highlight.title, highlight.achieved_at) == ("milestone", "Skill Builder Level 1", moment)
    assert highlight.description == "Acquired 5 skills."
    assert 0 <= highlight.therapeutic_value <= 1


# --- summary ------------------------------------------------------------------------------------


def test_compute_summary_and_its_json():
    hist = history(*range(7), markers_recent=12, marker_counts={"insight": 12}, nth_session_started_at={5: at(ago(2))})
    summary = compute_summary(hist)
    assert summary.metrics.current_streak_days == 7
    assert summary.dropout_risk.value == 0.0
    assert summary.therapeutic_momentum.value == 0.81  # 0.3 + 0.24 + 0.07 + 0.2 (7 sessions, capped)
    assert summary.readiness_for_advancement.value == round(0.2 + 0.3 * 0.81 + 0.1 + 0.07, 4)
    assert (summary.progress_trend, summary.engagement_trend) == ("improving", "increasing")
    assert titles(summary.milestones_achieved) == ["One Week Streak", "5 Sessions Completed"]

    data = json.loads(json.dumps(summary.to_dict()))
    assert data["today"] == "2025-03-20"
    assert data["last_active_day"] == "2025-03-20"
    assert data["milestones_achieved"][1]["achieved_at"] == "2025-03-18T09:00:00+00:00"
    assert data["milestones_in_progress"][0] == {
        "family": "streak",
        "threshold": 14,
        "title": "Two Week Streak",
        "description": "Played on 14 days in a row.",
        "current": 7,
        "percent": 50.0,
    }
    assert data["explanations"]["therapeutic_momentum"]["inputs"] == {
        "markers_recent": 12,
        "current_streak_days": 7,
        "sessions_this_week": 7,
    }
    assert data["explanations"]["dropout_risk_score"]["terms"] == [
        {"label": "Current streak of 7 days (7 or more)", "contribution": -0.2}
    ]
    assert data["inputs"]["marker_counts"]["insight"] == 12


# --- recommendations ----------------------------------------------------------------------------


def summary_with(*, streak: int = 0, momentum: float = 0.3, risk: float = 0.0):
    base = compute_summary(history(0))
    return replace(
        base,
        metrics=replace(base.metrics, current_streak_days=streak),
        therapeutic_momentum=ScoredValue(momentum, (), {}),
        dropout_risk=replace(base.dropout_risk, value=risk),
    )


@pytest.mark.parametrize(
    ("streak", "momentum", "expected"),
    [(3, 0.6, True), (2, 0.9, False), (3, 0.59, False), (10, 1.0, True)],
)
def test_maintain_pace(streak, momentum, expected):
    drafts = recommendations(summary_with(streak=streak, momentum=momentum), history(0))
    found = [d for d in drafts if d.type == "maintain_pace"]
    assert bool(found) == expected
    if expected:
        assert (found[0].title, found[0].priority) == ("Maintain current pace", 2)
        assert f"{streak} days" in found[0].reasoning
        assert f"{momentum:g}" in found[0].reasoning


@pytest.mark.parametrize(("risk", "expected"), [(0.6, False), (0.61, True), (0.8, True)])
def test_shorter_sessions(risk, expected):
    drafts = recommendations(summary_with(risk=risk), history(0))
    found = [d for d in drafts if d.type == "shorter_sessions"]
    assert bool(found) == expected
    if expected:
        assert (found[0].title, found[0].priority) == ("Shorter, more frequent sessions", 1)
        assert f"{risk:g}" in found[0].reasoning


def test_shorter_sessions_reasoning_lists_the_terms():
    summary = compute_summary(PatientHistory(today=TODAY, timezone="UTC"))
    (draft,) = recommendations(summary, PatientHistory(today=TODAY, timezone="UTC"))
    assert draft.reasoning == (
        "Dropout risk score is 0.8 (above 0.6): No session ever (+0.5); No session this week (+0.2); "
        "Average session length 0 min (under 10) (+0.1)."
    )


@pytest.mark.parametrize(
    ("skills", "approaches", "title", "reason"),
    [
        (2, {"cbt": 2}, None, None),
        # Approaches are named as clinicians write them (CBT, ACT).
        (3, {"cbt": 2, "mindfulness": 2, "act": 1}, "Continue CBT practice", "CBT is the approach practised most"),
        (4, {"act": 3, "cbt": 1}, "Continue ACT practice", "(3 of them)"),
        (3, {}, "Continue mindfulness practice", "the default (mindfulness)"),
        (3, {"cbt": 0}, "Continue mindfulness practice", "the default (mindfulness)"),
    ],
)
def test_continue_approach(skills, approaches, title, reason):
    hist = history(0, skills_last_7_days=skills, approaches_last_7_days=approaches)
    found = [d for d in recommendations(summary_with(), hist) if d.type == "continue_approach"]
    assert [d.title for d in found] == ([title] if title else [])
    if title:
        assert found[0].priority == 3
        assert f"{skills} skills acquired in the last 7 days" in found[0].reasoning
        assert reason in found[0].reasoning


def test_recommendations_are_ordered_by_priority():
    hist = history(0, skills_last_7_days=3)
    drafts = recommendations(summary_with(streak=3, momentum=0.7, risk=0.7), hist)
    assert [d.priority for d in drafts] == [1, 2, 3]


def test_most_practised_approach_breaks_ties_alphabetically():
    assert most_practised_approach({"zen": 2, "act": 2, "cbt": 1}) == "act"
    assert most_practised_approach({}) is None


# --- visualization ------------------------------------------------------------------------------


@pytest.mark.parametrize("days", [1, 14, 90])
def test_visualization_buckets(days):
    sessions = {ago(o): (2, 30.5) for o in range(0, 100, 3)}
    markers = {ago(o): (3, 1) for o in range(0, 100, 4)}
    viz = visualization_series(TODAY, "Europe/London", days, sessions, markers)
    buckets = viz["time_buckets"]
    assert len(buckets) == days
    assert buckets[-1] == "2025-03-20"
    assert buckets[0] == ago(days - 1).isoformat()
    assert buckets == sorted(buckets)
    window = [ago(o) for o in range(days)]
    series = viz["series"]
    assert all(len(values) == days for values in series.values())
    assert sum(series["sessions"]) == sum(sessions.get(d, (0, 0))[0] for d in window)
    assert sum(series["duration_minutes"]) == pytest.approx(sum(sessions.get(d, (0, 0))[1] for d in window))
    assert sum(series["markers"]) == sum(markers.get(d, (0, 0))[0] for d in window)
    assert sum(series["skills_acquired"]) == sum(markers.get(d, (0, 0))[1] for d in window)
    assert viz["meta"]["period_days"] == days
    assert viz["meta"]["timezone"] == "Europe/London"
    assert set(viz["meta"]["units"]) == set(series)


def test_visualization_places_values_on_their_day():
    viz = visualization_series(TODAY, "UTC", 3, {ago(1): (2, 45.0)}, {ago(0): (4, 2)})
    assert viz["series"] == {
        "sessions": [0, 2, 0],
        "duration_minutes": [0.0, 45.0, 0.0],
        "skills_acquired": [0, 0, 2],
        "markers": [0, 0, 4],
    }


@pytest.mark.parametrize("days", [0, 91, -1, True, 14.0])
def test_visualization_rejects_days_outside_range(days):
    with pytest.raises(ValueError, match="1 to 90"):
        visualization_series(TODAY, "UTC", days, {}, {})


@pytest.mark.parametrize(
    "active_days, days_since, expected",
    [(3, 14, True), (3, 13, False), (2, 14, False), (10, 30, True), (5, 0, False)],
)
def test_disengagement_needs_3_active_days_then_14_without(active_days, days_since, expected):
    today = date(2026, 11, 25)
    last = today - timedelta(days=days_since)
    days = [last - timedelta(days=n) for n in range(active_days)][::-1]
    history = PatientHistory(
        today=today,
        timezone="UTC",
        active_days=tuple(ActiveDay(d, 1, 20.0, datetime(d.year, d.month, d.day, 9, tzinfo=UTC)) for d in days),
    )
    metrics = engagement_metrics(history)
    assert is_disengaged(metrics, len(history.active_days)) is expected


def test_a_patient_who_never_played_is_not_disengaged():
    metrics = engagement_metrics(PatientHistory(today=date(2026, 11, 25), timezone="UTC"))
    assert is_disengaged(metrics, 0) is False
