"""Progress analytics: the rules of DESIGN.md §4 as small pure functions.

Plain data in, plain data out: no Django, no ORM, no clock, no I/O. The caller aggregates a patient's
history in the database (per patient-local day) and passes `today` and the timezone in.

Every score is returned as a `ScoredValue` carrying the terms and inputs that produced it, so the UI and
the API can explain each number. Scores are rounded to 4 decimals *before* they are compared with a
threshold, so 0.2 + 0.4 is exactly 0.6 (and not "more than 0.6").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import reduce
from operator import add, attrgetter, lt
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

MARKER_TYPES: tuple[str, ...] = (
    "milestone",
    "breakthrough",
    "skill_acquired",
    "goal_achieved",
    "setback_overcome",
    "insight",
    "therapeutic_goal",
)
MILESTONE_FAMILIES: tuple[str, ...] = ("streak", "skills", "sessions", "breakthroughs")
DEFAULT_APPROACH = "mindfulness"
# Dropout risk levels: above DROPOUT_HIGH the patient is "at risk" and shorter, more frequent sessions are
# recommended; from DROPOUT_MEDIUM it is shown as medium.
DROPOUT_HIGH = 0.6
DROPOUT_MEDIUM = 0.3
# Open alerts of these severities put "Review the open alert" first and hold back "Maintain current pace".
SERIOUS_ALERT_SEVERITIES = frozenset({"urgent", "high"})
# Approaches as clinicians write them; the game sends lower-case names.
APPROACH_LABELS = {"act": "ACT", "cbt": "CBT", "dbt": "DBT", "emdr": "EMDR", "mbct": "MBCT", "cft": "CFT"}
# DESIGN does not fix a therapeutic value for milestone highlights; one constant keeps them comparable.
MILESTONE_THERAPEUTIC_VALUE = 0.8
VIZ_MAX_DAYS = 90
DECIMALS = 4

Terms = tuple[tuple[str, float], ...]


# --------------------------------------------------------------------------------------------------
# Data in
# --------------------------------------------------------------------------------------------------


class ActiveDay(NamedTuple):
    """One patient-local calendar day on which at least one session started. A named tuple, not a
    dataclass: a year of history is hundreds of these per patient, and a tuple is made several times
    faster than a frozen dataclass."""

    day: date
    sessions: int
    minutes: float  # sum of duration_minutes of the sessions started that day
    first_started_at: datetime  # aware UTC start of the earliest session that day


# Field readers that run in C: a year of history is hundreds of days per patient, and the rules read
# every day's count more than once (the recompute's cost per added session, docs/performance.md).
DAY_OF = attrgetter("day")
SESSIONS_OF = attrgetter("sessions")
MINUTES_OF = attrgetter("minutes")


def total_sessions(active_days: Iterable[ActiveDay]) -> int:
    return sum(map(SESSIONS_OF, active_days))


@dataclass(frozen=True)
class MilestoneRule:
    family: str  # one of MILESTONE_FAMILIES
    threshold: int
    title: str
    description: str

    def __post_init__(self) -> None:
        if self.family not in MILESTONE_FAMILIES:
            raise ValueError(f"Unknown milestone family {self.family!r}; expected one of {MILESTONE_FAMILIES}.")
        if self.threshold < 1:
            raise ValueError(f"Milestone threshold must be at least 1, got {self.threshold}.")


DEFAULT_MILESTONE_RULES: tuple[MilestoneRule, ...] = (
    MilestoneRule("streak", 7, "One Week Streak", "Played on 7 days in a row."),
    MilestoneRule("streak", 14, "Two Week Streak", "Played on 14 days in a row."),
    MilestoneRule("streak", 30, "One Month Streak", "Played on 30 days in a row."),
    MilestoneRule("skills", 5, "Skill Builder Level 1", "Acquired 5 skills."),
    MilestoneRule("skills", 10, "Skill Builder Level 2", "Acquired 10 skills."),
    MilestoneRule("skills", 20, "Skill Builder Level 3", "Acquired 20 skills."),
    *(
        MilestoneRule("sessions", n, f"{n} Sessions Completed", f"Took part in {n} sessions.")
        for n in (5, 10, 25, 50, 100)
    ),
    MilestoneRule("breakthroughs", 1, "Breakthrough Explorer Level 1", "Reached a first breakthrough."),
    MilestoneRule("breakthroughs", 3, "Breakthrough Explorer Level 2", "Reached 3 breakthroughs."),
    MilestoneRule("breakthroughs", 5, "Breakthrough Explorer Level 3", "Reached 5 breakthroughs."),
)


@dataclass(frozen=True)
class PatientHistory:
    """Everything the rules need, aggregated by the database beforehand.

    `nth_*` map a threshold N to the moment the N-th item happened; they need entries only for the
    thresholds of the milestone rules that have been reached (see `thresholds_for`).
    """

    today: date  # patient-local today
    timezone: str
    active_days: tuple[ActiveDay, ...] = ()  # the whole history, ascending
    marker_counts: Mapping[str, int] = field(default_factory=dict)  # whole history, per marker type
    markers_recent: int = 0  # markers achieved in the 14 local days ending today
    skills_last_7_days: int = 0  # skill_acquired markers achieved in the 7 local days ending today
    approaches_last_7_days: Mapping[str, int] = field(default_factory=dict)  # approach -> those skill markers
    nth_session_started_at: Mapping[int, datetime] = field(default_factory=dict)
    nth_skill_at: Mapping[int, datetime] = field(default_factory=dict)
    nth_breakthrough_at: Mapping[int, datetime] = field(default_factory=dict)
    # The patient's open alerts as (severity, kind label), most severe first: while one of urgent or high
    # severity is open, reviewing it comes before any advice about engagement.
    open_alerts: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        days = list(map(DAY_OF, self.active_days))
        if not all(map(lt, days, days[1:])):
            raise ValueError("active_days must be strictly ascending, one entry per day.")


# --------------------------------------------------------------------------------------------------
# Data out
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredValue:
    """A score with the terms that produced it (label, contribution) and the inputs it read."""

    value: float
    terms: Terms
    inputs: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "terms": [{"label": label, "contribution": c} for label, c in self.terms],
            "inputs": _jsonable(dict(self.inputs)),
        }


@dataclass(frozen=True)
class EngagementMetrics:
    total_sessions: int
    total_time_minutes: float
    average_session_length: float
    sessions_this_week: int  # today and the 6 days before
    sessions_this_month: int  # the 30 days ending today
    sessions_last_7: int  # same window as sessions_this_week
    sessions_previous_7: int  # the 7 days before those
    last_active_day: date | None
    days_since_last_active: int | None
    current_streak_days: int
    longest_streak_days: int


@dataclass(frozen=True)
class AchievedMilestone:
    rule: MilestoneRule
    achieved_at: datetime


@dataclass(frozen=True)
class InProgressMilestone:
    rule: MilestoneRule
    current: int
    percent: float  # current / threshold × 100, capped at 100


@dataclass(frozen=True)
class ProgressSummaryData:
    today: date
    timezone: str
    metrics: EngagementMetrics
    markers_recent: int
    dropout_risk: ScoredValue
    therapeutic_momentum: ScoredValue
    readiness_for_advancement: ScoredValue
    overall_progress_score: ScoredValue
    progress_trend: str
    engagement_trend: str
    milestones_achieved: tuple[AchievedMilestone, ...]
    milestones_in_progress: tuple[InProgressMilestone, ...]
    inputs: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (dates and datetimes as ISO 8601 strings): what the API returns."""
        m = self.metrics
        return {
            "today": self.today.isoformat(),
            "timezone": self.timezone,
            "total_sessions": m.total_sessions,
            "total_time_minutes": m.total_time_minutes,
            "average_session_length": m.average_session_length,
            "sessions_this_week": m.sessions_this_week,
            "sessions_this_month": m.sessions_this_month,
            "sessions_last_7_days": m.sessions_last_7,
            "sessions_previous_7_days": m.sessions_previous_7,
            "last_active_day": _jsonable(m.last_active_day),
            "days_since_last_active": m.days_since_last_active,
            "current_streak_days": m.current_streak_days,
            "longest_streak_days": m.longest_streak_days,
            "markers_recent": self.markers_recent,
            "dropout_risk_score": self.dropout_risk.value,
            "therapeutic_momentum": self.therapeutic_momentum.value,
            "readiness_for_advancement": self.readiness_for_advancement.value,
            "overall_progress_score": self.overall_progress_score.value,
            "progress_trend": self.progress_trend,
            "engagement_trend": self.engagement_trend,
            "milestones_achieved": [
                {**_rule_dict(a.rule), "achieved_at": a.achieved_at.isoformat()} for a in self.milestones_achieved
            ],
            "milestones_in_progress": [
                {**_rule_dict(p.rule), "current": p.current, "percent": p.percent} for p in self.milestones_in_progress
            ],
            "explanations": {
                "dropout_risk_score": self.dropout_risk.to_dict(),
                "therapeutic_momentum": self.therapeutic_momentum.to_dict(),
                "readiness_for_advancement": self.readiness_for_advancement.to_dict(),
                "overall_progress_score": self.overall_progress_score.to_dict(),
            },
            "inputs": _jsonable(dict(self.inputs)),
        }


