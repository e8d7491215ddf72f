"""Reads for pages and the API. Every list costs a fixed number of queries, whatever its length."""

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.core.cache import cache
from django.db.models import Count, Max, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

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


def caseload_rows(user) -> QuerySet[Patient]:
    """The therapist's patients with what the caseload shows, in one query."""
    return (
        caseload_for_user(user)
        .select_related("clinic")
        .annotate(
            last_session_at=Max("sessions__started_at"),
            open_alerts=Count("alerts", filter=Q(alerts__acknowledged_at__isnull=True), distinct=True),
        )
        .order_by("player_id")
    )


def clinic_patient_rows(user) -> QuerySet[Patient]:
    """For clinic admins: identifiers and assignment only, no clinical detail."""
    return (
        Patient.objects.filter(clinic__in=clinics_with_role(user, Role.CLINIC_ADMIN))
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
    key = f"milestone-rules:{clinic.pk}"
    rules = cache.get(key)
    if rules is None:
        rows = ClinicMilestoneRule.objects.filter(clinic=clinic).values_list(
            "family", "threshold", "title", "description"
        )
        rules = tuple(analytics.MilestoneRule(*row) for row in rows) or analytics.DEFAULT_MILESTONE_RULES
        cache.set(key, rules, 300)
    return rules


def _nth_moments(queryset, field: str, thresholds: tuple[int, ...], count: int) -> dict[int, datetime]:
    """The moment of the N-th row (by `field`) for each threshold N reached, in one bounded query."""
    reached = [n for n in thresholds if n <= count]
    if not reached:
        return {}
    moments = list(queryset.order_by(field, "pk").values_list(field, flat=True)[: max(reached)])
    return {n: moments[n - 1] for n in reached}


def patient_history(patient: Patient, rules, today: date | None = None) -> analytics.PatientHistory:
    """Everything the rules need, aggregated in the database: a row per active day (not per session) and
    counts per marker type. The cost does not grow with the number of sessions beyond the day count."""
    tz_name = patient.tz_name
    today = today or local_today(tz_name)
    tzinfo = ZoneInfo(tz_name)
    days = (
        TherapySession.objects.filter(patient=patient)
        .annotate(day=TruncDate("started_at", tzinfo=tzinfo))
        .values("day")
        .annotate(sessions=Count("id"), minutes=Sum("duration_minutes"), first=Min("started_at"))
        .order_by("day")
    )
    active_days = tuple(analytics.ActiveDay(d["day"], d["sessions"], d["minutes"] or 0.0, d["first"]) for d in days)

    recent_start = local_midnight(today - timedelta(days=13), tz_name)
    week_start = local_midnight(today - timedelta(days=6), tz_name)
    end = local_midnight(today + timedelta(days=1), tz_name)
    marker_rows = (
        ProgressMarker.objects.filter(patient=patient)
        .values("type")
        .annotate(
            total=Count("id"),
            recent=Count("id", filter=Q(achieved_at__gte=recent_start, achieved_at__lt=end)),
            week=Count("id", filter=Q(achieved_at__gte=week_start, achieved_at__lt=end)),
        )
        .order_by()
    )
    marker_counts = {r["type"]: r["total"] for r in marker_rows}
    markers_recent = sum(r["recent"] for r in marker_rows)
    skills_week = next((r["week"] for r in marker_rows if r["type"] == MarkerType.SKILL_ACQUIRED), 0)

    approaches: Counter[str] = Counter()
    if skills_week >= 3:  # only the insight that needs them reads the approaches
        for session_approaches in ProgressMarker.objects.filter(
            patient=patient, type=MarkerType.SKILL_ACQUIRED, achieved_at__gte=week_start, achieved_at__lt=end
        ).values_list("session__approaches", flat=True):
            approaches.update(a for a in (session_approaches or []) if isinstance(a, str))

    total_sessions = sum(d.sessions for d in active_days)
    skills = ProgressMarker.objects.filter(patient=patient, type=MarkerType.SKILL_ACQUIRED)
    breakthroughs = ProgressMarker.objects.filter(patient=patient, type=MarkerType.BREAKTHROUGH)
    return analytics.PatientHistory(
        today=today,
        timezone=tz_name,
        active_days=active_days,
        marker_counts=marker_counts,
        markers_recent=markers_recent,
        skills_last_7_days=skills_week,
        approaches_last_7_days=dict(approaches),
        nth_session_started_at=_nth_moments(
            TherapySession.objects.filter(patient=patient),
            "started_at",
            analytics.thresholds_for(rules, "sessions"),
            total_sessions,
        ),
        nth_skill_at=_nth_moments(
            skills, "achieved_at", analytics.thresholds_for(rules, "skills"), marker_counts.get("skill_acquired", 0)
        ),
        nth_breakthrough_at=_nth_moments(
            breakthroughs,
            "achieved_at",
            analytics.thresholds_for(rules, "breakthroughs"),
            marker_counts.get("breakthrough", 0),
        ),
    )


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
    return [
        {**r, "started_at": r["started_at"].isoformat(), "ended_at": r["ended_at"] and r["ended_at"].isoformat()}
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


def active_recommendations_of(patient: Patient) -> list[dict]:
    rows = (
        Recommendation.objects.filter(patient=patient, dismissed=False, expires_at__isnull=True)
        .order_by("priority", "type")
        .values("id", "type", "title", "description", "priority", "reasoning", "created_at", "updated_at")
    )
    return [{**r, "created_at": r["created_at"].isoformat(), "updated_at": r["updated_at"].isoformat()} for r in rows]
