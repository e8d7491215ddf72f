"""Reads for pages and the API. Every list costs a fixed number of queries, whatever its length."""

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.core.cache import cache
from django.core.paginator import Paginator
from django.db.models import Count, Exists, F, Min, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, Least, TruncDate
from django.utils import timezone

from reports.instruments import GAD7, PHQ9
from reports.models import Alert, AlertKind, OutcomeResponse
from reports.outcomes import reliable_change_direction
from reports.selectors import SEVERITY_ORDER, severity_rank
from tracking import analytics
from tracking.access import caseload_for_user, clinics_with_role
from tracking.models import (
    Clinic,
    ClinicMilestoneRule,
    MarkerType,
    Milestone,
    Patient,
    ProgressHighlight,
    ProgressMarker,
    Recommendation,
    Role,
    TherapySession,
)
from tracking.validators import text_error


@dataclass(frozen=True)
class CaseloadQuery:
    """What the therapist asked the caseload for: a sort key, filters, a player-id search. The default
    order is what needs attention first: the highest open alert severity, then the risk flag, then the
    dropout risk."""

    sort: str = "attention"
    descending: bool = False
    filters: frozenset[str] = frozenset()
    search: str = ""

    # key → the fields it orders by, ascending (a "-key" sort reverses them all)
    SORTS = {
        "attention": (),
        "player_id": ("player_id",),
        "last_active": ("summary__last_active_day",),
        "streak": ("summary__current_streak_days",),
        "week": ("summary__sessions_this_week",),
        "risk": ("summary__dropout_risk_score",),
        "phq9": ("phq9_last",),
        "gad7": ("gad7_last",),
        "alerts": ("alert_level", "open_alerts"),
        "flag": ("risk_flag",),
    }
    # Columns of risk: their first click puts the riskiest first.
    RISK_FIRST = frozenset({"risk", "alerts", "flag"})
    FILTERS = {
        "at_risk": "At risk",
        "inactive_7d": "Not active for 7 days",
        "deteriorating": "Deteriorating",
    }

    @classmethod
    def from_params(cls, params, search: str = "") -> "CaseloadQuery":
        raw = params.get("sort", "attention")
        descending = raw.startswith("-")
        sort = raw.lstrip("-")
        if sort not in cls.SORTS:
            sort, descending = "attention", False
        filters = frozenset(f for f in params.getlist("filter") if f in cls.FILTERS)
        search = search.strip()[:128]
        return cls(sort=sort, descending=descending, filters=filters, search="" if text_error(search) else search)


DROPOUT_HIGH = 0.6  # above this the service recommends shorter, more frequent sessions (DESIGN §4)
DROPOUT_MEDIUM = 0.3
ATTENTION_ORDER = (
    F("alert_level").desc(),
    F("risk_flag").desc(),
    F("summary__dropout_risk_score").desc(nulls_last=True),
)


def _latest_total(instrument: str, last: bool):
    # First and latest by administration time, ties by response id (as reports.outcomes orders them).
    order = ("-administered_at", "-response_id") if last else ("administered_at", "response_id")
    responses = OutcomeResponse.objects.filter(patient=OuterRef("pk"), instrument=instrument)
    return Subquery(responses.order_by(*order).values("total")[:1])


def _score_count(instrument: str):
    responses = OutcomeResponse.objects.filter(patient=OuterRef("pk"), instrument=instrument).order_by()
    return Coalesce(Subquery(responses.values("patient").annotate(n=Count("pk")).values("n")[:1]), 0)


def _open_alerts():
    return Alert.objects.filter(patient=OuterRef("pk"), acknowledged_at__isnull=True)


