"""Reads for pages and the API. Every list costs a fixed number of queries, whatever its length."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, TypedDict, cast
from zoneinfo import ZoneInfo

from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import Count, Exists, F, FilteredRelation, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Least, NullIf
from django.utils import timezone

from reports import cadence
from reports.instruments import GAD7, PHQ9, Instrument
from reports.models import Alert, AlertKind, MeasureStatus, OutcomeResponse
from reports.outcomes import reliable_change_direction
from reports.selectors import SEVERITY_ORDER, severity_rank
from tracking import analytics
from tracking.access import caseload_for_user, clinics_with_role
from tracking.history import local_midnight, local_today, query_rows
from tracking.models import (
    AuditAction,
    AuditChainHead,
    AuditEvent,
    AuditOutcome,
    AuditReview,
    AuthenticatorDevice,
    MarkerType,
    Membership,
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
        "phq9_due": "PHQ-9 due",
        "gad7_due": "GAD-7 due",
        "not_on_track": "Not on track",
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


def _last_session_at() -> Subquery:
    sessions = TherapySession.objects.filter(patient=OuterRef("pk")).order_by("-started_at")
    return Subquery(sessions.values("started_at")[:1])


def _off_track(instrument: str, field: str) -> Subquery:
    """A field of the patient's stored not-on-track result on `instrument`, only while it is true."""
    status = MeasureStatus.objects.filter(patient=OuterRef("pk"), instrument=instrument, not_on_track=True)
    return Subquery(status.values(field)[:1])


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
    zone: str  # the patient's time zone: their own, else the clinic's
    last_session_at: datetime | None  # the latest session's start
    phq9_last_at: datetime | None  # the latest administrations
    gad7_last_at: datetime | None
    phq9_off_track_basis: str | None  # the stored not-on-track result, only while it holds
    phq9_off_track_inputs: dict[str, Any] | None
    gad7_off_track_basis: str | None
    gad7_off_track_inputs: dict[str, Any] | None


# The measures the caseload tracks, in column order (the same as the measures-due API's).
CADENCE_INSTRUMENTS: tuple[Instrument, ...] = (PHQ9, GAD7)

if TYPE_CHECKING:
    CaseloadPatient = WithAnnotations[Patient, CaseloadAnnotations]


def _outcome_summaries() -> dict[str, Any]:
    """Each tracked measure's first and latest totals, how many, and the latest administration, from the
    stored per-patient outcome summary (`reports.OutcomeSummary`, kept by triggers): one join per measure
    on its unique (patient, instrument) row, no subquery per patient."""
    fields: dict[str, Any] = {}
    for instrument in CADENCE_INSTRUMENTS:
        code = instrument.code
        fields[f"{code}_summary"] = FilteredRelation(
            "outcome_summaries", condition=Q(outcome_summaries__instrument=code)
        )
        fields[f"{code}_first"] = F(f"{code}_summary__first_total")
        fields[f"{code}_last"] = F(f"{code}_summary__latest_total")
        fields[f"{code}_count"] = Coalesce(F(f"{code}_summary__count"), 0)
        fields[f"{code}_last_at"] = F(f"{code}_summary__latest_at")
    return fields


def reliably_worse_in_caseload(user: User) -> QuerySet[Patient, int]:
    """The ids of the user's patients whose latest PHQ-9 or GAD-7 total is reliably worse than their first
    (DESIGN §8), from the outcome summary's stored flag and its partial index. The caseload's
    deteriorating filter runs this first and then names the few patients it found: as a subquery of the
    caseload's query instead, it cost PostgreSQL more to plan that query than to run it. (The flag is
    computed for exactly the caseload's measures.)"""
    return (
        caseload_for_user(user)
        .filter(outcome_summaries__reliably_worse=True)
        .values_list("pk", flat=True)
        .order_by()
        .distinct()
    )


def _inactive_for_a_week(rows: QuerySet[CaseloadPatient], now: datetime) -> QuerySet[CaseloadPatient]:
    """No active day in the 7 local days ending today (today and the 6 before), each patient's today in
    their own time zone (DESIGN §3): one condition per time zone in the caseload."""
    zones = sorted(set(rows.order_by().values_list("zone", flat=True)))
    inactive = Q(summary__last_active_day__isnull=True)
    for zone in zones:
        week_start = local_today(zone, now) - timedelta(days=6)
        inactive |= Q(zone=zone, summary__last_active_day__lt=week_start)
    return rows.filter(inactive)


