"""What the analytics recompute reads (DESIGN §3, §4): a patient's local day, the clinic's milestone
rules, and each patient's history aggregated by the database (active days, from the days stored by the
sessions' triggers; marker counts; the moments count milestones were crossed; open alerts), for many
patients in a fixed number of queries.

These are the recompute's inputs, apart from the pages' selectors (`tracking.selectors`).
"""

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from itertools import repeat
from typing import Any
from zoneinfo import ZoneInfo

from django.core.cache import cache
from django.db import DataError, connection
from django.db.models import Count, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from reports.models import Alert, AlertKind
from reports.selectors import severity_rank
from tracking import analytics
from tracking.models import (
    Clinic,
    ClinicMilestoneRule,
    MarkerType,
    Milestone,
    Patient,
    ProgressMarker,
    ProgressSummary,
    TherapySession,
)


def local_today(tz_name: str, now: datetime | None = None) -> date:
    return (now or timezone.now()).astimezone(ZoneInfo(tz_name)).date()


def local_midnight(day: date, tz_name: str) -> datetime:
    """The UTC instant a patient-local day begins."""
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(tz_name)).astimezone(UTC)


def milestone_rules_for(clinic: Clinic) -> tuple[analytics.MilestoneRule, ...]:
    """The clinic's own milestone rules, or the defaults when it has none."""
    key = ClinicMilestoneRule.cache_key(clinic.pk)
    rules = cache.get(key)
    if rules is None:
        rows = ClinicMilestoneRule.objects.filter(clinic=clinic).values_list(
            "family", "threshold", "title", "description"
        )
        rules = tuple(analytics.MilestoneRule(*row) for row in rows) or analytics.DEFAULT_MILESTONE_RULES
        cache.set(key, rules, 300)
    return rules


# The rows whose N-th moment crosses a count milestone's threshold N: sessions or markers.
MomentRows = QuerySet[TherapySession] | QuerySet[ProgressMarker]


def _nth_moments(queryset: MomentRows, field: str, thresholds: Sequence[int]) -> dict[int, datetime]:
    """The moment of the N-th row (by `field`) for each threshold N, in one bounded query."""
    if not thresholds:
        return {}
    moments = list(queryset.order_by(field, "pk").values_list(field, flat=True)[: max(thresholds)])
    return {n: moments[n - 1] for n in thresholds if n <= len(moments)}


NTH_SOURCES: dict[str, tuple[Callable[[int], MomentRows], str, str]] = {
    # family → (rows whose N-th moment crosses the threshold, time field, the history map it fills)
    "sessions": (lambda pid: TherapySession.objects.filter(patient_id=pid), "started_at", "nth_session_started_at"),
    "skills": (
        lambda pid: ProgressMarker.objects.filter(patient_id=pid, type=MarkerType.SKILL_ACQUIRED),
        "achieved_at",
        "nth_skill_at",
    ),
    "breakthroughs": (
        lambda pid: ProgressMarker.objects.filter(patient_id=pid, type=MarkerType.BREAKTHROUGH),
        "achieved_at",
        "nth_breakthrough_at",
    ),
}


# patient → {(family, threshold): achieved_at}
StoredMilestones = dict[int, dict[tuple[str, int], datetime]]
# patient → its open alerts as (severity, kind label)
OpenAlerts = dict[int, tuple[tuple[str, str], ...]]


def query_rows(sql: str, params: dict[str, Any], portable: Callable[[], Iterable[Any]], *, orm: bool) -> Iterable[Any]:
    """The rows of a small per-group query. On PostgreSQL its hand-written `sql`, because Django takes
    longer to build such a query than PostgreSQL takes to answer it (a third of a one-patient
    recompute); elsewhere, or with `orm`, the ORM's `portable` form of the same query (tests check that
    both give the same rows)."""
    if orm or connection.vendor != "postgresql":
        return portable()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


_MILESTONES_SQL = (
    "SELECT patient_id, family, threshold, achieved_at FROM tracking_milestone WHERE patient_id = ANY(%(ids)s)"
)


def stored_milestones(patient_ids: Iterable[int], *, orm: bool = False) -> StoredMilestones:
    """patient → {(family, threshold): achieved_at} of the milestones already stored."""
    ids = list(patient_ids)
    stored: StoredMilestones = defaultdict(dict)
    rows = query_rows(
        _MILESTONES_SQL,
        {"ids": ids},
        lambda: Milestone.objects.filter(patient_id__in=ids).values_list(
            "patient_id", "family", "threshold", "achieved_at"
        ),
        orm=orm,
    )
    for patient_id, family, threshold, achieved_at in rows:
        stored[patient_id][(family, threshold)] = achieved_at
    return stored


