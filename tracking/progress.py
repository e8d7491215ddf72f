"""The progress-tracking service: the four operations of the specification, by their names.

`compute_progress_summary`, `detect_and_update_milestones` and `generate_progress_insights` compute from
database aggregates (see `selectors.patient_history`) with the pure rules of `analytics` and store the
result; `get_visualization_data` reads a window of daily counts. `patient_recompute` runs the three writes
for one patient, serialised per patient by a row lock, and is what the Celery task calls.
"""

import logging
from dataclasses import dataclass
from datetime import date

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from tracking import analytics, live, selectors
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


def _compute(patient: Patient, today: date | None = None) -> Computation:
    rules = selectors.milestone_rules_for(patient.clinic)
    history = selectors.patient_history(patient, rules, today)
    return Computation(patient, rules, history, analytics.compute_summary(history, rules))


def compute_progress_summary(
    patient: Patient, *, summaries_limit: int = RECENT_SESSIONS, computation: Computation | None = None
) -> dict:
    """Computes the summary and stores it as the patient's snapshot; returns the stored data, with the
    `summaries_limit` most recent sessions."""
    c = computation or _compute(patient)
    data = c.summary.to_dict()
    m = c.summary.metrics
    ProgressSummary.objects.update_or_create(
        patient=patient,
        defaults={
            "computed_at": timezone.now(),
            "local_date": c.history.today,
            "data": data,
            "current_streak_days": m.current_streak_days,
            "sessions_this_week": m.sessions_this_week,
            "dropout_risk_score": c.summary.dropout_risk.value,
            "last_active_day": m.last_active_day,
            "progress_trend": c.summary.progress_trend,
            "engagement_trend": c.summary.engagement_trend,
        },
    )
    return {**data, "recent_sessions": selectors.recent_sessions(patient, summaries_limit)}


def detect_and_update_milestones(
    patient: Patient, *, computation: Computation | None = None
) -> tuple[list[Milestone], list[ProgressHighlight]]:
    """Stores each newly reached milestone once, with one highlight, and queues the celebration hooks
    (signal and webhook) for after commit. Returns all milestones and the new highlights."""
    c = computation or _compute(patient)
    stored = {(m.family, m.threshold): m for m in Milestone.objects.filter(patient=patient)}
    new_highlights = []
    for achieved in analytics.detect_milestones(c.history, c.rules):
        rule = achieved.rule
        if (rule.family, rule.threshold) in stored:
            continue
        milestone = Milestone.objects.create(
            patient=patient,
            family=rule.family,
            threshold=rule.threshold,
            title=rule.title,
            description=rule.description,
            achieved_at=achieved.achieved_at,
        )
        draft = analytics.highlight_for_milestone(achieved)
        highlight = ProgressHighlight.objects.create(
            patient=patient,
            milestone=milestone,
            type=draft.type,
            title=draft.title,
            description=draft.description,
            achieved_at=draft.achieved_at,
            therapeutic_value=draft.therapeutic_value,
        )
        stored[(rule.family, rule.threshold)] = milestone
        new_highlights.append(highlight)
        _queue_celebration(patient, milestone, highlight)
    return sorted(stored.values(), key=lambda m: (m.achieved_at, m.pk)), new_highlights


def _queue_celebration(patient: Patient, milestone: Milestone, highlight: ProgressHighlight) -> None:
    from tracking import webhooks

    delivery = None
    if patient.clinic.webhook_url:
        delivery = WebhookDelivery.objects.create(
            clinic=patient.clinic,
            highlight=highlight,
            payload=webhooks.milestone_payload(patient, milestone, highlight),
        )

    def after_commit():
        milestone_achieved.send(sender=Milestone, milestone=milestone, highlight=highlight)
        if delivery is not None:
            webhooks.enqueue_delivery(delivery.pk)

    transaction.on_commit(after_commit)


