"""Reads for outcomes, effectiveness reports and alerts.

Every report loads its data in a fixed number of queries, whatever the number of patients: one for the
patients in scope, one for all their questionnaire responses, and one each for sessions, markers and
milestones (the engagement side). The classification itself is `reports.outcomes` (pure functions).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, TypedDict
from zoneinfo import ZoneInfo

from django.db.models import Case, Count, F, IntegerField, Max, Q, QuerySet, Sum, Value, When
from django.utils import timezone

from reports import cadence, disclosure, fhir, trajectories
from reports.instruments import GAD7, PHQ9, Instrument, get_instrument
from reports.models import ITEM_FIELDS, Alert, AlertKind, AlertSeverity, OutcomeResponse, TrajectoryReference
from reports.outcomes import Score, administration_order, classify_patient, cohort_summary, reliable_change_direction
from tracking.access import caseload_for_user
from tracking.models import Clinic, MarkerType, Milestone, Patient, ProgressMarker, TherapySession

if TYPE_CHECKING:
    from tracking.access import User

# Patients by id: a list of ids, or a subquery of them (`scope.values("pk")`). Its rows are `Any`: the lookup
# check of django-stubs accepts a subquery for `patient_id__in` only as an iterable of ids.
PatientIds = Iterable[int] | QuerySet[Patient, Any]

REPORT_INSTRUMENTS = (PHQ9, GAD7)
ENGAGEMENT_KEYS = ("sessions", "minutes", "skills_acquired", "breakthroughs", "milestones")


SEVERITY_ORDER = (AlertSeverity.URGENT, AlertSeverity.HIGH, AlertSeverity.MODERATE)


def severity_rank(field: str = "severity") -> Case:
    """0 for urgent, 1 for high, 2 for moderate: sorts the most severe first in the database."""
    return Case(
        *(When(**{field: severity}, then=Value(rank)) for rank, severity in enumerate(SEVERITY_ORDER)),
        default=Value(len(SEVERITY_ORDER)),
        output_field=IntegerField(),
    )


def alerts_for_patient(patient: Patient) -> QuerySet[Alert]:
    """Open alerts first, most severe then oldest first; then the acknowledged ones, latest first."""
    return (
        Alert.objects.filter(patient=patient)
        .select_related("acknowledged_by")
        .annotate(rank=severity_rank())
        .order_by(
            F("acknowledged_at").desc(nulls_first=True),
            F("rank").asc(),
            "occurred_at",
            "pk",
        )
    )


@dataclass(frozen=True)
class AlertQuery:
    """The filters of `/alerts/`: severity, kind, and open or acknowledged."""

    severity: str = ""
    kind: str = ""
    status: str = "open"  # "open" | "acknowledged" | "all"

    STATUSES = {"open": "Open", "acknowledged": "Acknowledged", "all": "All"}

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> AlertQuery:
        severity = params.get("severity", "")
        kind = params.get("kind", "")
        status = params.get("status", "open")
        return cls(
            severity=severity if severity in AlertSeverity.values else "",
            kind=kind if kind in AlertKind.values else "",
            status=status if status in cls.STATUSES else "open",
        )


ALERT_FILTERS = {
    "severities": AlertSeverity.choices,
    "kinds": AlertKind.choices,
    "statuses": tuple(AlertQuery.STATUSES.items()),
}


def _caseload_alerts(user: User) -> QuerySet[Alert]:
    return Alert.objects.filter(patient__in=caseload_for_user(user).values("pk"))


def therapist_alerts(user: User, query: AlertQuery) -> QuerySet[Alert]:
    """The alerts of the therapist's caseload for `/alerts/`: open ones most severe first, then oldest
    first (what waits longest comes first); acknowledged ones latest first."""
    alerts = _caseload_alerts(user).select_related("patient__clinic", "acknowledged_by").annotate(rank=severity_rank())
    if query.severity:
        alerts = alerts.filter(severity=query.severity)
    if query.kind:
        alerts = alerts.filter(kind=query.kind)
    if query.status == "open":
        alerts = alerts.filter(acknowledged_at__isnull=True)
    elif query.status == "acknowledged":
        alerts = alerts.filter(acknowledged_at__isnull=False)
    return alerts.order_by(F("acknowledged_at").desc(nulls_first=True), "rank", "occurred_at", "pk")


def alert_inbox(user: User, limit: int = 8) -> dict[str, Any]:
    """The header inbox: open alerts of the therapist's caseload, the most severe first and, within a
    severity, the oldest first; with the count per severity (ids and kinds only, no reason)."""
    open_alerts = _caseload_alerts(user).filter(acknowledged_at__isnull=True)
    counts = dict(open_alerts.order_by().values_list("severity").annotate(n=Count("pk")))
    first = open_alerts.select_related("patient").annotate(rank=severity_rank()).order_by("rank", "occurred_at", "pk")
    return {
        "open": sum(counts.values()),
        "counts": {severity: counts.get(severity, 0) for severity in SEVERITY_ORDER},
        "latest": [
            {
                "player_id": a.patient.player_id,
                "kind": a.get_kind_display(),
                "severity": a.severity,
                "occurred_at": a.occurred_at.isoformat(),
            }
            for a in first[:limit]
        ],
    }


# ----- the period of a report ---------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A range of calendar dates, both ends included, either end open. The dates are those of the
    clinic's time zone (a report is a clinic's or a caseload's, so it follows the clinic's calendar)."""

    date_from: date | None = None
    date_to: date | None = None

    @property
    def is_open(self) -> bool:
        return self.date_from is None and self.date_to is None

    def bounds(self, tz_name: str) -> tuple[datetime | None, datetime | None]:
        """[start, end) as aware datetimes in the time zone `tz_name`."""
        tz = ZoneInfo(tz_name)
        start = datetime.combine(self.date_from, time.min, tzinfo=tz) if self.date_from else None
        end = datetime.combine(self.date_to + timedelta(days=1), time.min, tzinfo=tz) if self.date_to else None
        return start, end

    def q(self, field: str, clinics: Iterable[Clinic], clinic_field: str = "clinic_id") -> Q:
        """A filter keeping rows whose `field` falls in the period of their own clinic's calendar."""
        if self.is_open:
            return Q()
        condition = Q(pk__in=[])
        for clinic in clinics:
            start, end = self.bounds(clinic.timezone)
            part = Q(**{clinic_field: clinic.pk})
            if start is not None:
                part &= Q(**{f"{field}__gte": start})
            if end is not None:
                part &= Q(**{f"{field}__lt": end})
            condition |= part
        return condition

    def as_dict(self) -> dict[str, str | None]:
        return {
            "from": self.date_from.isoformat() if self.date_from else None,
            "to": self.date_to.isoformat() if self.date_to else None,
        }