# The columns of a stored summary a recompute compares with the one it computed (all but computed_at).
SUMMARY_COMPARED = (
    "local_date",
    "data",
    "current_streak_days",
    "sessions_this_week",
    "dropout_risk_score",
    "last_active_day",
    "progress_trend",
    "engagement_trend",
)
_STORED_SUMMARIES_SQL = f"""
SELECT patient_id, {", ".join(SUMMARY_COMPARED)} FROM tracking_progresssummary WHERE patient_id = ANY(%(ids)s)
"""  # noqa: S608 - the column names are constants


def stored_summaries(patient_ids: Iterable[int], *, orm: bool = False) -> dict[int, tuple[Any, ...]]:
    """patient → the SUMMARY_COMPARED values of their stored summary."""
    ids = list(patient_ids)
    rows = query_rows(
        _STORED_SUMMARIES_SQL,
        {"ids": ids},
        lambda: ProgressSummary.objects.filter(patient_id__in=ids).values_list("patient_id", *SUMMARY_COMPARED),
        orm=orm,
    )
    data = SUMMARY_COMPARED.index("data")
    stored = {}
    for patient_id, *values in rows:
        if isinstance(values[data], str):  # raw SQL: Django leaves jsonb to JSONField to decode
            values[data] = json.loads(values[data])
        stored[patient_id] = tuple(values)
    return stored


def milestone_rules_by_clinic(patients: Iterable[Patient]) -> dict[int, tuple[analytics.MilestoneRule, ...]]:
    """clinic id → its milestone rules, read once per clinic of a group (not once per patient)."""
    rules: dict[int, tuple[analytics.MilestoneRule, ...]] = {}
    for patient in patients:
        if patient.clinic_id not in rules:
            rules[patient.clinic_id] = milestone_rules_for(patient.clinic)
    return rules


def patient_histories(
    patients: list[Patient],
    stored: StoredMilestones | None = None,
    today: date | None = None,
    rules: dict[int, tuple[analytics.MilestoneRule, ...]] | None = None,
) -> dict[int, analytics.PatientHistory]:
    """Everything the rules need for many patients, aggregated in the database: per time zone, one query
    for the active days (on PostgreSQL one row per patient, its days as arrays; elsewhere a row per
    patient-day, not per session) and one for the marker counts of all the patients at once. The moment
    a count milestone was crossed comes from the stored milestone when there is one, so a query for it
    runs only in the recompute that first reaches it. `rules` (clinic id → rules) saves reading them."""
    stored = stored_milestones([p.pk for p in patients]) if stored is None else stored
    rules = milestone_rules_by_clinic(patients) if rules is None else rules
    by_zone: dict[str, list[Patient]] = defaultdict(list)
    for patient in patients:
        by_zone[patient.tz_name].append(patient)
    open_alerts = open_alerts_by_patient([p.pk for p in patients])
    histories = {}
    for tz_name, group in by_zone.items():
        histories.update(_zone_histories(tz_name, group, stored, today or local_today(tz_name), open_alerts, rules))
    return histories


# The ranks of reports.selectors.severity_rank (SEVERITY_ORDER), written out; a test compares the two.
_OPEN_ALERTS_SQL = """
SELECT patient_id, severity, kind FROM reports_alert
WHERE patient_id = ANY(%(ids)s) AND acknowledged_at IS NULL
ORDER BY patient_id, CASE severity WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'moderate' THEN 2 ELSE 3 END,
    occurred_at, id
"""


def open_alerts_by_patient(patient_ids: Iterable[int], *, orm: bool = False) -> OpenAlerts:
    """patient → its open alerts as (severity, kind label), most severe then oldest first: one query."""
    ids = list(patient_ids)
    result: dict[int, list[tuple[str, str]]] = defaultdict(list)
    rows = query_rows(
        _OPEN_ALERTS_SQL,
        {"ids": ids},
        lambda: (
            Alert.objects.filter(patient_id__in=ids, acknowledged_at__isnull=True)
            .order_by("patient_id", severity_rank(), "occurred_at", "pk")
            .values_list("patient_id", "severity", "kind")
        ),
        orm=orm,
    )
    for patient_id, severity, kind in rows:
        result[patient_id].append((severity, AlertKind(kind).label))
    return {pid: tuple(alerts) for pid, alerts in result.items()}