@dataclass(frozen=True)
class RecommendationDraft:
    type: str
    title: str
    description: str
    priority: int  # 1 = highest
    reasoning: str


@dataclass(frozen=True)
class HighlightDraft:
    type: str
    title: str
    description: str
    achieved_at: datetime
    therapeutic_value: float


# --------------------------------------------------------------------------------------------------
# Days and streaks
# --------------------------------------------------------------------------------------------------


def local_day(dt: datetime, timezone: str) -> date:
    """The patient-local calendar date of an aware datetime."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("local_day needs a timezone-aware datetime.")
    return dt.astimezone(ZoneInfo(timezone)).date()


def active_days_from_sessions(sessions: Iterable[tuple[datetime, float]], timezone: str) -> tuple[ActiveDay, ...]:
    """Group (started_at, duration_minutes) pairs into ActiveDays by the local day each session started."""
    by_day: dict[date, ActiveDay] = {}
    for started_at, minutes in sessions:
        day = local_day(started_at, timezone)
        seen = by_day.get(day)
        if seen is None:
            by_day[day] = ActiveDay(day, 1, minutes, started_at)
        else:
            by_day[day] = ActiveDay(
                day, seen.sessions + 1, seen.minutes + minutes, min(seen.first_started_at, started_at)
            )
    return tuple(by_day[d] for d in sorted(by_day))


def current_streak(days: Sequence[date], today: date) -> int:
    """Consecutive active days ending today, or yesterday; 0 when the latest is older than yesterday."""
    active = set(days)
    day = today if today in active else today - timedelta(days=1)
    streak = 0
    while day in active:
        streak += 1
        day -= timedelta(days=1)
    return streak


def longest_streak(days: Sequence[date]) -> int:
    longest = run = 0
    previous: date | None = None
    for day in sorted(set(days)):
        run = run + 1 if previous is not None and day - previous == timedelta(days=1) else 1
        longest = max(longest, run)
        previous = day
    return longest


def sessions_between(active_days: Iterable[ActiveDay], first: date, last: date) -> int:
    """Sessions started on the local days first..last, both included."""
    return sum(d.sessions for d in active_days if first <= d.day <= last)


# --------------------------------------------------------------------------------------------------
# Metrics and scores
# --------------------------------------------------------------------------------------------------


def engagement_metrics(history: PatientHistory) -> EngagementMetrics:
    """The engagement numbers of §4, in one pass over the days (newest first for the windows and the
    current streak) and one for the longest run."""
    today, days = history.today, history.active_days
    sessions = total_sessions(days)
    total_minutes = reduce(add, map(MINUTES_OF, days), 0.0)  # added in order, as a loop would
    last_active = days[-1].day if days else None
    week_start, month_start = today - timedelta(days=6), today - timedelta(days=29)
    previous_start, previous_end = today - timedelta(days=13), today - timedelta(days=7)
    this_week = this_month = previous_7 = 0
    for d in reversed(days):
        if d.day < month_start and d.day < previous_start:
            break  # ascending days: every older one is outside all the windows
        if d.day > today:
            continue
        if d.day >= month_start:
            this_month += d.sessions
        if d.day >= week_start:
            this_week += d.sessions
        elif previous_start <= d.day <= previous_end:
            previous_7 += d.sessions
    return EngagementMetrics(
        total_sessions=sessions,
        total_time_minutes=round(total_minutes, 2),
        average_session_length=round(total_minutes / sessions, 2) if sessions else 0.0,
        sessions_this_week=this_week,
        sessions_this_month=this_month,
        sessions_last_7=this_week,
        sessions_previous_7=previous_7,
        last_active_day=last_active,
        days_since_last_active=(today - last_active).days if last_active else None,
        current_streak_days=_current_streak_of(days, today),
        longest_streak_days=_longest_run(days),
    )


def _current_streak_of(days: Sequence[ActiveDay], today: date) -> int:
    """`current_streak` over ascending, distinct active days, reading only the run at the end."""
    one = timedelta(days=1)
    i = len(days) - 1
    while i >= 0 and days[i].day > today:  # days after today (a clock skew) are not part of the run
        i -= 1
    if i < 0 or days[i].day < today - one:
        return 0
    streak, expected = 0, days[i].day
    while i >= 0 and days[i].day == expected:
        streak += 1
        expected -= one
        i -= 1
    return streak


def _longest_run(days: Sequence[ActiveDay]) -> int:
    """`longest_streak` over ascending, distinct active days."""
    longest = run = 0
    one = timedelta(days=1)
    previous: date | None = None
    for d in days:
        run = run + 1 if previous is not None and d.day - previous == one else 1
        if run > longest:
            longest = run
        previous = d.day
    return longest


def _scored(terms: list[tuple[str, float]], inputs: Mapping[str, Any]) -> ScoredValue:
    """Sum the terms, clamp to [0, 1], round (before any comparison with a threshold)."""
    rounded = tuple((label, round(c, DECIMALS)) for label, c in terms)
    value = round(min(1.0, max(0.0, sum(c for _, c in terms))), DECIMALS)
    return ScoredValue(value=value, terms=rounded, inputs=dict(inputs))


def dropout_risk(metrics: EngagementMetrics) -> ScoredValue:
    """DESIGN §4 dropout_risk_score: the sum of the terms that apply, clamped to [0, 1]."""
    m = metrics
    terms: list[tuple[str, float]] = []
    if m.total_sessions == 0:
        terms.append(("No session ever", 0.5))
    days = m.days_since_last_active
    if days is not None:
        if days > 14:
            terms.append((f"{days} days since the last active day (more than 14)", 0.5))
        elif days > 7:
            terms.append((f"{days} days since the last active day (more than 7)", 0.4))
        elif days > 3:
            terms.append((f"{days} days since the last active day (more than 3)", 0.2))
    if m.sessions_this_week == 0:
        terms.append(("No session this week", 0.2))
    elif m.sessions_this_week == 1:
        terms.append(("Only 1 session this week", 0.1))
    if m.sessions_last_7 < m.sessions_previous_7:
        fewer = (
            f"Fewer sessions in the last 7 days ({m.sessions_last_7}) than in the 7 before ({m.sessions_previous_7})"
        )
        terms.append((fewer, 0.1))
    if m.average_session_length < 10:
        terms.append((f"Average session length {m.average_session_length:g} min (under 10)", 0.1))
    if m.current_streak_days >= 7:
        terms.append((f"Current streak of {m.current_streak_days} days (7 or more)", -0.2))
    elif m.current_streak_days >= 3:
        terms.append((f"Current streak of {m.current_streak_days} days (3 or more)", -0.1))
    inputs = {
        "total_sessions": m.total_sessions,
        "days_since_last_active": m.days_since_last_active,
        "sessions_this_week": m.sessions_this_week,
        "sessions_last_7_days": m.sessions_last_7,
        "sessions_previous_7_days": m.sessions_previous_7,
        "average_session_length": m.average_session_length,
        "current_streak_days": m.current_streak_days,
    }
    return _scored(terms, inputs)


def therapeutic_momentum(*, markers_recent: int, current_streak: int, sessions_this_week: int) -> ScoredValue:
    terms = [
        ("Base", 0.3),
        (
            f"{markers_recent} progress markers in the last 14 days × 0.02 (at most 0.3)",
            min(0.3, 0.02 * markers_recent),
        ),
        (f"Current streak of {current_streak} days × 0.01 (at most 0.2)", min(0.2, 0.01 * current_streak)),
        (f"{sessions_this_week} sessions this week × 0.05 (at most 0.2)", min(0.2, 0.05 * sessions_this_week)),
    ]
    inputs = {
        "markers_recent": markers_recent,
        "current_streak_days": current_streak,
        "sessions_this_week": sessions_this_week,
    }
    return _scored(terms, inputs)


def readiness_for_advancement(*, momentum: float, milestones_achieved: int, current_streak: int) -> ScoredValue:
    terms = [
        ("Base", 0.2),
        (f"Therapeutic momentum {momentum:g} × 0.3", 0.3 * momentum),
        (f"{milestones_achieved} milestones achieved × 0.05 (at most 0.3)", min(0.3, 0.05 * milestones_achieved)),
        (f"Current streak of {current_streak} days × 0.01 (at most 0.2)", min(0.2, 0.01 * current_streak)),
    ]
    inputs = {
        "therapeutic_momentum": momentum,
        "milestones_achieved": milestones_achieved,
        "current_streak_days": current_streak,
    }
    return _scored(terms, inputs)


def overall_progress_score(*, achieved: int, in_progress: int, momentum: float, current_streak: int) -> ScoredValue:
    """0.4 × achieved share of milestones + 0.3 × momentum + 0.3 × streak share of 30 days.

    The milestone share is 0 when there is no milestone at all (no rules configured).
    """
    share = achieved / (achieved + in_progress) if achieved + in_progress else 0.0
    terms = [
        (f"{achieved} of {achieved + in_progress} milestones (achieved + in progress) × 0.4", 0.4 * share),
        (f"Therapeutic momentum {momentum:g} × 0.3", 0.3 * momentum),
        (f"Current streak of {current_streak} days out of 30 × 0.3", 0.3 * min(1.0, current_streak / 30)),
    ]
    inputs = {
        "milestones_achieved": achieved,
        "milestones_in_progress": in_progress,
        "therapeutic_momentum": momentum,
        "current_streak_days": current_streak,
    }
    return _scored(terms, inputs)


def progress_trend(*, markers_recent: int, sessions_this_week: int, current_streak: int, dropout_risk: float) -> str:
    """First match wins: improving, stable, declining, else stable."""
    if markers_recent >= 10 and sessions_this_week >= 3 and current_streak >= 5:
        return "improving"
    if markers_recent >= 5 and sessions_this_week >= 2 and current_streak >= 2:
        return "stable"
    if sessions_this_week == 0 or dropout_risk > DROPOUT_HIGH:
        return "declining"
    return "stable"


DISENGAGED_AFTER_DAYS = 14  # DESIGN §7: no active day for 14 days ...
DISENGAGED_MIN_ACTIVE_DAYS = 3  # ... after at least 3 active days


def is_disengaged(metrics: EngagementMetrics, active_day_count: int) -> bool:
    """A patient who had engaged (3+ active days) and has had no active day for 14 days or more."""
    return (
        active_day_count >= DISENGAGED_MIN_ACTIVE_DAYS
        and metrics.days_since_last_active is not None
        and metrics.days_since_last_active >= DISENGAGED_AFTER_DAYS
    )


def engagement_trend(*, sessions_last_7: int, sessions_previous_7: int, dropout_risk: float) -> str:
    if sessions_last_7 > sessions_previous_7:
        return "increasing"
    if sessions_last_7 < sessions_previous_7 and dropout_risk > 0.4:
        return "decreasing"
    return "stable"


# --------------------------------------------------------------------------------------------------
# Milestones
# --------------------------------------------------------------------------------------------------


def thresholds_for(rules: Iterable[MilestoneRule], family: str) -> tuple[int, ...]:
    """The thresholds of one family, ascending: the N the caller must fill `nth_*` maps for."""
    return tuple(sorted({r.threshold for r in rules if r.family == family}))


def streak_reached_at(active_days: Sequence[ActiveDay], threshold: int) -> datetime | None:
    """Start of the first session of the day the first run of consecutive active days reached `threshold`."""
    run = 0
    previous: date | None = None
    for day in active_days:
        run = run + 1 if previous is not None and day.day - previous == timedelta(days=1) else 1
        if run == threshold:
            return day.first_started_at
        previous = day.day
    return None


def streak_crossings(active_days: Sequence[ActiveDay], thresholds: Iterable[int]) -> dict[int, datetime]:
    """`streak_reached_at` for several thresholds in one pass over the days: threshold → the start of the
    first session of the day the first run reached it (thresholds never reached are absent)."""
    pending = sorted(set(thresholds))
    found: dict[int, datetime] = {}
    if not pending:
        return found
    one = timedelta(days=1)
    run = 0
    previous: date | None = None
    k = 0  # pending[k] is the smallest threshold not reached yet
    for day in active_days:
        run = run + 1 if previous is not None and day.day - previous == one else 1
        # A run grows by one a day, so it meets each threshold exactly when run == threshold.
        if run == pending[k]:
            found[pending[k]] = day.first_started_at
            k += 1
            if k == len(pending):
                break
        previous = day.day
    return found


def family_count(history: PatientHistory, family: str) -> int:
    """The count a family's progress is measured by (the current streak for streaks)."""
    if family == "streak":
        return _current_streak_of(history.active_days, history.today)
    if family == "sessions":
        return total_sessions(history.active_days)
    if family == "skills":
        return history.marker_counts.get("skill_acquired", 0)
    return history.marker_counts.get("breakthrough", 0)