def _due_condition(rows: QuerySet[CaseloadPatient], now: datetime, instruments: tuple[str, ...]) -> Q:
    """Patients with at least one of `instruments` due (DESIGN §8), in SQL, each in their own local
    calendar: one condition per distinct (time zone, clinic interval) pair in the caseload (one query to
    find them). Active: the latest session started at or after local midnight of today − 29. Due: never
    administered, or today ≥ the local date of the last administration + the interval, which is the last
    administration before local midnight of (today − interval + 1). `due_marks` reads the same rule from
    the annotated values with `reports.cadence`, so a filtered row always carries its mark."""
    pairs = set(rows.order_by().values_list("zone", "clinic__measure_interval_days").distinct())
    condition = Q(pk__in=[])
    for zone, interval in sorted(pairs):
        today = local_today(zone, now)
        window_start = local_midnight(today - timedelta(days=cadence.ACTIVE_WINDOW_DAYS - 1), zone)
        last_before = local_midnight(today - timedelta(days=interval - 1), zone)
        due = Q(pk__in=[])
        for code in instruments:
            due |= Q(**{f"{code}_last_at__isnull": True}) | Q(**{f"{code}_last_at__lt": last_before})
        condition |= Q(zone=zone, clinic__measure_interval_days=interval, last_session_at__gte=window_start) & due
    return condition


def due_marks(patient: CaseloadPatient, now: datetime) -> list[cadence.Due]:
    """The measures due for a caseload row (DESIGN §8), from its annotations: the same rule and inputs as
    `reports.selectors.measures_due`, without a query."""
    zone = patient.zone
    today = local_today(zone, now)
    window_start = local_midnight(today - timedelta(days=cadence.ACTIVE_WINDOW_DAYS - 1), zone)
    active = patient.last_session_at is not None and patient.last_session_at >= window_start
    tzinfo = ZoneInfo(zone)
    last: dict[str, tuple[date, datetime] | None] = {}
    for instrument in CADENCE_INSTRUMENTS:
        at = cast("datetime | None", getattr(patient, f"{instrument.code}_last_at"))
        last[instrument.code] = (at.astimezone(tzinfo).date(), at) if at is not None else None
    return cadence.due_measures(
        today=today,
        interval_days=patient.clinic.measure_interval_days,
        active=active,
        last_administered=last,
        instruments=[i.code for i in CADENCE_INSTRUMENTS],
    )