ALL_TIME = Period()


# ----- scores -------------------------------------------------------------------------------------


SCORE_COLUMNS = ("patient_id", "response_id", "instrument", "administered_at", "total", *ITEM_FIELDS)


def _score(row: Sequence[Any]) -> Score:
    """A Score from a row of SCORE_COLUMNS (plain values: no model instance per response)."""
    _, response_id, instrument, administered_at, total, *items = row
    n_items = get_instrument(instrument).item_count
    known = items[:n_items]
    return Score(
        instrument=instrument,
        administered_at=administered_at,
        total=total,
        items=tuple(known) if all(item is not None for item in known) else None,
        response_id=response_id,
    )


def scores_by_patient(
    patient_ids: PatientIds, *, period: Period = ALL_TIME, clinics: Iterable[Clinic] = ()
) -> dict[int, list[Score]]:
    """patient pk → that patient's scores in the period, oldest first. One query, whatever the number
    of patients; `patient_ids` may be a list or a subquery. `clinics` are the clinics of those patients
    (needed only for a bounded period, whose dates are each clinic's calendar dates)."""
    result: dict[int, list[Score]] = defaultdict(list)
    rows = (
        OutcomeResponse.objects.filter(patient_id__in=patient_ids)
        .filter(period.q("administered_at", clinics))
        .order_by()
        .values_list(*SCORE_COLUMNS)
    )
    for row in rows:
        result[row[0]].append(_score(row))
    for scores in result.values():
        scores.sort(key=administration_order)
    return dict(result)


def outcome_scores_for_patient(patient: Patient) -> list[dict[str, Any]]:
    """A patient's questionnaire responses, oldest first, each with its band (the API's `outcomes`)."""
    scores = scores_by_patient([patient.pk]).get(patient.pk, [])
    return [_score_row(score) for score in scores]