def _family_counts(history: PatientHistory) -> dict[str, int]:
    return {family: family_count(history, family) for family in MILESTONE_FAMILIES}


def _count_reached_at(history: PatientHistory, rule: MilestoneRule, count: int | None = None) -> datetime | None:
    """The N-th item's moment once the count reaches N; a reached N missing from `nth_*` is a caller bug."""
    if (family_count(history, rule.family) if count is None else count) < rule.threshold:
        return None
    nth = {
        "sessions": history.nth_session_started_at,
        "skills": history.nth_skill_at,
        "breakthroughs": history.nth_breakthrough_at,
    }[rule.family]
    if rule.threshold not in nth:
        raise ValueError(f"{rule.family} milestone {rule.threshold} is reached but its moment is missing from history.")
    return nth[rule.threshold]


def detect_milestones(
    history: PatientHistory, rules: Sequence[MilestoneRule] = DEFAULT_MILESTONE_RULES
) -> list[AchievedMilestone]:
    """Every rule the whole history has reached, with the moment its threshold was crossed (rules order).
    One pass over the days finds every streak threshold; the counts are taken once."""
    streaks = streak_crossings(history.active_days, thresholds_for(rules, "streak"))
    counts = _family_counts(history)
    achieved = []
    for rule in rules:
        if rule.family == "streak":
            at = streaks.get(rule.threshold)
        else:
            at = _count_reached_at(history, rule, counts[rule.family])
        if at is not None:
            achieved.append(AchievedMilestone(rule, at))
    return achieved