def caseload_rows(
    user: User, query: CaseloadQuery | None = None, now: datetime | None = None
) -> QuerySet[CaseloadPatient]:
    """The therapist's patients with everything the caseload shows, in one query: the stored analytics
    summary; from the stored outcome summary, the first and latest questionnaire totals, their counts and
    the latest administrations; open alerts (how many, the most severe, and whether one is a PHQ-9 item 9
    alert); the latest session, for the due measures; the stored not-on-track results. `now` is for
    tests; the default is the clock."""
    query = query or CaseloadQuery()
    now = now or timezone.now()
    most_severe = _open_alerts().annotate(rank=severity_rank()).order_by("rank").values("rank")[:1]
    # Cast: the type checker cannot read the annotations spread from `_outcome_summaries()`.
    rows = cast(
        "QuerySet[CaseloadPatient]",
        caseload_for_user(user)
        .select_related("clinic", "summary")
        .annotate(
            **_outcome_summaries(),
            # A count per patient, not a join to the alerts with a GROUP BY over every selected column:
            # that GROUP BY took PostgreSQL longer to plan than the rest of the query took to run.
            open_alerts=Coalesce(
                Subquery(
                    _open_alerts().order_by().values("patient").annotate(n=Count("pk")).values("n"),
                    output_field=IntegerField(),
                ),
                0,
            ),
            open_rank=Subquery(most_severe),
            # urgent 3, high 2, moderate 1, no open alert 0: "more is worse", for sorting
            alert_level=Coalesce(len(SEVERITY_ORDER) - F("open_rank"), 0),
            open_item9=Exists(_open_alerts().filter(kind=AlertKind.ITEM9)),
            zone=_patient_tz(),
            last_session_at=_last_session_at(),
            phq9_off_track_basis=_off_track(PHQ9.code, "basis"),
            phq9_off_track_inputs=_off_track(PHQ9.code, "trajectory"),
            gad7_off_track_basis=_off_track(GAD7.code, "basis"),
            gad7_off_track_inputs=_off_track(GAD7.code, "trajectory"),
        ),
    )
    if query.search:
        rows = rows.filter(player_id__icontains=query.search)
    if "at_risk" in query.filters:
        rows = rows.filter(Q(risk_flag=True) | Q(summary__dropout_risk_score__gt=analytics.DROPOUT_HIGH))
    if "inactive_7d" in query.filters:
        rows = _inactive_for_a_week(rows, now)
    if "deteriorating" in query.filters:
        rows = rows.filter(pk__in=list(reliably_worse_in_caseload(user)))
    for instrument in CADENCE_INSTRUMENTS:
        if f"{instrument.code}_due" in query.filters:
            rows = rows.filter(_due_condition(rows, now, (instrument.code,)))
    if "not_on_track" in query.filters:
        rows = rows.filter(Exists(MeasureStatus.objects.filter(patient=OuterRef("pk"), not_on_track=True)))
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
class DueMark:
    """A questionnaire due for a caseload row (DESIGN §8)."""

    label: str  # "PHQ-9 due"
    due_since: date | None  # None: never administered
    explanation: str  # the tooltip: since when, or that it was never given


@dataclass(frozen=True)
class OffTrackMark:
    """A measure's stored "not on track" result (DESIGN §8), with its basis and inputs in words."""

    basis: str  # "clinic_reference" | "no_reliable_improvement"
    explanation: str


def due_mark(instrument: Instrument, due: cadence.Due | None, interval_days: int) -> DueMark | None:
    if due is None:
        return None
    if due.due_since is None:
        explanation = f"{instrument.name} has never been given to this patient."
    else:
        last = due.due_since - timedelta(days=interval_days)
        explanation = (
            f"{instrument.name} due since {due.due_since.isoformat()}: last given {last.isoformat()}, "
            f"and the clinic's interval is {interval_days} days."
        )
    return DueMark(label=f"{instrument.name} due", due_since=due.due_since, explanation=explanation)


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def off_track_mark(instrument: Instrument, basis: str | None, inputs: dict[str, Any] | None) -> OffTrackMark | None:
    """The words for a stored not-on-track result: "week 8: 17 is above the clinic's 75th percentile 14.5
    (12 patients, 30 scores)" or "week 9: 16 is still at caseness (10 or more), with no reliable
    improvement since the first score"."""
    if not basis:
        return None
    inputs = inputs or {}
    week, latest = inputs.get("week"), inputs.get("latest")
    if basis == "clinic_reference":
        explanation = (
            f"Week {week}: {latest} is above the clinic's 75th percentile {_number(inputs.get('p75'))} "
            f"({inputs.get('n_patients')} patients, {inputs.get('n_scores')} scores)."
        )
    else:
        explanation = (
            f"Week {week}: {latest} is still at caseness ({instrument.caseness_threshold} or more), with no "
            "reliable improvement since the first score (no clinic reference at this week)."
        )
    return OffTrackMark(basis=basis, explanation=f"{instrument.name} not on track. {explanation}")


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
    phq9_due: DueMark | None
    gad7_due: DueMark | None
    phq9_off_track: OffTrackMark | None
    gad7_off_track: OffTrackMark | None


if TYPE_CHECKING:
    CaseloadRow = WithAnnotations[Patient, CaseloadCells]