def _score_row(score: Score) -> dict[str, Any]:
    instrument = get_instrument(score.instrument)
    items = list(score.items) if score.items is not None else None
    item9 = None
    if instrument.risk_item is not None and items is not None:
        item9 = items[instrument.risk_item - 1]
    return {
        "response_id": score.response_id,
        "instrument": instrument.code,
        "administered_at": score.administered_at,
        "total": score.total,
        "band": instrument.band(score.total),
        "at_caseness": instrument.at_caseness(score.total),
        "items": items,
        "item9": item9,
    }


def patient_effectiveness(patient: Patient) -> dict[str, Any]:
    """The §5 classification of one patient over all their responses (one element of a report's
    `patients`), each measure with its not-on-track result (§8)."""
    scores = scores_by_patient([patient.pk]).get(patient.pk, [])
    results = measure_results(patient, scores, clinic_references([patient.clinic_id]))
    return with_trajectory(classify_patient(patient.player_id, scores), results)


# ----- expected recovery (DESIGN §8) -----------------------------------------------------------------

References = Mapping[tuple[int, str], trajectories.Reference]


def clinic_references(clinic_ids: Iterable[int]) -> dict[tuple[int, str], trajectories.Reference]:
    """(clinic id, instrument code) → the clinic's stored reference (`reports.expected_recovery` builds
    them). One query. A clinic or instrument without a stored reference is missing: `measure_results`
    then judges without one."""
    rows = TrajectoryReference.objects.filter(clinic_id__in=list(clinic_ids)).values_list(
        "clinic_id", "instrument", "data"
    )
    return {(clinic_id, code): trajectories.Reference.from_json(data) for clinic_id, code, data in rows}


def local_date_of(patient: Patient) -> Callable[[datetime], date]:
    """A function giving the patient's local calendar date of an aware datetime."""
    zone = ZoneInfo(patient.tz_name)
    return lambda at: at.astimezone(zone).date()


def measure_results(
    patient: Patient, scores: Sequence[Score], references: References
) -> dict[str, trajectories.Result]:
    """Instrument code → the patient's not-on-track result (§8) from their scores (any order) and their
    clinic's stored reference. No query: `patient.clinic` should be loaded."""
    local_date = local_date_of(patient)
    results = {}
    for instrument in REPORT_INSTRUMENTS:
        own = [s for s in scores if s.instrument == instrument.code]
        reference = references.get((patient.clinic_id, instrument.code)) or trajectories.Reference(instrument.code)
        judged = trajectories.patient_scores(str(patient.pk), own, local_date)
        results[instrument.code] = trajectories.not_on_track(judged, reference, instrument)
    return results


def with_trajectory(classification: dict[str, Any], results: Mapping[str, trajectories.Result]) -> dict[str, Any]:
    """`classification` (classify_patient's) with `not_on_track`, `not_on_track_basis` and `trajectory`
    (the stated inputs) in each measure object, as §8 words them."""
    for code, result in results.items():
        measure = classification[code]
        measure["not_on_track"] = result.not_on_track
        measure["not_on_track_basis"] = result.basis
        measure["trajectory"] = result.inputs()
    return classification