# Day numbers and microsecond instants from the database, turned into dates and datetimes here: far
# cheaper than the driver parsing a date and a timestamp per patient-day.
DAY_ZERO = date(2000, 1, 1)
_DAY_ZERO_ORDINAL = DAY_ZERO.toordinal()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The active days of a group's patients in one zone. Most come from the stored days (tracking.PatientDay,
# kept by triggers): for each patient, one ordered scan of their rows in the (patient, zone, day) index,
# aggregated into arrays (`_active_days` checks the order), with a flag when some of them are stored in
# another zone (theirs or their clinic's changed since). The CTE this replaced was planned for a
# millisecond on every call and sorted the whole group's days (issue 14).
_STORED_DAYS_SQL = """
SELECT p.id, d.elsewhere, d.days, d.sessions, d.minutes, d.firsts
FROM unnest(%(ids)s::bigint[]) AS p(id) CROSS JOIN LATERAL (
    SELECT bool_or(tz <> %(tz)s) AS elsewhere, array_agg(day) AS days, array_agg(sessions) AS sessions,
           array_agg(minutes) AS minutes, array_agg(first_us) AS firsts
    FROM (
        SELECT tz, day, sessions, minutes, first_us FROM tracking_patientday WHERE patient_id = p.id
        ORDER BY tz, day
    ) AS stored
) AS d
WHERE d.days IS NOT NULL
"""
# A patient with days stored in another zone is grouped from their sessions, with the day expression the
# triggers use.
_SESSION_DAYS_SQL = """
SELECT patient_id, array_agg(d ORDER BY d), array_agg(n ORDER BY d), array_agg(m ORDER BY d),
       array_agg(f ORDER BY d)
FROM (
    SELECT patient_id, (started_at AT TIME ZONE %(tz)s)::date - DATE '2000-01-01' AS d, count(*) AS n,
           COALESCE(sum(duration_minutes), 0)::float8 AS m,
           (extract(epoch FROM min(started_at)) * 1000000)::bigint AS f
    FROM tracking_therapysession WHERE patient_id = ANY(%(ids)s)
    GROUP BY patient_id, d
) AS days
GROUP BY patient_id
"""


def active_days_by_patient(tz_name: str, ids: list[int]) -> dict[int, tuple[analytics.ActiveDay, ...]]:
    """patient → its active days (ascending) in `tz_name`: one query for all of them, and one more for
    those whose days are stored in another zone."""
    if connection.vendor != "postgresql":
        return active_days_per_row(tz_name, ids)
    with connection.cursor() as cursor:
        cursor.execute(_STORED_DAYS_SQL, {"tz": tz_name, "ids": ids})
        stored = cursor.fetchall()
        elsewhere = [patient_id for patient_id, moved, *_ in stored if moved]
        rows = [(patient_id, *arrays) for patient_id, moved, *arrays in stored if not moved]
        if elsewhere:
            cursor.execute(_SESSION_DAYS_SQL, {"tz": tz_name, "ids": elsewhere})
            rows += cursor.fetchall()
    dates: dict[int, date] = {}  # the patients of a group share their calendar days: one date each
    try:
        return {patient_id: _active_days(dates, *arrays) for patient_id, *arrays in rows}
    except (ValueError, OverflowError) as error:
        # A local day Python cannot hold (before year 1): the same failure as the driver's when it
        # reads such a date, and without the value, which could be patient data.
        raise DataError("an active day out of the range of Python dates") from error


def _active_days(
    dates: dict[int, date], day_numbers: list[int], counts: list[int], minutes: list[float], firsts: list[int]
) -> tuple[analytics.ActiveDay, ...]:
    """One patient's arrays as ActiveDays, ascending; `dates` holds each date made so far (dates are
    immutable)."""
    if day_numbers != sorted(day_numbers):  # the database's order is the usual one, not a promise
        order = sorted(range(len(day_numbers)), key=day_numbers.__getitem__)
        day_numbers, counts, firsts = ([a[i] for i in order] for a in (day_numbers, counts, firsts))
        minutes = [minutes[i] for i in order]
    days = [
        dates[d] if d in dates else dates.setdefault(d, date.fromordinal(_DAY_ZERO_ORDINAL + d)) for d in day_numbers
    ]
    starts = [_EPOCH + timedelta(0, 0, f) for f in firsts]  # positional: twice as fast as microseconds=f
    # tuple.__new__ is what ActiveDay._make calls, without its per-row length check (zip is strict).
    return tuple(map(tuple.__new__, repeat(analytics.ActiveDay), zip(days, counts, minutes, starts, strict=True)))