def caseload_page(
    user: User,
    query: CaseloadQuery,
    page_number: int | str | None,
    per_page: int = 25,
    now: datetime | None = None,
) -> Page[CaseloadRow]:
    """One page of the caseload, each row decorated with its display cells and marks (no further
    queries). `now` is for tests; the default is the clock."""
    now = now or timezone.now()
    # Typed as the rows it holds once decorated, below.
    page = cast("Page[CaseloadRow]", Paginator(caseload_rows(user, query, now), per_page).get_page(page_number))
    for patient in page.object_list:
        due = {d.instrument: d for d in due_marks(patient, now)}
        interval = patient.clinic.measure_interval_days
        patient.phq9_due = due_mark(PHQ9, due.get(PHQ9.code), interval)
        patient.gad7_due = due_mark(GAD7, due.get(GAD7.code), interval)
        patient.phq9_off_track = off_track_mark(PHQ9, patient.phq9_off_track_basis, patient.phq9_off_track_inputs)
        patient.gad7_off_track = off_track_mark(GAD7, patient.gad7_off_track_basis, patient.gad7_off_track_inputs)
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


@dataclass(frozen=True)
class DigestRow:
    """A patient of the daily digest: the player id and the measures due, nothing clinical."""

    player_id: str
    due: list[cadence.Due]


def caseload_due_rows(user: User, clinic_id: int, now: datetime | None = None) -> list[DigestRow]:
    """The therapist's patients in one clinic with a questionnaire due today (DESIGN §8), by player id:
    the caseload's own rows, filtered by the same SQL as its "PHQ-9 due" / "GAD-7 due" filters (either
    one) and marked by the same `due_marks`, so the digest and the caseload cannot disagree. Two queries."""
    now = now or timezone.now()
    rows = caseload_rows(user, CaseloadQuery(sort="player_id"), now).filter(clinic_id=clinic_id)
    rows = rows.filter(_due_condition(rows, now, tuple(i.code for i in CADENCE_INSTRUMENTS)))
    found = [DigestRow(player_id=patient.player_id, due=due_marks(patient, now)) for patient in rows]
    return [row for row in found if row.due]


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


def clinic_user_rows(user: AnyUser) -> QuerySet[Membership]:
    """For clinic admins: the people of their clinics, with role, last login and whether a second
    factor is set up (a fixed number of queries)."""
    enrolled = AuthenticatorDevice.objects.filter(user_id=OuterRef("user_id"), confirmed=True)
    return (
        Membership.objects.filter(clinic__in=clinics_with_role(user, Role.CLINIC_ADMIN))
        .annotate(enrolled=Exists(enrolled))
        .select_related("user", "clinic")
        .order_by("clinic__name", "user__username")
    )


def clinic_member(admin: AnyUser, user_id: int) -> Membership | None:
    """The membership of user `user_id` in a clinic `admin` runs (None: not one of theirs)."""
    return (
        Membership.objects.filter(clinic__in=clinics_with_role(admin, Role.CLINIC_ADMIN), user_id=user_id)
        .select_related("user", "clinic")
        .first()
    )


RECENT_SESSION_FIELDS = ("session_id", "started_at", "ended_at", "status", "duration_minutes", "world", "approaches")
_RECENT_SESSIONS_SQL = f"""
SELECT {", ".join(RECENT_SESSION_FIELDS)} FROM tracking_therapysession
WHERE patient_id = %(patient)s ORDER BY started_at DESC, id DESC LIMIT %(limit)s
"""  # noqa: S608 - the column names are constants


def recent_sessions(patient: Patient, limit: int, *, orm: bool = False) -> list[dict[str, Any]]:
    """The patient's `limit` latest sessions, latest first, as the progress read shows them."""
    rows = query_rows(
        _RECENT_SESSIONS_SQL,
        {"patient": patient.pk, "limit": limit},
        lambda: (
            TherapySession.objects.filter(patient=patient)
            .order_by("-started_at", "-pk")
            .values_list(*RECENT_SESSION_FIELDS)[:limit]
        ),
        orm=orm,
    )
    tzinfo = ZoneInfo(patient.tz_name)
    sessions = []
    for row in rows:
        r = dict(zip(RECENT_SESSION_FIELDS, row, strict=True))
        if isinstance(r["approaches"], str):  # raw SQL: Django leaves jsonb to JSONField to decode
            r["approaches"] = json.loads(r["approaches"])
        r["started_local"] = r["started_at"].astimezone(tzinfo).strftime("%Y-%m-%d %H:%M")
        r["started_at"] = r["started_at"].isoformat()
        r["ended_at"] = r["ended_at"] and r["ended_at"].isoformat()
        sessions.append(r)
    return sessions


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