def in_progress_milestones(
    history: PatientHistory,
    achieved: Iterable[AchievedMilestone],
    rules: Sequence[MilestoneRule] = DEFAULT_MILESTONE_RULES,
) -> list[InProgressMilestone]:
    """The lowest not-yet-achieved threshold of each family; a family with all thresholds achieved has none."""
    done = {(a.rule.family, a.rule.threshold) for a in achieved}
    result = []
    counts: dict[str, int] | None = None
    for family in MILESTONE_FAMILIES:
        pending = sorted(
            (r for r in rules if r.family == family and (family, r.threshold) not in done), key=lambda r: r.threshold
        )
        if not pending:
            continue
        rule = pending[0]
        counts = counts or _family_counts(history)
        current = counts[family]
        result.append(InProgressMilestone(rule, current, min(100.0, round(100 * current / rule.threshold, 1))))
    return result


def highlight_for_milestone(achieved: AchievedMilestone) -> HighlightDraft:
    return HighlightDraft(
        type="milestone",
        title=achieved.rule.title,
        description=achieved.rule.description,
        achieved_at=achieved.achieved_at,
        therapeutic_value=MILESTONE_THERAPEUTIC_VALUE,
    )


# --------------------------------------------------------------------------------------------------
# Summary and insights
# --------------------------------------------------------------------------------------------------