def generate_progress_insights(patient: Patient, *, computation: Computation | None = None) -> list[Recommendation]:
    """Refreshes the patient's recommendations: new ones are created, current ones updated (a dismissed
    one stays dismissed), and those whose condition no longer holds expire. Returns the active ones."""
    c = computation or _compute(patient)
    now = timezone.now()
    drafts = {d.type: d for d in analytics.recommendations(c.summary, c.history)}
    existing = {r.type: r for r in Recommendation.objects.filter(patient=patient)}
    for kind, draft in drafts.items():
        fields = {
            "title": draft.title,
            "description": draft.description,
            "priority": draft.priority,
            "reasoning": draft.reasoning,
        }
        rec = existing.get(kind)
        if rec is None:
            existing[kind] = Recommendation.objects.create(patient=patient, type=kind, **fields)
            continue
        if rec.expires_at is not None:  # it had lapsed and now applies again: a fresh recommendation
            fields.update(expires_at=None, dismissed=False, dismissed_at=None, dismissed_by=None)
        if any(getattr(rec, f) != v for f, v in fields.items()):
            for f, v in fields.items():
                setattr(rec, f, v)
            rec.save()
    for kind, rec in existing.items():
        if kind not in drafts and rec.expires_at is None:
            rec.expires_at = now
            rec.save(update_fields=["expires_at", "updated_at"])
    return sorted(
        (r for r in existing.values() if r.expires_at is None and not r.dismissed), key=lambda r: (r.priority, r.type)
    )


def get_visualization_data(patient: Patient, *, days: int = 14) -> dict:
    """ProgressVizSeries for the `days` patient-local days ending today."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= analytics.VIZ_MAX_DAYS:
        raise ValueError(f"days must be a whole number from 1 to {analytics.VIZ_MAX_DAYS}, got {days!r}.")
    today, sessions, markers = selectors.activity_by_day(patient, days)
    return analytics.visualization_series(today, patient.tz_name, days, sessions, markers)


def patient_recompute(patient_id: int) -> bool:
    """Recomputes and stores everything for one patient. Idempotent; safe to run concurrently (a row lock
    serialises runs for the same patient). Returns False when the patient no longer exists."""
    with transaction.atomic():
        patient = Patient.objects.select_for_update(of=("self",)).select_related("clinic").filter(pk=patient_id).first()
        if patient is None:
            return False
        # Stamped with the start time: data that arrives while we compute leaves the patient stale.
        started = timezone.now()
        computation = _compute(patient)
        compute_progress_summary(patient, computation=computation)
        detect_and_update_milestones(patient, computation=computation)
        generate_progress_insights(patient, computation=computation)
        Patient.objects.filter(pk=patient.pk).update(analytics_computed_at=started)
        transaction.on_commit(lambda: live.bump(patient_ids=[patient_id]))
    logger.debug("analytics recomputed patient_id=%s", patient_id)
    return True


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


def patient_progress_read(patient: Patient, part: str) -> dict:
    """The `progress`, `milestones` or `insights` read model, from Redis when the stored analytics are
    current (the key names the computation, so a recompute makes a new key and nothing is invalidated)."""
    today = selectors.local_today(patient.tz_name)
    key = _read_key(patient, today)
    if key is not None:
        cached = cache.get(key)
        if cached is not None:
            return cached[part]
    model = _read_model(patient, today)
    if key is not None:
        cache.set(key, model, settings.ANALYTICS_CACHE_SECONDS)
    return model[part]


def patient_viz_read(patient: Patient, days: int) -> dict:
    today = selectors.local_today(patient.tz_name)
    changed = patient.data_changed_at.timestamp() if patient.data_changed_at else 0
    key = f"viz:{patient.pk}:{changed}:{today}:{days}"
    data = cache.get(key)
    if data is None:
        data = get_visualization_data(patient, days=days)
        cache.set(key, data, settings.ANALYTICS_CACHE_SECONDS)
    return data


def patient_page_read(patient: Patient) -> dict:
    """Everything the patient page shows, from the stored analytics and a few bounded reads."""
    from reports import selectors as report_selectors

    summary = patient_progress_read(patient, "progress")
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
        "patient": patient,
        "progress": summary,
        "dropout": selectors.dropout_cell(summary["dropout_risk_score"]),
        "period_choices": (14, 30, 90),
        "activity_rows": activity_rows,
        "milestones": patient_progress_read(patient, "milestones"),
        "recommendations": patient_progress_read(patient, "insights")["recommendations"],
        "viz": viz,
        "markers": selectors.markers_timeline(patient, days=90),
        "alerts": list(report_selectors.alerts_for_patient(patient)[:20]),
        "outcome_series": report_selectors.patient_outcome_series(patient),
    }
