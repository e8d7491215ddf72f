"""The progress-tracking service: the four operations of the specification, by their names.

`compute_progress_summary`, `detect_and_update_milestones` and `generate_progress_insights` compute from
database aggregates (see `selectors.patient_histories`) with the pure rules of `analytics` and store the
result; `get_visualization_data` reads a window of daily counts. `patients_recompute` runs the three
writes for a group of patients in a fixed number of queries (the Celery task calls it for one patient,
the reconciler and `recompute_analytics` for many).
"""

import logging
from dataclasses import dataclass
from datetime import date, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from tracking import analytics, live, selectors, webhooks
from tracking.models import Milestone, Patient, ProgressHighlight, ProgressSummary, Recommendation, WebhookDelivery
from tracking.signals import milestone_achieved

logger = logging.getLogger(__name__)

RECENT_SESSIONS = 30  # the specification's summaries_limit default


@dataclass(frozen=True)
class Computation:
    """One patient's history and summary, computed once and shared by the operations of a recompute."""

    patient: Patient
    rules: tuple[analytics.MilestoneRule, ...]
    history: analytics.PatientHistory
    summary: analytics.ProgressSummaryData
    stored_milestones: dict  # (family, threshold) → achieved_at, as stored before this computation


def _compute_many(patients: list[Patient]) -> list[Computation]:
    stored = selectors.stored_milestones([p.pk for p in patients])
    histories = selectors.patient_histories(patients, stored)
    computations = []
    for patient in patients:
        rules = selectors.milestone_rules_for(patient.clinic)
        history = histories[patient.pk]
        summary = analytics.compute_summary(history, rules)
        computations.append(Computation(patient, rules, history, summary, stored[patient.pk]))
    return computations


def _compute(patient: Patient) -> Computation:
    return _compute_many([patient])[0]


# ----- the three writes, each for many patients at once ---------------------------------------------

SUMMARY_COLUMNS = (
    "computed_at",
    "local_date",
    "data",
    "current_streak_days",
    "sessions_this_week",
    "dropout_risk_score",
    "last_active_day",
    "progress_trend",
    "engagement_trend",
)


def _store_summaries(computations: list[Computation]) -> None:
    now = timezone.now()
    rows = []
    for c in computations:
        m = c.summary.metrics
        rows.append(
            ProgressSummary(
                patient=c.patient,
                computed_at=now,
                local_date=c.history.today,
                data=c.summary.to_dict(),
                current_streak_days=m.current_streak_days,
                sessions_this_week=m.sessions_this_week,
                dropout_risk_score=c.summary.dropout_risk.value,
                last_active_day=m.last_active_day,
                progress_trend=c.summary.progress_trend,
                engagement_trend=c.summary.engagement_trend,
            )
        )
    ProgressSummary.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["patient"], update_fields=list(SUMMARY_COLUMNS)
    )


def _store_new_milestones(computations: list[Computation]) -> list[ProgressHighlight]:
    """Stores each newly reached milestone once, with one highlight (and a webhook in the outbox when the
    clinic has one); the celebration hooks fire after commit."""
    pending = []
    for c in computations:
        for achieved in analytics.detect_milestones(c.history, c.rules):
            rule = achieved.rule
            if (rule.family, rule.threshold) not in c.stored_milestones:
                pending.append((c.patient, achieved))
    if not pending:
        return []
    milestones = Milestone.objects.bulk_create(
        [
            Milestone(
                patient=patient,
                family=a.rule.family,
                threshold=a.rule.threshold,
                title=a.rule.title,
                description=a.rule.description,
                achieved_at=a.achieved_at,
            )
            for patient, a in pending
        ]
    )
    highlights = []
    for milestone, (patient, achieved) in zip(milestones, pending, strict=True):
        draft = analytics.highlight_for_milestone(achieved)
        highlights.append(
            ProgressHighlight(
                patient=patient,
                milestone=milestone,
                type=draft.type,
                title=draft.title,
                description=draft.description,
                achieved_at=draft.achieved_at,
                therapeutic_value=draft.therapeutic_value,
            )
        )
    highlights = ProgressHighlight.objects.bulk_create(highlights)
    deliveries = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                clinic=h.patient.clinic,
                highlight=h,
                payload=webhooks.milestone_payload(h.patient, h.milestone, h),
            )
            for h in highlights
            if h.patient.clinic.webhook_url
        ]
    )
    transaction.on_commit(lambda: _celebrate(highlights, [d.pk for d in deliveries]))
    return highlights