def active_days_per_row(tz_name: str, ids: list[int]) -> dict[int, tuple[analytics.ActiveDay, ...]]:
    """The portable form of `active_days_by_patient` (SQLite, the demo): a row per patient-day."""
    days: dict[int, list[analytics.ActiveDay]] = defaultdict(list)
    day_rows = (
        TherapySession.objects.filter(patient_id__in=ids)
        .annotate(day=TruncDate("started_at", tzinfo=ZoneInfo(tz_name)))
        .values("patient_id", "day")
        .annotate(sessions=Count("id"), minutes=Sum("duration_minutes"), first=Min("started_at"))
        .order_by("patient_id", "day")
        .values_list("patient_id", "day", "sessions", "minutes", "first")
    )
    for patient_id, day, sessions, minutes, first in day_rows:
        days[patient_id].append(analytics.ActiveDay(day, sessions, minutes or 0.0, first))
    return {pid: tuple(d) for pid, d in days.items()}


_MARKER_COUNTS_SQL = """
SELECT patient_id, type, count(*),
       count(*) FILTER (WHERE achieved_at >= %(recent)s AND achieved_at < %(end)s),
       count(*) FILTER (WHERE achieved_at >= %(week)s AND achieved_at < %(end)s)
FROM tracking_progressmarker WHERE patient_id = ANY(%(ids)s)
GROUP BY patient_id, type
"""


def marker_counts_by_type(
    ids: list[int], recent_start: datetime, week_start: datetime, end: datetime, *, orm: bool = False
) -> Iterable[tuple[int, str, int, int, int]]:
    """(patient, marker type, how many, how many in [recent_start, end), in [week_start, end)): one query."""
    return query_rows(
        _MARKER_COUNTS_SQL,
        {"ids": ids, "recent": recent_start, "week": week_start, "end": end},
        lambda: (
            ProgressMarker.objects.filter(patient_id__in=ids)
            .values("patient_id", "type")
            .annotate(
                total=Count("id"),
                recent=Count("id", filter=Q(achieved_at__gte=recent_start, achieved_at__lt=end)),
                week=Count("id", filter=Q(achieved_at__gte=week_start, achieved_at__lt=end)),
            )
            .order_by()
            .values_list("patient_id", "type", "total", "recent", "week")
        ),
        orm=orm,
    )


# The approaches of the sessions of the skills acquired in a window, one row per skill.
_SKILL_APPROACHES_SQL = """
SELECT m.patient_id, s.approaches FROM tracking_progressmarker m
JOIN tracking_therapysession s ON s.id = m.session_id
WHERE m.patient_id = ANY(%(ids)s) AND m.type = 'skill_acquired' AND m.achieved_at >= %(start)s
    AND m.achieved_at < %(end)s
"""


def skill_approaches(ids: list[int], start: datetime, end: datetime, *, orm: bool = False) -> dict[int, Counter[str]]:
    """patient → how many of their skills acquired in [start, end) came from a session of each approach."""
    rows = query_rows(
        _SKILL_APPROACHES_SQL,
        {"ids": ids, "start": start, "end": end},
        lambda: ProgressMarker.objects.filter(
            patient_id__in=ids, type=MarkerType.SKILL_ACQUIRED, achieved_at__gte=start, achieved_at__lt=end
        ).values_list("patient_id", "session__approaches"),
        orm=orm,
    )
    approaches: dict[int, Counter[str]] = defaultdict(Counter)
    for patient_id, session_approaches in rows:
        if isinstance(session_approaches, str):  # raw SQL: Django leaves jsonb to JSONField to decode
            session_approaches = json.loads(session_approaches)
        approaches[patient_id].update(a for a in (session_approaches or []) if isinstance(a, str))
    return approaches