# ----- the auditor's console (DESIGN §7): a chain's events, its status, what awaits review --------------
#
# Patient identifiers and actions only: a detail is shown as its field names with counts, never the text
# of a value, which could be free text. The one exception is the break-glass reason, shown in the review
# list, because reviewing it is the point of that list.

AUDIT_PAGE_SIZE = 50
AUDIT_REVIEW_LIMIT = 50
REVIEWABLE_ACTIONS = (AuditAction.BREAK_GLASS, AuditAction.LOCKOUT)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR = re.compile(r"([0-9]{1,17})\.([0-9]{1,18})")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SHOWN_PATIENTS = 3


def auditor_chains(user: AnyUser) -> list[str]:
    """The chains an auditor reads: those of the clinics where they are an auditor, by slug."""
    return list(clinics_with_role(user, Role.AUDITOR).order_by("slug").values_list("slug", flat=True))


def _date_param(value: str, label: str, errors: list[str]) -> date | None:
    value = value.strip()
    if not value:
        return None
    if _DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    errors.append(f"{label}: not a date; use YYYY-MM-DD.")
    return None


@dataclass(frozen=True)
class AuditQuery:
    """What the auditor asked the console for. The patient comes from the session (the console's
    patient filter is POSTed), never from the URL."""

    chain: str
    actor: str = ""
    action: str = ""
    outcome: str = ""
    date_from: date | None = None
    date_to: date | None = None
    patient: str = ""
    errors: tuple[str, ...] = ()

    @classmethod
    def from_params(cls, params: QueryDict, *, chains: list[str], patient: str = "") -> AuditQuery:
        errors: list[str] = []
        chain = params.get("chain", "")
        if chain not in chains:
            chain = chains[0]
        actor = params.get("actor", "").strip()[:200]
        problem = text_error(actor)
        if problem:
            errors.append(f"User: {problem}")
            actor = ""
        action = params.get("action", "")
        if action and action not in AuditAction.values:
            errors.append("Action: not one of the list.")
            action = ""
        outcome = params.get("outcome", "")
        if outcome and outcome not in AuditOutcome.values:
            errors.append("Outcome: not one of the list.")
            outcome = ""
        date_from = _date_param(params.get("from", ""), "From", errors)
        date_to = _date_param(params.get("to", ""), "To", errors)
        if date_from and date_to and date_from > date_to:
            errors.append("The date range ends before it starts: the dates are ignored.")
            date_from = date_to = None
        return cls(chain, actor, action, outcome, date_from, date_to, patient, tuple(errors))

    def link_params(self) -> dict[str, str]:
        """The filters as they go into a link (the console's pages, the export): all but the patient."""
        params = {
            "chain": self.chain,
            "actor": self.actor,
            "action": self.action,
            "outcome": self.outcome,
            "from": self.date_from.isoformat() if self.date_from else "",
            "to": self.date_to.isoformat() if self.date_to else "",
        }
        return {key: value for key, value in params.items() if value}

    def described(self) -> dict[str, Any]:
        """The filters as an export event records them (the patient goes into the event's `patients`)."""
        described: dict[str, Any] = {k: v for k, v in self.link_params().items() if k != "chain"}
        if self.patient:
            described["patient"] = True
        return described

    @property
    def filtered(self) -> bool:
        return bool(self.described())


def _naming(player_id: str) -> Q:
    """Events naming this patient. PostgreSQL: `@>` on the GIN index. SQLite (the demo) has no JSON
    containment: the quoted id inside the stored JSON text stands in for it."""
    if connection.vendor == "postgresql":
        return Q(patients__contains=[player_id])
    return Q(patients__icontains=json.dumps(player_id))