def patient_outcome_series(patient: Patient) -> dict[str, Any]:
    """What the outcome chart of one patient draws, and its data table: per instrument the scores over
    time (in the patient's time zone) with band, change from the previous and from the first score,
    whether the change from the first score is reliable (`step`) and item 9; the bands, caseness
    threshold and the patient's classification. `patient.clinic` should be loaded (access.patient_for_user does)."""
    scores = scores_by_patient([patient.pk]).get(patient.pk, [])
    tz = ZoneInfo(patient.tz_name)
    references = clinic_references([patient.clinic_id])
    results = measure_results(patient, scores, references)
    instruments = []
    for instrument in REPORT_INSTRUMENTS:
        points = []
        first: int | None = None
        previous: int | None = None
        for score in (s for s in scores if s.instrument == instrument.code):
            row = _score_row(score)
            local = score.administered_at.astimezone(tz)
            # Reliable change is from the FIRST score (NHS Talking Therapies), as everywhere else.
            step = None if first is None else reliable_change_direction(instrument, score.total - first)
            points.append(
                {
                    "x": local.strftime("%Y-%m-%d %H:%M"),
                    "administered_at": local.isoformat(),
                    "total": score.total,
                    "band": row["band"],
                    "band_label": _band_label(instrument, row["band"]),
                    "at_caseness": row["at_caseness"],
                    "change_from_previous": None if previous is None else score.total - previous,
                    "change_from_first": None if first is None else score.total - first,
                    "step": step,
                    "items_known": row["items"] is not None,
                    "item9": row["item9"],
                }
            )
            if first is None:
                first = score.total
            previous = score.total
        instruments.append(
            {
                "code": instrument.code,
                "name": instrument.name,
                "total_max": instrument.total_max,
                "caseness_threshold": instrument.caseness_threshold,
                "reliable_change": instrument.reliable_change,
                "risk_item": instrument.risk_item,
                "bands": [{"name": b.name, "label": b.label, "low": b.low, "high": b.high} for b in instrument.bands],
                "points": points,
                "expected": _expected_band(
                    instrument,
                    [s for s in scores if s.instrument == instrument.code],
                    references.get((patient.clinic_id, instrument.code)),
                    results[instrument.code],
                    tz,
                ),
            }
        )
    return {
        "player_id": patient.player_id,
        "timezone": patient.tz_name,
        "instruments": instruments,
        "classification": with_trajectory(classify_patient(patient.player_id, scores), results),
    }


# The chart draws the reference this many weeks past the latest score (where it exists).
BAND_WEEKS_AHEAD = 2


def _expected_band(
    instrument: Instrument,
    own: Sequence[Score],
    reference: trajectories.Reference | None,
    result: trajectories.Result,
    tz: ZoneInfo,
) -> dict[str, Any] | None:
    """What the outcome chart draws of expected recovery: the 25th–75th percentile band and the median of
    the patient's reference (their clinic, instrument and intake band) at the start of each week since the
    first score, and the not-on-track result. None when the patient has no score or the first was below
    caseness (they are in no reference group)."""
    if not own or result.intake_band is None or not instrument.at_caseness(own[0].total):
        return None
    first_day = own[0].administered_at.astimezone(tz).date()
    latest_week = result.week or 0
    series = (
        trajectories.band_series(reference, result.intake_band, range(latest_week + BAND_WEEKS_AHEAD + 1))
        if reference is not None
        else []
    )
    return {
        "intake_band": result.intake_band,
        "intake_label": _band_label(instrument, result.intake_band),
        "not_on_track": result.not_on_track,
        "basis": result.basis,
        "trajectory": result.inputs(),
        "band": [
            {"week": week, "x": (first_day + timedelta(days=7 * week)).isoformat(), "p25": p25, "p50": p50, "p75": p75}
            for week, p25, p50, p75 in series
        ],
    }


def _band_label(instrument: Instrument, name: str) -> str:
    return next(b.label for b in instrument.bands if b.name == name)


# ----- engagement (not a clinical outcome) --------------------------------------------------------


def engagement_by_patient(
    patient_ids: PatientIds, *, period: Period, clinics: Iterable[Clinic]
) -> dict[int, dict[str, Any]]:
    """patient pk → sessions started, their minutes, skill_acquired and breakthrough markers, and
    milestones reached in the period. Three queries, whatever the number of patients."""
    clinics = list(clinics)
    result: dict[int, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(ENGAGEMENT_KEYS, 0))
    sessions = (
        TherapySession.objects.filter(patient_id__in=patient_ids)
        .filter(period.q("started_at", clinics))
        .order_by()
        .values("patient_id")
        .annotate(n=Count("pk"), minutes=Sum("duration_minutes"))
    )
    for session_row in sessions:
        result[session_row["patient_id"]]["sessions"] = session_row["n"]
        result[session_row["patient_id"]]["minutes"] = round(session_row["minutes"] or 0)
    markers = (
        ProgressMarker.objects.filter(
            patient_id__in=patient_ids, type__in=[MarkerType.SKILL_ACQUIRED, MarkerType.BREAKTHROUGH]
        )
        .filter(period.q("achieved_at", clinics))
        .order_by()
        .values("patient_id", "type")
        .annotate(n=Count("pk"))
    )
    for marker_row in markers:
        key = "skills_acquired" if marker_row["type"] == MarkerType.SKILL_ACQUIRED else "breakthroughs"
        result[marker_row["patient_id"]][key] = marker_row["n"]
    milestones = (
        Milestone.objects.filter(patient_id__in=patient_ids)
        .filter(period.q("achieved_at", clinics, clinic_field="patient__clinic_id"))
        .order_by()
        .values("patient_id")
        .annotate(n=Count("pk"))
    )
    for milestone_row in milestones:
        result[milestone_row["patient_id"]]["milestones"] = milestone_row["n"]
    return result