def _zone_histories(
    tz_name: str,
    patients: list[Patient],
    stored: StoredMilestones,
    today: date,
    open_alerts: OpenAlerts,
    rules: dict[int, tuple[analytics.MilestoneRule, ...]],
) -> dict[int, analytics.PatientHistory]:
    ids = [p.pk for p in patients]
    days = active_days_by_patient(tz_name, ids)

    recent_start = local_midnight(today - timedelta(days=13), tz_name)
    week_start = local_midnight(today - timedelta(days=6), tz_name)
    end = local_midnight(today + timedelta(days=1), tz_name)
    marker_counts: dict[int, dict[str, int]] = defaultdict(dict)
    recent: Counter[int] = Counter()
    skills_week: Counter[int] = Counter()
    for patient_id, kind, total, recent_n, week_n in marker_counts_by_type(ids, recent_start, week_start, end):
        marker_counts[patient_id][kind] = total
        recent[patient_id] += recent_n
        if kind == MarkerType.SKILL_ACQUIRED:
            skills_week[patient_id] = week_n

    # Only the insight for 3+ skills in a week reads the approaches of those skills' sessions.
    practising = [pid for pid in ids if skills_week[pid] >= 3]
    approaches = skill_approaches(practising, week_start, end) if practising else {}

    thresholds = {
        clinic_id: {family: analytics.thresholds_for(clinic_rules, family) for family in NTH_SOURCES}
        for clinic_id, clinic_rules in rules.items()
    }
    histories = {}
    for patient in patients:
        pid = patient.pk
        patient_days = days.get(pid, ())
        counts = {
            "sessions": analytics.total_sessions(patient_days),
            "skills": marker_counts[pid].get(MarkerType.SKILL_ACQUIRED, 0),
            "breakthroughs": marker_counts[pid].get(MarkerType.BREAKTHROUGH, 0),
        }
        nth = {}
        for family, (rows_of, field, name) in NTH_SOURCES.items():
            reached = [n for n in thresholds[patient.clinic_id][family] if n <= counts[family]]
            known = {n: stored[pid][(family, n)] for n in reached if (family, n) in stored[pid]}
            missing = [n for n in reached if n not in known]
            # The queryset is built only when a moment is missing (building one costs about a millisecond).
            nth[name] = {**known, **_nth_moments(rows_of(pid), field, missing)} if missing else known
        histories[pid] = analytics.PatientHistory(
            today=today,
            timezone=tz_name,
            active_days=patient_days,
            marker_counts=marker_counts[pid],
            markers_recent=recent[pid],
            skills_last_7_days=skills_week[pid],
            approaches_last_7_days=dict(approaches.get(pid, {})),
            open_alerts=open_alerts.get(pid, ()),
            **nth,
        )
    return histories


def patient_history(patient: Patient, today: date | None = None) -> analytics.PatientHistory:
    return patient_histories([patient], today=today)[patient.pk]


def activity_by_day(
    patient: Patient, days: int, today: date | None = None
) -> tuple[date, dict[date, tuple[int, float]], dict[date, tuple[int, int]]]:
    """(today, sessions_by_day, markers_by_day) for the `days` local days ending today: two queries over
    the window only."""
    tz_name = patient.tz_name
    tzinfo = ZoneInfo(tz_name)
    today = today or local_today(tz_name)
    start = local_midnight(today - timedelta(days=days - 1), tz_name)
    end = local_midnight(today + timedelta(days=1), tz_name)
    sessions = (
        TherapySession.objects.filter(patient=patient, started_at__gte=start, started_at__lt=end)
        .annotate(day=TruncDate("started_at", tzinfo=tzinfo))
        .values("day")
        .annotate(n=Count("id"), minutes=Sum("duration_minutes"))
        .order_by()
    )
    markers = (
        ProgressMarker.objects.filter(patient=patient, achieved_at__gte=start, achieved_at__lt=end)
        .annotate(day=TruncDate("achieved_at", tzinfo=tzinfo))
        .values("day")
        .annotate(n=Count("id"), skills=Count("id", filter=Q(type=MarkerType.SKILL_ACQUIRED)))
        .order_by()
    )
    return (
        today,
        {r["day"]: (r["n"], r["minutes"] or 0.0) for r in sessions},
        {r["day"]: (r["n"], r["skills"]) for r in markers},
    )


def patients_with_outdated_summary(limit: int) -> list[int]:
    """Patients whose stored summary is for a local day before their local today (one query per time
    zone in use, not per patient)."""
    ids: list[int] = []
    zones = Patient.objects.values_list("clinic_id", "clinic__timezone", "timezone").distinct().order_by()
    for clinic_id, clinic_tz, patient_tz in zones:
        if len(ids) >= limit:
            break
        outdated = Patient.objects.filter(
            clinic_id=clinic_id, timezone=patient_tz, summary__local_date__lt=local_today(patient_tz or clinic_tz)
        )
        ids += outdated.values_list("pk", flat=True)[: limit - len(ids)]
    return ids