def audit_events(query: AuditQuery) -> QuerySet[AuditEvent]:
    """The chain's events that pass the filters (in no particular order)."""
    events = AuditEvent.objects.filter(chain=query.chain)
    if query.actor:
        events = events.filter(actor=query.actor)
    if query.action:
        events = events.filter(action=query.action)
    if query.outcome:
        events = events.filter(outcome=query.outcome)
    if query.date_from:
        events = events.filter(at__gte=datetime.combine(query.date_from, time.min, tzinfo=UTC))
    if query.date_to:
        events = events.filter(at__lt=datetime.combine(query.date_to + timedelta(days=1), time.min, tzinfo=UTC))
    if query.patient:
        events = events.filter(_naming(query.patient))
    return events


def _cursor(event: AuditEvent) -> str:
    """An event's place in the newest-first order, (at, seq), as a link carries it."""
    return f"{(event.at - _EPOCH) // timedelta(microseconds=1)}.{event.seq}"


def _parse_cursor(text: str) -> tuple[datetime, int] | None:
    match = _CURSOR.fullmatch(text or "")
    if match is None:
        return None
    return _EPOCH + timedelta(microseconds=int(match[1])), int(match[2])


def detail_summary(detail: Any, depth: int = 0) -> list[str]:
    """What the console shows of a detail: its field names, with numbers and the length of lists; the
    value of a text is never shown (it could be free text)."""
    if not isinstance(detail, dict):
        return []
    parts = []
    for key in sorted(detail, key=str):
        value, name = detail[key], str(key)[:40]
        if isinstance(value, int) and not isinstance(value, bool):
            parts.append(f"{name}: {value}")
        elif isinstance(value, list | tuple):
            parts.append(f"{name}: {len(value)}")
        elif isinstance(value, dict) and value and depth < 1:
            parts.append(f"{name} ({', '.join(detail_summary(value, depth + 1))})")
        else:
            parts.append(name)
    return parts[:12]


@dataclass(frozen=True)
class AuditRow:
    """One event as the console lists it."""

    id: int
    seq: int
    at: str
    actor: str
    role: str
    action: str
    patients: list[str]
    more_patients: int
    object: str
    detail: list[str]
    ip: str
    outcome: str


def _row(event: AuditEvent) -> AuditRow:
    patients = [str(p) for p in event.patients or []]
    return AuditRow(
        id=event.pk,
        seq=event.seq,
        at=event.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        actor=event.actor,
        role=event.role,
        action=event.action,
        patients=patients[:_SHOWN_PATIENTS],
        more_patients=max(0, len(patients) - _SHOWN_PATIENTS),
        object=event.object,
        detail=detail_summary(event.detail),
        ip=event.ip or "",
        outcome=event.outcome,
    )


@dataclass(frozen=True)
class AuditPage:
    rows: list[AuditRow]
    newer: str | None  # the cursor of the "newer" link, None on the newest page
    older: str | None
    first: bool  # the newest page (no cursor)


def audit_page(query: AuditQuery, *, before: str = "", after: str = "", size: int = AUDIT_PAGE_SIZE) -> AuditPage:
    """One page of the filtered events, newest first, by keyset pagination on (at, seq): one query
    whatever the page's depth, on the (chain, at, seq) and (chain, action|actor, at) indexes. The
    redundant `at <=` (`at >=`) bound lets the index scan start at the cursor."""
    events = audit_events(query)
    newer_than = _parse_cursor(after)
    if newer_than is not None:
        at, seq = newer_than
        found = list(events.filter(Q(at__gte=at), Q(at__gt=at) | Q(seq__gt=seq)).order_by("at", "seq")[: size + 1])
        more_newer = len(found) > size
        found = found[:size][::-1]
        return AuditPage(
            rows=[_row(e) for e in found],
            newer=_cursor(found[0]) if more_newer and found else None,
            older=_cursor(found[-1]) if found else None,
            first=False,
        )
    older_than = _parse_cursor(before)
    if older_than is not None:
        at, seq = older_than
        events = events.filter(Q(at__lte=at), Q(at__lt=at) | Q(seq__lt=seq))
    found = list(events.order_by("-at", "-seq")[: size + 1])
    more_older = len(found) > size
    found = found[:size]
    return AuditPage(
        rows=[_row(e) for e in found],
        newer=_cursor(found[0]) if older_than is not None and found else None,
        older=_cursor(found[-1]) if more_older else None,
        first=older_than is None,
    )