def compute_summary(
    history: PatientHistory, rules: Sequence[MilestoneRule] = DEFAULT_MILESTONE_RULES
) -> ProgressSummaryData:
    metrics = engagement_metrics(history)
    streak = metrics.current_streak_days
    risk = dropout_risk(metrics)
    momentum = therapeutic_momentum(
        markers_recent=history.markers_recent, current_streak=streak, sessions_this_week=metrics.sessions_this_week
    )
    achieved = detect_milestones(history, rules)
    in_progress = in_progress_milestones(history, achieved, rules)
    readiness = readiness_for_advancement(
        momentum=momentum.value, milestones_achieved=len(achieved), current_streak=streak
    )
    overall = overall_progress_score(
        achieved=len(achieved), in_progress=len(in_progress), momentum=momentum.value, current_streak=streak
    )
    inputs = {
        "marker_counts": {t: history.marker_counts.get(t, 0) for t in MARKER_TYPES},
        "markers_recent": history.markers_recent,
        "skills_last_7_days": history.skills_last_7_days,
        "approaches_last_7_days": dict(history.approaches_last_7_days),
        "milestones_achieved": len(achieved),
        "milestones_in_progress": len(in_progress),
    }
    return ProgressSummaryData(
        today=history.today,
        timezone=history.timezone,
        metrics=metrics,
        markers_recent=history.markers_recent,
        dropout_risk=risk,
        therapeutic_momentum=momentum,
        readiness_for_advancement=readiness,
        overall_progress_score=overall,
        progress_trend=progress_trend(
            markers_recent=history.markers_recent,
            sessions_this_week=metrics.sessions_this_week,
            current_streak=streak,
            dropout_risk=risk.value,
        ),
        engagement_trend=engagement_trend(
            sessions_last_7=metrics.sessions_last_7,
            sessions_previous_7=metrics.sessions_previous_7,
            dropout_risk=risk.value,
        ),
        milestones_achieved=tuple(achieved),
        milestones_in_progress=tuple(in_progress),
        inputs=inputs,
    )


