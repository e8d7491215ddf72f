"""The cached read models of a patient's analytics, and the composites the patient page and its live
updates show (DESIGN §4).

The `progress`, `milestones` and `insights` read models come from the stored summary, cached in Redis
under a key that names the computation (`tracking.read_cache`), so a recompute makes a new key and
nothing needs invalidating. A read of a patient whose stored analytics are stale (never computed, for an
earlier local day, or changed since) recomputes them first, inline: the functions that may do so say
`or_recompute` in their name.
"""

from django.conf import settings
from django.core.cache import cache

from reports import selectors as report_selectors
from tracking import recompute, selectors
from tracking.history import local_today
from tracking.models import Patient, ProgressSummary
from tracking.read_cache import is_fresh, read_model_key

RECENT_SESSIONS = recompute.RECENT_SESSIONS


def _stored_or_recompute(patient: Patient, today) -> ProgressSummary:
    summary = ProgressSummary.objects.filter(patient=patient).first()
    if summary is None or summary.local_date != today or not is_fresh(patient):
        # Never computed, computed for an earlier day, or changed since: compute now rather than show
        # a stale number (the Celery task will usually have done this already).
        recompute.patient_recompute(patient.pk)
        summary = ProgressSummary.objects.get(patient=patient)
        patient.refresh_from_db(fields=["analytics_computed_at"])
    return summary


def _read_model(patient: Patient, today) -> dict:
    summary = _stored_or_recompute(patient, today)
    data = summary.data
    return {
        "progress": {
            **data,
            # The last computation: an unchanged summary is not written again, the patient is stamped.
            "computed_at": max(summary.computed_at, patient.analytics_computed_at or summary.computed_at).isoformat(),
            "recent_sessions": selectors.recent_sessions(patient, RECENT_SESSIONS),
        },
        "milestones": {
            "milestones": selectors.milestones_of(patient),
            "in_progress": data["milestones_in_progress"],
            "highlights": selectors.highlights_of(patient),
        },
        "insights": {"recommendations": selectors.active_recommendations_of(patient)},
    }


def read_model_or_recompute(patient: Patient) -> dict:
    """The `progress`, `milestones` and `insights` read models, from Redis when the stored analytics are
    current; recomputed first when they are stale."""
    today = local_today(patient.tz_name)
    key = read_model_key(patient, today)
    if key is not None:
        cached = cache.get(key)
        if cached is not None:
            return cached
    model = _read_model(patient, today)
    if key is not None:
        cache.set(key, model, settings.ANALYTICS_CACHE_SECONDS)
    return model


def progress_read_or_recompute(patient: Patient, part: str) -> dict:
    """One of the read models: `progress`, `milestones` or `insights`."""
    return read_model_or_recompute(patient)[part]


def patient_viz_read(patient: Patient, days: int) -> dict:
    """ProgressVizSeries of the `days` local days ending today, cached until the patient's data changes."""
    today = local_today(patient.tz_name)
    changed = patient.data_changed_at.timestamp() if patient.data_changed_at else 0
    key = f"viz:{patient.pk}:{changed}:{today}:{days}"
    data = cache.get(key)
    if data is None:
        data = recompute.get_visualization_data(patient, days=days)
        cache.set(key, data, settings.ANALYTICS_CACHE_SECONDS)
    return data


def _cards(model: dict) -> dict:
    return {
        "progress": model["progress"],
        "milestones": model["milestones"],
        "dropout": selectors.dropout_cell(model["progress"]["dropout_risk_score"]),
    }


def _alerts_and_recommendations(patient: Patient, model: dict) -> dict:
    """The alerts card (open first, most severe then oldest; the 20 latest acknowledged), the risk flag
    and the recommendations with the dismissed ones: what a patient page shows and live updates redraw."""
    alerts = list(report_selectors.alerts_for_patient(patient)[:50])
    return {
        "patient": patient,
        "alerts": alerts,
        "open_alerts": [a for a in alerts if a.acknowledged_at is None],
        "done_alerts": [a for a in alerts if a.acknowledged_at is not None][:20],
        "recommendations": model["insights"]["recommendations"],
        "dismissed_recommendations": selectors.dismissed_recommendations_of(patient),
    }


def patient_live_or_recompute(patient: Patient) -> dict:
    """What an open patient page redraws when the patient's data or alerts changed."""
    model = read_model_or_recompute(patient)
    return {**_cards(model), **_alerts_and_recommendations(patient, model), "viz": patient_viz_read(patient, 90)}


def patient_page_or_recompute(patient: Patient) -> dict:
    """Everything the patient page shows, from the stored analytics and a few bounded reads."""
    model = read_model_or_recompute(patient)
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