def audit_export(query: AuditQuery) -> tuple[int, Iterator[AuditEvent]]:
    """The filtered events for the CSV export, in chain order, and how many there are. Bounded by the
    chain's head when asked, so the count is that of the rows streamed (and the export's own event, which
    comes after, is not among them)."""
    head = AuditChainHead.objects.filter(chain=query.chain).values_list("seq", flat=True).first() or 0
    events = audit_events(query).filter(seq__lte=head)
    return events.count(), events.order_by("seq").iterator(chunk_size=2000)


@dataclass(frozen=True)
class ChainStatus:
    chain: str
    head_seq: int
    verified_at: datetime | None
    verified_seq: int | None
    verified_ok: bool | None
    verified_message: str
    exported_at: datetime | None
    exported_seq: int | None

    @property
    def since_verified(self) -> int:
        """Events appended since the last verification."""
        return self.head_seq - (self.verified_seq or 0)


def audit_chain_status(chains: list[str]) -> list[ChainStatus]:
    """Each chain's last verification (when, up to which seq, intact or what broke) and last signed
    head, in the order of `chains`. One query."""
    heads = {head.chain: head for head in AuditChainHead.objects.filter(chain__in=chains)}
    statuses = []
    for chain in chains:
        head = heads.get(chain)
        if head is None:
            statuses.append(ChainStatus(chain, 0, None, None, None, "", None, None))
            continue
        statuses.append(
            ChainStatus(
                chain=chain,
                head_seq=head.seq,
                verified_at=head.verified_at,
                verified_seq=head.verified_seq,
                verified_ok=head.verified_ok,
                verified_message=head.verified_message,
                exported_at=head.exported_at,
                exported_seq=head.exported_seq,
            )
        )
    return statuses


@dataclass(frozen=True)
class ReviewItem:
    """A break-glass grant (or a refused attempt) or a lockout, for the auditor's review."""

    row: AuditRow
    reason: str  # the break-glass reason, shown because reviewing it is the point
    expires_at: str
    review: AuditReview | None


def _review_item(event: AuditEvent, review: AuditReview | None) -> ReviewItem:
    detail = event.detail if isinstance(event.detail, dict) else {}
    reason = detail.get("reason", "") if event.action == AuditAction.BREAK_GLASS else ""
    expires = detail.get("expires_at", "") if event.action == AuditAction.BREAK_GLASS else ""
    return ReviewItem(
        row=_row(event),
        reason=str(reason)[:600],
        expires_at=str(expires).replace("T", " ")[:16] if expires else "",
        review=review,
    )


class AuditReviews(TypedDict):
    pending: list[ReviewItem]
    more_pending: bool
    reviewed: list[ReviewItem]


def audit_reviews(chains: list[str], *, limit: int = AUDIT_REVIEW_LIMIT, reviewed: int = 10) -> AuditReviews:
    """Break-glass and lockout events not reviewed yet, newest first (at most `limit`, and whether there
    are more), and the latest reviews. Three queries, whatever the numbers."""
    reviewable = AuditEvent.objects.filter(chain__in=chains, action__in=REVIEWABLE_ACTIONS)
    unreviewed = reviewable.filter(~Exists(AuditReview.objects.filter(event_id=OuterRef("pk"))))
    pending = list(unreviewed.order_by("-at", "-seq")[: limit + 1])
    reviews = list(
        AuditReview.objects.filter(chain__in=chains).select_related("reviewed_by").order_by("-reviewed_at")[:reviewed]
    )
    events = {e.pk: e for e in AuditEvent.objects.filter(pk__in=[r.event_id for r in reviews])}
    return {
        "pending": [_review_item(e, None) for e in pending[:limit]],
        "more_pending": len(pending) > limit,
        "reviewed": [_review_item(events[r.event_id], r) for r in reviews if r.event_id in events],
    }


def audit_reviewable_event(chains: list[str], event_id: int) -> AuditEvent | None:
    """The event an auditor may mark reviewed: a break-glass or lockout event of one of their chains."""
    return AuditEvent.objects.filter(pk=event_id, chain__in=chains, action__in=REVIEWABLE_ACTIONS).first()