def _engagement_totals(per_patient: Sequence[dict[str, Any]]) -> dict[str, Any]:
    totals = {key: sum(e[key] for e in per_patient) for key in ENGAGEMENT_KEYS}
    totals["n_patients"] = len(per_patient)
    totals["active_patients"] = sum(1 for e in per_patient if e["sessions"])
    return totals


# ----- cohort reports -----------------------------------------------------------------------------


class CohortRow(TypedDict):
    """A patient in a report's scope, for the per-patient tables."""

    player_id: str
    clinic: str  # its name
    outcome: dict[str, Any] | None  # the §5 classification; None without a response in the period
    engagement: dict[str, Any]  # ENGAGEMENT_KEYS → counts


def cohort_report(scope: QuerySet[Patient], period: Period = ALL_TIME, *, judged: bool = True) -> dict[str, Any]:
    """The effectiveness report over the patients of `scope` (a caseload, a clinic) in `period`.

    - `patients`: the §5 classification of each patient with at least one response in the period
      (ordered by player id); `cohort`: `cohort_summary` over them, with the counts beside every rate.
    - `rows`: one per patient in scope, with `outcome` (the classification, or None without a response
      in the period) and `engagement`, for the per-patient tables.
    - `measures`: per instrument, its cohort summary and the severity distribution at start and end.
    - `engagement`: use of the game over the period (sessions, minutes, skills acquired, breakthroughs,
      milestones). It describes engagement, not clinical outcome.
    Six queries, whatever the number of patients; five with `judged` false, which leaves out the
    measures' not-on-track results (§8) and the clinics' references they need.
    """
    patients = list(scope.select_related("clinic").order_by("player_id", "clinic__name"))
    clinics = list({p.clinic_id: p.clinic for p in patients}.values())
    ids = scope.values("pk")
    scores = scores_by_patient(ids, period=period, clinics=clinics) if patients else {}
    references = clinic_references([c.pk for c in clinics]) if patients and judged else {}
    engagement = engagement_by_patient(ids, period=period, clinics=clinics) if patients else {}

    classified: list[dict[str, Any]] = []
    rows: list[CohortRow] = []
    scores_by_player: defaultdict[str, list[Score]] = defaultdict(list)
    for patient in patients:
        patient_scores = scores.get(patient.pk, [])
        outcome = classify_patient(patient.player_id, patient_scores) if patient_scores else None
        if outcome is not None and judged:
            outcome = with_trajectory(outcome, measure_results(patient, patient_scores, references))
        if outcome is not None:
            classified.append(outcome)
            scores_by_player[patient.player_id].extend(patient_scores)
        rows.append(
            {
                "player_id": patient.player_id,
                "clinic": patient.clinic.name,
                "outcome": outcome,
                "engagement": engagement.get(patient.pk, dict.fromkeys(ENGAGEMENT_KEYS, 0)),
            }
        )
    cohort = cohort_summary(classified, scores_by_player)
    return {
        "period": period.as_dict(),
        "n_in_scope": len(patients),
        "n_with_scores": len(classified),
        "patients": classified,
        "rows": rows,
        "cohort": cohort,
        "measures": _measure_views(cohort),
        "engagement": _engagement_totals([r["engagement"] for r in rows]),
    }


def _measure_views(cohort: dict[str, Any]) -> list[dict[str, Any]]:
    views = []
    for instrument in REPORT_INSTRUMENTS:
        summary = cohort[instrument.code]
        views.append(
            {
                "code": instrument.code,
                "name": instrument.name,
                "summary": summary,
                "severity": [
                    {
                        "label": band.label,
                        "range": f"{band.low}–{band.high}",
                        "first": summary["severity_first"][band.name],
                        "last": summary["severity_last"][band.name],
                    }
                    for band in instrument.bands
                ],
            }
        )
    return views