def caseload_rows(user, query: CaseloadQuery | None = None) -> QuerySet[Patient]:
    """The therapist's patients with everything the caseload shows, in one query (the stored analytics
    summary, first and latest questionnaire totals and their counts, open alerts: how many, the most
    severe, and whether one is a PHQ-9 item 9 alert)."""
    query = query or CaseloadQuery()
    most_severe = _open_alerts().annotate(rank=severity_rank()).order_by("rank").values("rank")[:1]
    rows = (
        caseload_for_user(user)
        .select_related("clinic", "summary")
        .annotate(
            phq9_first=_latest_total(PHQ9.code, last=False),
            phq9_last=_latest_total(PHQ9.code, last=True),
            phq9_count=_score_count(PHQ9.code),
            gad7_first=_latest_total(GAD7.code, last=False),
            gad7_last=_latest_total(GAD7.code, last=True),
            gad7_count=_score_count(GAD7.code),
            open_alerts=Count("alerts", filter=Q(alerts__acknowledged_at__isnull=True), distinct=True),
            open_rank=Subquery(most_severe),
            # urgent 3, high 2, moderate 1, no open alert 0: "more is worse", for sorting
            alert_level=Coalesce(len(SEVERITY_ORDER) - F("open_rank"), 0),
            open_item9=Exists(_open_alerts().filter(kind=AlertKind.ITEM9)),
        )
    )
    if query.search:
        rows = rows.filter(player_id__icontains=query.search)
    if "at_risk" in query.filters:
        rows = rows.filter(Q(risk_flag=True) | Q(summary__dropout_risk_score__gt=DROPOUT_HIGH))
    if "inactive_7d" in query.filters:
        week_start = timezone.now().date() - timedelta(days=6)
        rows = rows.filter(Q(summary__last_active_day__lt=week_start) | Q(summary__last_active_day__isnull=True))
    if "deteriorating" in query.filters:
        rows = rows.filter(
            Q(phq9_last__gte=F("phq9_first") + PHQ9.reliable_change)
            | Q(gad7_last__gte=F("gad7_first") + GAD7.reliable_change)
        )
    if query.sort == "attention":
        return rows.order_by(*ATTENTION_ORDER, "player_id")
    order = [
        F(field).desc(nulls_last=True) if query.descending else F(field).asc(nulls_last=True)
        for field in CaseloadQuery.SORTS[query.sort]
    ]
    return rows.order_by(*order, "player_id")


@dataclass(frozen=True)
class MeasureCell:
    last: int
    band: str
    count: int  # scores on this measure
    change: int | None  # since the first score; None with one score
    reliable: str | None  # "improvement" | "deterioration" | None: reliable change from the first score


@dataclass(frozen=True)
class DropoutCell:
    score: float
    level: str  # "low" | "medium" | "high"


@dataclass(frozen=True)
class AlertCell:
    open: int
    severity: str  # the most severe open alert's
    item9: bool  # one of them is a PHQ-9 item 9 alert


def _measure_cell(instrument, first: int | None, last: int | None, count: int) -> MeasureCell | None:
    if last is None:
        return None
    change = last - first if count >= 2 and first is not None else None
    return MeasureCell(
        last=last,
        band=instrument.band(last),
        count=count,
        change=change,
        reliable=reliable_change_direction(instrument, change),
    )


def dropout_cell(score: float | None) -> DropoutCell | None:
    if score is None:
        return None
    level = "high" if score > DROPOUT_HIGH else "medium" if score >= DROPOUT_MEDIUM else "low"
    return DropoutCell(score=score, level=level)


def caseload_page(user, query: CaseloadQuery, page_number, per_page: int = 25):
    """One page of the caseload, each row decorated with its display cells (no further queries)."""
    page = Paginator(caseload_rows(user, query), per_page).get_page(page_number)
    for patient in page.object_list:
        summary = getattr(patient, "summary", None)
        patient.dropout = dropout_cell(summary.dropout_risk_score if summary else None)
        patient.phq9 = _measure_cell(PHQ9, patient.phq9_first, patient.phq9_last, patient.phq9_count)
        patient.gad7 = _measure_cell(GAD7, patient.gad7_first, patient.gad7_last, patient.gad7_count)
        patient.alert_cell = (
            AlertCell(patient.open_alerts, SEVERITY_ORDER[patient.open_rank], patient.open_item9)
            if patient.open_alerts
            else None
        )
    return page


def _first_data_at():
    """When the patient's first data happened: the earliest session start or questionnaire, else when we
    first heard of them (history posted late is earlier than the patient's row)."""
    first_session = TherapySession.objects.filter(patient=OuterRef("pk")).order_by("started_at").values("started_at")
    first_response = OutcomeResponse.objects.filter(patient=OuterRef("pk")).order_by("administered_at")
    session_at = Subquery(first_session[:1])
    response_at = Subquery(first_response.values("administered_at")[:1])
    # The row's creation time only when there is no data at all: a patient provisioned before playing
    # was first seen at their first session or questionnaire, not when the row was made.
    return Coalesce(
        Least(Coalesce(session_at, response_at), Coalesce(response_at, session_at)),
        F("created_at"),
    )


def clinic_patient_rows(user) -> QuerySet[Patient]:
    """For clinic admins: identifiers and assignment only, no clinical detail."""
    return (
        Patient.objects.filter(clinic__in=clinics_with_role(user, Role.CLINIC_ADMIN))
        .annotate(first_seen_at=_first_data_at())
        .select_related("clinic")
        .prefetch_related("assignments__therapist")
        .order_by("clinic__name", "player_id")
    )


# ----- analytics inputs (DESIGN §4) ---------------------------------------------------------------


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


def _nth_moments(queryset, field: str, thresholds) -> dict[int, datetime]:
    """The moment of the N-th row (by `field`) for each threshold N, in one bounded query."""
    if not thresholds:
        return {}
    moments = list(queryset.order_by(field, "pk").values_list(field, flat=True)[: max(thresholds)])
    return {n: moments[n - 1] for n in thresholds if n <= len(moments)}


