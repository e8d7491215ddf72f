"""Reads for pages and the API. Every list costs a fixed number of queries, whatever its length."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict, cast
from zoneinfo import ZoneInfo

from django.core.paginator import Page, Paginator
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Least, NullIf
from django.utils import timezone

from reports.instruments import GAD7, PHQ9, Instrument
from reports.models import Alert, AlertKind, OutcomeResponse
from reports.outcomes import reliable_change_direction
from reports.selectors import SEVERITY_ORDER, severity_rank
from tracking import analytics
from tracking.access import caseload_for_user, clinics_with_role
from tracking.history import local_midnight, local_today
from tracking.models import (
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

if TYPE_CHECKING:
    from django.http import QueryDict
    from django_stubs_ext import WithAnnotations

    from tracking.access import AnyUser, User


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
    def from_params(cls, params: QueryDict, search: str = "") -> CaseloadQuery:
        raw = params.get("sort", "attention")
        descending = raw.startswith("-")
        sort = raw.lstrip("-")
        if sort not in cls.SORTS:
            sort, descending = "attention", False
        filters = frozenset(f for f in params.getlist("filter") if f in cls.FILTERS)
        search = search.strip()[:128]
        return cls(sort=sort, descending=descending, filters=filters, search="" if text_error(search) else search)


ATTENTION_ORDER = (
    F("alert_level").desc(),
    F("risk_flag").desc(),
    F("summary__dropout_risk_score").desc(nulls_last=True),
)


def _latest_total(instrument: str, last: bool) -> Subquery:
    # First and latest by administration time, ties by response id (as reports.outcomes orders them).
    order = ("-administered_at", "-response_id") if last else ("administered_at", "response_id")
    responses = OutcomeResponse.objects.filter(patient=OuterRef("pk"), instrument=instrument)
    return Subquery(responses.order_by(*order).values("total")[:1])


def _score_count(instrument: str) -> Coalesce:
    responses = OutcomeResponse.objects.filter(patient=OuterRef("pk"), instrument=instrument).order_by()
    return Coalesce(Subquery(responses.values("patient").annotate(n=Count("pk")).values("n")[:1]), 0)


def _open_alerts() -> QuerySet[Alert]:
    return Alert.objects.filter(patient=OuterRef("pk"), acknowledged_at__isnull=True)


def _patient_tz() -> Coalesce:
    """A patient's time zone in the database: their own, else their clinic's."""
    return Coalesce(NullIf("timezone", Value("")), F("clinic__timezone"))


class CaseloadAnnotations(TypedDict):
    """What `caseload_rows` annotates each patient with."""

    phq9_first: int | None  # totals: the first and the latest, and how many
    phq9_last: int | None
    phq9_count: int
    gad7_first: int | None
    gad7_last: int | None
    gad7_count: int
    open_alerts: int  # how many
    open_rank: int | None  # the most severe one's index in SEVERITY_ORDER; None without an open alert
    alert_level: int  # urgent 3, high 2, moderate 1, none 0
    open_item9: bool


if TYPE_CHECKING:
    CaseloadPatient = WithAnnotations[Patient, CaseloadAnnotations]


def _inactive_for_a_week(rows: QuerySet[CaseloadPatient], now: datetime) -> QuerySet[CaseloadPatient]:
    """No active day in the 7 local days ending today (today and the 6 before), each patient's today in
    their own time zone (DESIGN §3): one condition per time zone in the caseload."""
    zoned = rows.annotate(zone=_patient_tz())
    zones = sorted(set(zoned.order_by().values_list("zone", flat=True)))
    inactive = Q(summary__last_active_day__isnull=True)
    for zone in zones:
        week_start = local_today(zone, now) - timedelta(days=6)
        inactive |= Q(zone=zone, summary__last_active_day__lt=week_start)
    return zoned.filter(inactive)


def caseload_rows(
    user: User, query: CaseloadQuery | None = None, now: datetime | None = None
) -> QuerySet[CaseloadPatient]:
    """The therapist's patients with everything the caseload shows, in one query (the stored analytics
    summary, first and latest questionnaire totals and their counts, open alerts: how many, the most
    severe, and whether one is a PHQ-9 item 9 alert). `now` is for tests; the default is the clock."""
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
        rows = rows.filter(Q(risk_flag=True) | Q(summary__dropout_risk_score__gt=analytics.DROPOUT_HIGH))
    if "inactive_7d" in query.filters:
        rows = _inactive_for_a_week(rows, now or timezone.now())
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


def _measure_cell(instrument: Instrument, first: int | None, last: int | None, count: int) -> MeasureCell | None:
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
    return DropoutCell(score=score, level=analytics.dropout_level(score))


class CaseloadCells(CaseloadAnnotations):
    """What `caseload_page` adds to each row: its display cells."""

    dropout: DropoutCell | None
    phq9: MeasureCell | None
    gad7: MeasureCell | None
    alert_cell: AlertCell | None


if TYPE_CHECKING:
    CaseloadRow = WithAnnotations[Patient, CaseloadCells]


def caseload_page(
    user: User, query: CaseloadQuery, page_number: int | str | None, per_page: int = 25
) -> Page[CaseloadRow]:
    """One page of the caseload, each row decorated with its display cells (no further queries)."""
    # Typed as the rows it holds once decorated, below.
    page = cast("Page[CaseloadRow]", Paginator(caseload_rows(user, query), per_page).get_page(page_number))
    for patient in page.object_list:
        summary = getattr(patient, "summary", None)
        patient.dropout = dropout_cell(summary.dropout_risk_score if summary else None)
        patient.phq9 = _measure_cell(PHQ9, patient.phq9_first, patient.phq9_last, patient.phq9_count)
        patient.gad7 = _measure_cell(GAD7, patient.gad7_first, patient.gad7_last, patient.gad7_count)
        patient.alert_cell = (
            # An open alert has a rank: open_rank is None only without one.
            AlertCell(patient.open_alerts, SEVERITY_ORDER[cast(int, patient.open_rank)], patient.open_item9)
            if patient.open_alerts
            else None
        )
    return page


def _first_data_at() -> Coalesce:
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


def clinic_patient_rows(user: AnyUser) -> QuerySet[Patient]:
    """For clinic admins: identifiers and assignment only, no clinical detail."""
    return (
        Patient.objects.filter(clinic__in=clinics_with_role(user, Role.CLINIC_ADMIN))
        .annotate(first_seen_at=_first_data_at())
        .select_related("clinic")
        .prefetch_related("assignments__therapist")
        .order_by("clinic__name", "player_id")
    )


def recent_sessions(patient: Patient, limit: int) -> list[dict[str, Any]]:
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


def milestones_of(patient: Patient) -> list[dict[str, Any]]:
    return [
        {**m, "achieved_at": m["achieved_at"].isoformat()}
        for m in Milestone.objects.filter(patient=patient)
        .order_by("achieved_at", "pk")
        .values("id", "family", "threshold", "title", "description", "achieved_at")
    ]


def highlights_of(patient: Patient, limit: int = 50) -> list[dict[str, Any]]:
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


def active_recommendations_of(patient: Patient) -> list[dict[str, Any]]:
    rows = (
        Recommendation.objects.filter(patient=patient, dismissed=False, expires_at__isnull=True)
        .order_by("priority", "type")
        .values("id", "type", "title", "description", "priority", "reasoning", "created_at", "updated_at")
    )
    return [{**r, "created_at": r["created_at"].isoformat(), "updated_at": r["updated_at"].isoformat()} for r in rows]


MARKER_TIMELINE_LIMIT = 500


def markers_timeline(patient: Patient, days: int) -> dict[str, Any]:
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