def _celebrate(highlights: list[ProgressHighlight], delivery_ids: list[int]) -> None:
    for highlight in highlights:
        milestone_achieved.send(sender=Milestone, milestone=highlight.milestone, highlight=highlight)
    for delivery_id in delivery_ids:
        webhooks.enqueue_delivery(delivery_id)


def _refresh_recommendations(computations: list[Computation]) -> None:
    """New recommendations are created, current ones updated (a dismissed one stays dismissed), and those
    whose condition no longer holds expire; one that applies again after it expired starts afresh."""
    now = timezone.now()
    existing = {
        (r.patient_id, r.type): r for r in Recommendation.objects.filter(patient__in=[c.patient for c in computations])
    }
    to_create, to_update = [], []
    for c in computations:
        drafts = {d.type: d for d in analytics.recommendations(c.summary, c.history)}
        for kind, draft in drafts.items():
            fields = {
                "title": draft.title,
                "description": draft.description,
                "priority": draft.priority,
                "reasoning": draft.reasoning,
            }
            rec = existing.get((c.patient.pk, kind))
            if rec is None:
                to_create.append(Recommendation(patient=c.patient, type=kind, **fields))
                continue
            if rec.expires_at is not None:
                fields.update(expires_at=None, dismissed=False, dismissed_at=None, dismissed_by=None)
            if any(getattr(rec, f) != v for f, v in fields.items()):
                for f, v in fields.items():
                    setattr(rec, f, v)
                to_update.append(rec)
        for (patient_id, kind), rec in existing.items():
            if patient_id == c.patient.pk and kind not in drafts and rec.expires_at is None:
                rec.expires_at = now
                to_update.append(rec)
    Recommendation.objects.bulk_create(to_create)
    for rec in to_update:
        rec.updated_at = now
    Recommendation.objects.bulk_update(to_update, RECOMMENDATION_FIELDS)


RECOMMENDATION_FIELDS = [
    "title",
    "description",
    "priority",
    "reasoning",
    "expires_at",
    "dismissed",
    "dismissed_at",
    "dismissed_by",
    "updated_at",
]


def _raise_disengagement_alerts(computations: list[Computation]) -> None:
    from reports.services import disengagement_alerts

    disengaged = {
        c.patient.pk: (c.history.active_days[-1].day, c.history.active_days[-1].first_started_at)
        for c in computations
        if analytics.is_disengaged(c.summary.metrics, len(c.history.active_days))
    }
    alerts = disengagement_alerts(disengaged=disengaged, patients={c.patient.pk: c.patient for c in computations})
    if alerts:
        clinic_ids = sorted({a.clinic_id for a in alerts})
        transaction.on_commit(lambda: live.bump(alert_clinic_ids=clinic_ids))


# ----- the specification's four operations ----------------------------------------------------------


def compute_progress_summary(patient: Patient, *, summaries_limit: int = RECENT_SESSIONS) -> dict:
    """Computes the summary and stores it as the patient's snapshot; returns it with the
    `summaries_limit` most recent sessions."""
    c = _compute(patient)
    _store_summaries([c])
    return {**c.summary.to_dict(), "recent_sessions": selectors.recent_sessions(patient, summaries_limit)}


def detect_and_update_milestones(patient: Patient) -> tuple[list[Milestone], list[ProgressHighlight]]:
    """Stores newly reached milestones (once, with one highlight each); returns all of the patient's
    milestones and the new highlights."""
    new_highlights = _store_new_milestones([_compute(patient)])
    return list(Milestone.objects.filter(patient=patient).order_by("achieved_at", "pk")), new_highlights


def generate_progress_insights(patient: Patient) -> list[Recommendation]:
    """Refreshes the patient's recommendations and returns those that apply and were not dismissed."""
    _refresh_recommendations([_compute(patient)])
    return list(
        Recommendation.objects.filter(patient=patient, dismissed=False, expires_at__isnull=True).order_by(
            "priority", "type"
        )
    )


def get_visualization_data(patient: Patient, *, days: int = 14) -> dict:
    """ProgressVizSeries for the `days` patient-local days ending today."""
    analytics.check_viz_days(days)  # before the queries
    today, sessions, markers = selectors.activity_by_day(patient, days)
    return analytics.visualization_series(today, patient.tz_name, days, sessions, markers)


# ----- recompute --------------------------------------------------------------------------------------