NTH_SOURCES = {
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


def stored_milestones(patient_ids) -> dict[int, dict[tuple[str, int], datetime]]:
    """patient → {(family, threshold): achieved_at} of the milestones already stored."""
    stored: dict[int, dict[tuple[str, int], datetime]] = defaultdict(dict)
    rows = Milestone.objects.filter(patient_id__in=patient_ids).values_list(
        "patient_id", "family", "threshold", "achieved_at"
    )
    for patient_id, family, threshold, achieved_at in rows:
        stored[patient_id][(family, threshold)] = achieved_at
    return stored


def patient_histories(
    patients: list[Patient], stored: dict[int, dict] | None = None, today: date | None = None
) -> dict[int, analytics.PatientHistory]:
    """Everything the rules need for many patients, aggregated in the database: per time zone, one query
    for the active days (a row per patient-day, not per session) and one for the marker counts of all
    the patients at once. The moment a count milestone was crossed comes from the stored milestone when
    there is one, so a query for it runs only in the recompute that first reaches it."""
    stored = stored_milestones([p.pk for p in patients]) if stored is None else stored
    by_zone: dict[str, list[Patient]] = defaultdict(list)
    for patient in patients:
        by_zone[patient.tz_name].append(patient)
    open_alerts = open_alerts_by_patient([p.pk for p in patients])
    histories = {}
    for tz_name, group in by_zone.items():
        histories.update(_zone_histories(tz_name, group, stored, today or local_today(tz_name), open_alerts))
    return histories


def open_alerts_by_patient(patient_ids) -> dict[int, tuple[tuple[str, str], ...]]:
    """patient → its open alerts as (severity, kind label), most severe then oldest first: one query."""
    result: dict[int, list[tuple[str, str]]] = defaultdict(list)
    rows = (
        Alert.objects.filter(patient_id__in=patient_ids, acknowledged_at__isnull=True)
        .order_by("patient_id", severity_rank(), "occurred_at", "pk")
        .values_list("patient_id", "severity", "kind")
    )
    for patient_id, severity, kind in rows:
        result[patient_id].append((severity, AlertKind(kind).label))
    return {pid: tuple(alerts) for pid, alerts in result.items()}


def _zone_histories(
    tz_name: str, patients: list[Patient], stored, today: date, open_alerts: dict
) -> dict[int, analytics.PatientHistory]:
    tzinfo = ZoneInfo(tz_name)
    ids = [p.pk for p in patients]
    days: dict[int, list[analytics.ActiveDay]] = defaultdict(list)
    rows = (
        TherapySession.objects.filter(patient_id__in=ids)
        .annotate(day=TruncDate("started_at", tzinfo=tzinfo))
        .values("patient_id", "day")
        .annotate(sessions=Count("id"), minutes=Sum("duration_minutes"), first=Min("started_at"))
        .order_by("patient_id", "day")
        .values_list("patient_id", "day", "sessions", "minutes", "first")
    )
    for patient_id, day, sessions, minutes, first in rows:
        days[patient_id].append(analytics.ActiveDay(day, sessions, minutes or 0.0, first))

    recent_start = local_midnight(today - timedelta(days=13), tz_name)
    week_start = local_midnight(today - timedelta(days=6), tz_name)
    end = local_midnight(today + timedelta(days=1), tz_name)
    marker_counts: dict[int, dict[str, int]] = defaultdict(dict)
    recent: Counter[int] = Counter()
    skills_week: Counter[int] = Counter()
    rows = (
        ProgressMarker.objects.filter(patient_id__in=ids)
        .values("patient_id", "type")
        .annotate(
            total=Count("id"),
            recent=Count("id", filter=Q(achieved_at__gte=recent_start, achieved_at__lt=end)),
            week=Count("id", filter=Q(achieved_at__gte=week_start, achieved_at__lt=end)),
        )
        .order_by()
        .values_list("patient_id", "type", "total", "recent", "week")
    )
    for patient_id, kind, total, recent_n, week_n in rows:
        marker_counts[patient_id][kind] = total
        recent[patient_id] += recent_n
        if kind == MarkerType.SKILL_ACQUIRED:
            skills_week[patient_id] = week_n

    # Only the insight for 3+ skills in a week reads the approaches of those skills' sessions.
    approaches: dict[int, Counter[str]] = defaultdict(Counter)
    practising = [pid for pid in ids if skills_week[pid] >= 3]
    if practising:
        rows = ProgressMarker.objects.filter(
            patient_id__in=practising, type=MarkerType.SKILL_ACQUIRED, achieved_at__gte=week_start, achieved_at__lt=end
        ).values_list("patient_id", "session__approaches")
        for patient_id, session_approaches in rows:
            approaches[patient_id].update(a for a in (session_approaches or []) if isinstance(a, str))

    histories = {}
    for patient in patients:
        pid = patient.pk
        counts = {
            "sessions": sum(d.sessions for d in days[pid]),
            "skills": marker_counts[pid].get(MarkerType.SKILL_ACQUIRED, 0),
            "breakthroughs": marker_counts[pid].get(MarkerType.BREAKTHROUGH, 0),
        }
        nth = {}
        for family, (rows_of, field, name) in NTH_SOURCES.items():
            reached = [
                n for n in analytics.thresholds_for(milestone_rules_for(patient.clinic), family) if n <= counts[family]
            ]
            known = {n: stored[pid][(family, n)] for n in reached if (family, n) in stored[pid]}
            missing = [n for n in reached if n not in known]
            nth[name] = {**known, **_nth_moments(rows_of(pid), field, missing)}
        histories[pid] = analytics.PatientHistory(
            today=today,
            timezone=tz_name,
            active_days=tuple(days[pid]),
            marker_counts=marker_counts[pid],
            markers_recent=recent[pid],
            skills_last_7_days=skills_week[pid],
            approaches_last_7_days=dict(approaches[pid]),
            open_alerts=open_alerts.get(pid, ()),
            **nth,
        )
    return histories


def patient_history(patient: Patient, today: date | None = None) -> analytics.PatientHistory:
    return patient_histories([patient], today=today)[patient.pk]


def activity_by_day(patient: Patient, days: int, today: date | None = None):
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


def recent_sessions(patient: Patient, limit: int) -> list[dict]:
    rows = (
        TherapySession.objects.filter(patient=patient)
        .order_by("-started_at", "-pk")
        .values("session_id", "started_at", "ended_at", "status", "duration_minutes", "world", "approaches")[:limit]
    )
    tzinfo = ZoneInfo(patient.tz_name)
    return [
        {
            **r,
            "started_at": r["started_at"].isoformat(),
            "started_local": r["started_at"].astimezone(tzinfo).strftime("%Y-%m-%d %H:%M"),
            "ended_at": r["ended_at"] and r["ended_at"].isoformat(),
        }
        for r in rows
    ]


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


def milestones_of(patient: Patient) -> list[dict]:
    return [
        {**m, "achieved_at": m["achieved_at"].isoformat()}
        for m in Milestone.objects.filter(patient=patient)
        .order_by("achieved_at", "pk")
        .values("id", "family", "threshold", "title", "description", "achieved_at")
    ]


def highlights_of(patient: Patient, limit: int = 50) -> list[dict]:
    rows = (
        ProgressHighlight.objects.filter(patient=patient)
        .order_by("-achieved_at", "-pk")
        .values(
            "id",
            "milestone_id",
            "type",
            "title",
            "description",
            "achieved_at",
            "therapeutic_value",
            "celebration_shown",
        )[:limit]
    )
    return [{**h, "achieved_at": h["achieved_at"].isoformat()} for h in rows]


def dismissed_recommendations_of(patient: Patient) -> list[Recommendation]:
    """Recommendations that still apply but a therapist dismissed, latest first (with who did it)."""
    return list(
        Recommendation.objects.filter(patient=patient, dismissed=True, expires_at__isnull=True)
        .select_related("dismissed_by")
        .order_by("-dismissed_at", "pk")
    )


def active_recommendations_of(patient: Patient) -> list[dict]:
    rows = (
        Recommendation.objects.filter(patient=patient, dismissed=False, expires_at__isnull=True)
        .order_by("priority", "type")
        .values("id", "type", "title", "description", "priority", "reasoning", "created_at", "updated_at")
    )
    return [{**r, "created_at": r["created_at"].isoformat(), "updated_at": r["updated_at"].isoformat()} for r in rows]


MARKER_TIMELINE_LIMIT = 500


def markers_timeline(patient: Patient, days: int) -> dict:
    """The patient's progress markers of the last `days` local days, oldest first (bounded), for the
    timeline chart and its table."""
    tz_name = patient.tz_name
    start = local_midnight(local_today(tz_name) - timedelta(days=days - 1), tz_name)
    rows = list(
        ProgressMarker.objects.filter(patient=patient, achieved_at__gte=start)
        .order_by("-achieved_at", "-pk")
        .values("type", "achieved_at", "description", "therapeutic_value")[:MARKER_TIMELINE_LIMIT]
    )
    tzinfo = ZoneInfo(tz_name)
    points = [
        {
            "type": r["type"],
            "at": r["achieved_at"].astimezone(tzinfo).strftime("%Y-%m-%d %H:%M"),
            "description": r["description"],
            "value": r["therapeutic_value"],
        }
        for r in reversed(rows)
    ]
    return {"types": MarkerType.values, "points": points, "truncated": len(rows) == MARKER_TIMELINE_LIMIT}