def most_practised_approach(approaches: Mapping[str, int]) -> str | None:
    """The approach with the highest count; ties go to the alphabetically first; None when there is none."""
    practised = [(name, n) for name, n in approaches.items() if n > 0]
    if not practised:
        return None
    return min(practised, key=lambda item: (-item[1], item[0]))[0]


def dropout_level(score: float) -> str:
    """ "high" above 0.6, "medium" from 0.3, else "low": how the dropout risk is shown in words."""
    return "high" if score > DROPOUT_HIGH else "medium" if score >= DROPOUT_MEDIUM else "low"


def approach_label(name: str) -> str:
    """'cbt' → 'CBT'; names that are not acronyms stay as they are ('mindfulness')."""
    return APPROACH_LABELS.get(name.strip().lower(), name)


def recommendations(summary: ProgressSummaryData, history: PatientHistory) -> list[RecommendationDraft]:
    """The DESIGN §4 insights that apply, highest priority (1) first. While an urgent or high alert is
    open, "Review the open alert" heads the list and "Maintain current pace" is not offered: advice to
    keep going must not sit beside an unreviewed crisis."""
    streak = summary.metrics.current_streak_days
    momentum = summary.therapeutic_momentum.value
    risk = summary.dropout_risk
    drafts = []
    serious = [(severity, kind) for severity, kind in history.open_alerts if severity in SERIOUS_ALERT_SEVERITIES]
    if serious:
        listed = "; ".join(f"{severity}: {kind}" for severity, kind in serious)
        drafts.append(
            RecommendationDraft(
                type="review_alert",
                title="Review the open alert",
                description="Read and acknowledge the open alert before acting on any engagement advice.",
                priority=1,
                reasoning=f"{len(serious)} open alert{'s' if len(serious) != 1 else ''} of urgent or high "
                f"severity ({listed}).",
            )
        )
    if risk.value > DROPOUT_HIGH:
        reasons = "; ".join(f"{label} (+{c:g})" if c > 0 else f"{label} ({c:g})" for label, c in risk.terms)
        drafts.append(
            RecommendationDraft(
                type="shorter_sessions",
                title="Shorter, more frequent sessions",
                description="Suggest shorter sessions on more days to rebuild a routine.",
                priority=1,
                reasoning=f"Dropout risk score is {risk.value:g} (above 0.6): {reasons}.",
            )
        )
    if streak >= 3 and momentum >= 0.6 and not serious:
        drafts.append(
            RecommendationDraft(
                type="maintain_pace",
                title="Maintain current pace",
                description="The patient is engaging steadily; keep the current rhythm of sessions.",
                priority=2,
                reasoning=f"Current streak is {streak} days (3 or more) and therapeutic momentum is {momentum:g} "
                "(0.6 or more).",
            )
        )
    skills = history.skills_last_7_days
    if skills >= 3:
        approach = most_practised_approach(history.approaches_last_7_days)
        if approach is None:
            why = f"no approach was recorded in those sessions, so the default ({DEFAULT_APPROACH}) is suggested"
            approach = DEFAULT_APPROACH
        else:
            count = history.approaches_last_7_days[approach]
            why = f"{approach_label(approach)} is the approach practised most in those sessions ({count} of them)"
        drafts.append(
            RecommendationDraft(
                type="continue_approach",
                title=f"Continue {approach_label(approach)} practice",
                description=f"Skills are being acquired quickly; build on {approach_label(approach)}.",
                priority=3,
                reasoning=f"{skills} skills acquired in the last 7 days (3 or more); {why}.",
            )
        )
    return drafts