def patients_recompute(patient_ids, *, stop_on: tuple = ()) -> int:
    """Recomputes and stores everything for these patients, in one transaction and a fixed number of
    queries for the whole group. Idempotent; safe to run concurrently (the patients' rows are locked, in
    id order, so runs for the same patient queue). When the group fails, each patient is recomputed on
    its own, in its own transaction: a patient that fails is logged by id, marked with its error's class
    and a retry time (`_record_failure`), and the others are stored. `stop_on` names exceptions that are
    nobody's fault (a task's soft time limit): they are raised. Returns how many patients exist and were
    recomputed."""
    ids = sorted(set(patient_ids))
    if not ids:
        return 0
    try:
        return _recompute_together(ids)
    except stop_on:
        raise
    except Exception as error:
        if len(ids) == 1:
            _record_failure(ids[0], error)
            return 0
        logger.warning(
            "analytics group recompute of %s patients failed (%s): recomputing each on its own",
            len(ids),
            type(error).__name__,
        )
    done = 0
    for patient_id in ids:
        try:
            done += _recompute_together([patient_id])
        except stop_on:
            raise
        except Exception as error:
            _record_failure(patient_id, error)
    return done


def patient_recompute(patient_id: int, *, stop_on: tuple = ()) -> bool:
    """Recomputes one patient (what the Celery task calls). False when the patient no longer exists, or
    its recompute failed (then recorded on the patient, as in a group)."""
    return patients_recompute([patient_id], stop_on=stop_on) == 1


ANALYTICS_RETRY_FIRST_SECONDS = 60
ANALYTICS_RETRY_MAX_SECONDS = 3600


def analytics_retry_seconds(failures: int) -> int:
    """After the 1st failure 1 min, then 2, 4 … capped at 1 hour."""
    return min(ANALYTICS_RETRY_MAX_SECONDS, ANALYTICS_RETRY_FIRST_SECONDS * 2 ** min(max(0, failures - 1), 16))


def _recompute_together(ids: list[int]) -> int:
    """The group recompute proper: one transaction; any failure rolls all of it back and is raised."""
    with transaction.atomic():
        patients = list(
            Patient.objects.select_for_update(of=("self",)).select_related("clinic").filter(pk__in=ids).order_by("pk")
        )
        if not patients:
            return 0
        # Stamped with the start time: data that arrives while we compute leaves the patient stale.
        started = timezone.now()
        computations = _compute_many(patients)
        _store_summaries(computations)
        _store_new_milestones(computations)
        _refresh_recommendations(computations)
        _raise_disengagement_alerts(computations)
        stored = [p.pk for p in patients]
        Patient.objects.filter(pk__in=stored).update(
            analytics_computed_at=started, analytics_failures=0, analytics_error="", analytics_retry_at=None
        )
        transaction.on_commit(lambda: live.bump(patient_ids=stored))
    return len(patients)


def _record_failure(patient_id: int, error: Exception) -> None:
    """In a small transaction of its own: one more failure of this patient's recompute, its error's class
    (never the message, which could quote patient data) and when the reconciler may try again."""
    name = type(error).__name__[:100]
    try:
        with transaction.atomic():
            failures = (
                Patient.objects.select_for_update(of=("self",))
                .filter(pk=patient_id)
                .values_list("analytics_failures", flat=True)
                .first()
            )
            if failures is None:
                return  # removed meanwhile
            delay = analytics_retry_seconds(failures + 1)
            Patient.objects.filter(pk=patient_id).update(
                analytics_failures=failures + 1,
                analytics_error=name,
                analytics_retry_at=timezone.now() + timedelta(seconds=delay),
            )
    except Exception as record_error:  # the database refuses even this: log it, the sweep goes on
        logger.warning(
            "analytics recompute failed patient_id=%s error=%s (not recorded: %s)",
            patient_id,
            name,
            type(record_error).__name__,
        )
        return
    logger.warning(
        "analytics recompute failed patient_id=%s error=%s failures=%s retry_in=%ss",
        patient_id,
        name,
        failures + 1,
        delay,
    )


# ----- reads --------------------------------------------------------------------------------------


def is_fresh(patient: Patient) -> bool:
    computed, changed = patient.analytics_computed_at, patient.data_changed_at
    return computed is not None and (changed is None or changed <= computed)