def aggregates_only(report: dict[str, Any]) -> dict[str, Any]:
    """A report without any per-patient row or player id: what a clinic admin may see."""
    return {key: report[key] for key in ("period", "n_in_scope", "n_with_scores", "cohort", "measures", "engagement")}


def caseload_report(user: User, period: Period = ALL_TIME) -> dict[str, Any]:
    """The effectiveness report over a therapist's caseload."""
    return cohort_report(caseload_for_user(user), period)


def clinic_report(clinic: Clinic, period: Period = ALL_TIME) -> dict[str, Any]:
    """The clinic's aggregate report (no per-patient rows), for clinic admins, with counts of fewer than
    5 patients suppressed (reports.disclosure)."""
    report: dict[str, Any] = disclosure.suppress(
        aggregates_only(cohort_report(Patient.objects.filter(clinic=clinic), period, judged=False))
    )
    return report


def effectiveness_report(
    clinic: Clinic, *, period: Period = ALL_TIME, player_id: str | None = None, therapist: User | None = None
) -> dict[str, Any]:
    """The §6 `effectiveness_report` JSON: `{"patients": [...], "cohort": {...}}` over the clinic, one
    therapist's caseload in it, or one patient. A single patient asked for by id is reported even with
    no response in the period (every field null)."""
    scope = Patient.objects.filter(clinic=clinic)
    if therapist is not None:
        scope = scope.filter(assignments__therapist=therapist)
    if player_id is not None:
        scope = scope.filter(player_id=player_id)
    report = cohort_report(scope, period)
    patients = report["patients"]
    if player_id is not None and not patients:
        patients = [with_trajectory(classify_patient(player_id, []), _no_results())]
        return {"patients": patients, "cohort": cohort_summary(patients, {})}
    return {"patients": patients, "cohort": report["cohort"]}


def _no_results() -> dict[str, trajectories.Result]:
    return {instrument.code: trajectories.Result(None, None) for instrument in REPORT_INSTRUMENTS}


def measures_due(patient: Patient, now: datetime | None = None) -> list[cadence.Due]:
    """The questionnaires due for `patient` (DESIGN §8), from their last administrations, whether they
    had a session in the 30 local days ending today, and the clinic's interval. Three queries."""
    zone = ZoneInfo(patient.tz_name)
    today = (now or timezone.now()).astimezone(zone).date()
    window_start = datetime.combine(today - timedelta(days=cadence.ACTIVE_WINDOW_DAYS - 1), time.min, tzinfo=zone)
    active = TherapySession.objects.filter(patient=patient, started_at__gte=window_start).exists()
    latest = (
        OutcomeResponse.objects.filter(patient=patient, instrument__in=[i.code for i in REPORT_INSTRUMENTS])
        .values("instrument")
        .annotate(last=Max("administered_at"))
    )
    last = {row["instrument"]: (row["last"].astimezone(zone).date(), row["last"]) for row in latest}
    return cadence.due_measures(
        today=today,
        interval_days=patient.clinic.measure_interval_days,
        active=active,
        last_administered={i.code: last.get(i.code) for i in REPORT_INSTRUMENTS},
    )


def fhir_bundle(patient: Patient, site_url: str) -> dict[str, Any]:
    """The patient's questionnaire data as a FHIR R4 Bundle (DESIGN §8; reports.fhir builds it)."""
    rows = OutcomeResponse.objects.filter(patient=patient).order_by("administered_at", "response_id")
    responses = []
    for row in rows.values("response_id", "instrument", "administered_at", "total", *ITEM_FIELDS):
        n_items = len(get_instrument(row["instrument"]).items)
        items = [row[field] for field in ITEM_FIELDS[:n_items]]
        responses.append(
            fhir.Response(
                response_id=row["response_id"],
                instrument=row["instrument"],
                administered_at=row["administered_at"],
                total=row["total"],
                items=items if all(item is not None for item in items) else None,
            )
        )
    return fhir.bundle(
        player_id=patient.player_id, clinic_slug=patient.clinic.slug, site_url=site_url, responses=responses
    )