# --------------------------------------------------------------------------------------------------
# Visualization
# --------------------------------------------------------------------------------------------------


def check_viz_days(days: int) -> None:
    """`days` of a ProgressVizSeries: a whole number from 1 to 90."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= VIZ_MAX_DAYS:
        raise ValueError(f"days must be a whole number from 1 to {VIZ_MAX_DAYS}, got {days!r}.")


def visualization_series(
    today: date,
    timezone: str,
    days: int,
    sessions_by_day: Mapping[date, tuple[int, float]],
    markers_by_day: Mapping[date, tuple[int, int]],
) -> dict[str, Any]:
    """ProgressVizSeries: `days` local-day buckets ending today, oldest first.

    `sessions_by_day`: local day -> (sessions started, minutes); `markers_by_day`: local day ->
    (markers achieved, of which skill_acquired). Days outside the window are ignored.
    """
    check_viz_days(days)
    buckets = [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
    return {
        "time_buckets": [d.isoformat() for d in buckets],
        "series": {
            "sessions": [sessions_by_day.get(d, (0, 0.0))[0] for d in buckets],
            "duration_minutes": [round(sessions_by_day.get(d, (0, 0.0))[1], 2) for d in buckets],
            "skills_acquired": [markers_by_day.get(d, (0, 0))[1] for d in buckets],
            "markers": [markers_by_day.get(d, (0, 0))[0] for d in buckets],
        },
        "meta": {
            "period_days": days,
            "timezone": timezone,
            "units": {
                "sessions": "sessions started per day",
                "duration_minutes": "minutes per day",
                "skills_acquired": "skill_acquired markers per day",
                "markers": "progress markers per day",
            },
        },
    }


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _rule_dict(rule: MilestoneRule) -> dict[str, Any]:
    return {"family": rule.family, "threshold": rule.threshold, "title": rule.title, "description": rule.description}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