def _read_model(patient: Patient, today: date) -> dict:
    summary = ProgressSummary.objects.filter(patient=patient).first()
    if summary is None or summary.local_date != today or not is_fresh(patient):
        # Never computed, computed for an earlier day, or changed since: compute now rather than show
        # a stale number (the Celery task will usually have done this already).
        patient_recompute(patient.pk)
        summary = ProgressSummary.objects.get(patient=patient)
    data = summary.data
    return {
        "progress": {
            **data,
            "computed_at": summary.computed_at.isoformat(),
            "recent_sessions": selectors.recent_sessions(patient, RECENT_SESSIONS),
        },
        "milestones": {
            "milestones": selectors.milestones_of(patient),
            "in_progress": data["milestones_in_progress"],
            "highlights": selectors.highlights_of(patient),
        },
        "insights": {"recommendations": selectors.active_recommendations_of(patient)},
    }


def _read_key(patient: Patient, today: date) -> str | None:
    if not is_fresh(patient):
        return None
    return f"progress-read:{patient.pk}:{patient.analytics_computed_at.timestamp()}:{today}"


def forget_read_model(patient: Patient) -> None:
    key = _read_key(patient, selectors.local_today(patient.tz_name))
    if key is not None:
        cache.delete(key)


def patient_read_model(patient: Patient) -> dict:
    """The `progress`, `milestones` and `insights` read models, from Redis when the stored analytics are
    current (the key names the computation, so a recompute makes a new key and nothing is invalidated)."""
    today = selectors.local_today(patient.tz_name)
    key = _read_key(patient, today)
    if key is not None:
        cached = cache.get(key)
        if cached is not None:
            return cached
    model = _read_model(patient, today)
    if key is not None:
        cache.set(key, model, settings.ANALYTICS_CACHE_SECONDS)
    return model


def patient_progress_read(patient: Patient, part: str) -> dict:
    """One of the read models: `progress`, `milestones` or `insights`."""
    return patient_read_model(patient)[part]


def patient_viz_read(patient: Patient, days: int) -> dict:
    today = selectors.local_today(patient.tz_name)
    changed = patient.data_changed_at.timestamp() if patient.data_changed_at else 0
    key = f"viz:{patient.pk}:{changed}:{today}:{days}"
    data = cache.get(key)
    if data is None:
        data = get_visualization_data(patient, days=days)
        cache.set(key, data, settings.ANALYTICS_CACHE_SECONDS)
    return data


def _cards(model: dict) -> dict:
    return {
        "progress": model["progress"],
        "milestones": model["milestones"],
        "dropout": selectors.dropout_cell(model["progress"]["dropout_risk_score"]),
    }


def patient_cards_read(patient: Patient) -> dict:
    """What the summary cards show (from the cached read model)."""
    return _cards(patient_read_model(patient))


def _alerts_and_recommendations(patient: Patient, model: dict) -> dict:
    """The alerts card (open first, most severe then oldest; the 20 latest acknowledged), the risk flag
    and the recommendations with the dismissed ones: what a patient page shows and live updates redraw."""
    from reports import selectors as report_selectors

    alerts = list(report_selectors.alerts_for_patient(patient)[:50])
    open_alerts = [a for a in alerts if a.acknowledged_at is None]
    return {
        "patient": patient,
        "alerts": alerts,
        "open_alerts": open_alerts,
        "done_alerts": [a for a in alerts if a.acknowledged_at is not None][:20],
        "recommendations": model["insights"]["recommendations"],
        "dismissed_recommendations": selectors.dismissed_recommendations_of(patient),
    }


def patient_live_read(patient: Patient) -> dict:
    """What an open patient page redraws when the patient's data or alerts changed."""
    model = patient_read_model(patient)
    return {**_cards(model), **_alerts_and_recommendations(patient, model), "viz": patient_viz_read(patient, 90)}


def patient_page_read(patient: Patient) -> dict:
    """Everything the patient page shows, from the stored analytics and a few bounded reads."""
    from reports import selectors as report_selectors

    model = patient_read_model(patient)
    viz = patient_viz_read(patient, 90)
    series = viz["series"]
    activity_rows = list(
        zip(
            viz["time_buckets"],
            series["sessions"],
            series["duration_minutes"],
            series["skills_acquired"],
            series["markers"],
            strict=True,
        )
    )[::-1]
    return {
        **_cards(model),
        **_alerts_and_recommendations(patient, model),
        "period_choices": (14, 30, 90),
        "activity_rows": activity_rows,
        "viz": viz,
        "markers": selectors.markers_timeline(patient, days=90),
        "outcome_series": report_selectors.patient_outcome_series(patient),
    }
