"""The analytics recompute (DESIGN §4): the four operations of the specification, by their names, and
the group recompute that stores them.

`compute_progress_summary`, `detect_and_update_milestones` and `generate_progress_insights` compute from
database aggregates (`tracking.history.patient_histories`) with the pure rules of `tracking.analytics`
and store the result; `get_visualization_data` reads a window of daily counts. `patients_recompute` runs
the three writes for a group of patients in a fixed number of queries (the Celery task calls it for one
patient, the reconciler and `recompute_analytics` for many). What happened is announced after commit
with signals: analytics recomputed, milestones achieved, webhooks queued, alerts raised.
"""

import gc
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from reports import alerts, expected_recovery
from tracking import analytics, history, metrics, selectors, webhooks
from tracking.fields import encrypted_columns
from tracking.models import (
    Clinic,
    Milestone,
    Patient,
    ProgressHighlight,
    ProgressSummary,
    Recommendation,
    WebhookDelivery,
)
from tracking.signals import (
    alerts_changed,
    analytics_recomputed,
    data_changed,
    milestone_achieved,
    send_on_commit,
    webhooks_queued,
)

logger = logging.getLogger(__name__)

RECENT_SESSIONS = 30  # the specification's summaries_limit default


@dataclass(frozen=True)
class Computation:
    """One patient's history and summary, computed once and shared by the operations of a recompute."""

    patient: Patient
    rules: tuple[analytics.MilestoneRule, ...]
    history: analytics.PatientHistory
    summary: analytics.ProgressSummaryData
    # (family, threshold) → achieved_at, as stored before this computation
    stored_milestones: dict[tuple[str, int], datetime]


def _compute_many(patients: list[Patient]) -> list[Computation]:
    stored = history.stored_milestones([p.pk for p in patients])
    rules = history.milestone_rules_by_clinic(patients)  # once per clinic of the group
    histories = history.patient_histories(patients, stored, rules=rules)
    computations = []
    for patient in patients:
        patient_rules = rules[patient.clinic_id]
        patient_history = histories[patient.pk]
        summary = analytics.compute_summary(patient_history, patient_rules)
        computations.append(Computation(patient, patient_rules, patient_history, summary, stored[patient.pk]))
    return computations


def _compute(patient: Patient) -> Computation:
    return _compute_many([patient])[0]


# ----- the three writes, each for many patients at once ---------------------------------------------

SUMMARY_COLUMNS = ("computed_at", *history.SUMMARY_COMPARED)


def _summary_values(c: Computation) -> dict[str, Any]:
    """The stored columns of a computation's summary, apart from `computed_at`."""
    m = c.summary.metrics
    return {
        "local_date": c.history.today,
        "data": c.summary.to_dict(),
        "current_streak_days": m.current_streak_days,
        "sessions_this_week": m.sessions_this_week,
        "dropout_risk_score": c.summary.dropout_risk.value,
        "last_active_day": m.last_active_day,
        "progress_trend": c.summary.progress_trend,
        "engagement_trend": c.summary.engagement_trend,
    }


def _store_summaries(computations: list[Computation]) -> int:
    """Stores each summary that is new or differs from the stored one (one query reads the stored rows,
    one writes the changed ones); an unchanged summary is not rewritten, so it keeps its `computed_at`
    (the patient's `analytics_computed_at` still says when it was last recomputed). Returns how many
    were written."""
    stored = history.stored_summaries(c.patient.pk for c in computations)
    now = timezone.now()
    rows = []
    for c in computations:
        values = _summary_values(c)
        if stored.get(c.patient.pk) == tuple(values[column] for column in history.SUMMARY_COMPARED):
            continue
        rows.append(ProgressSummary(patient=c.patient, computed_at=now, **values))
    if rows:
        ProgressSummary.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["patient"], update_fields=list(SUMMARY_COLUMNS)
        )
    return len(rows)


def _store_new_milestones(computations: list[Computation]) -> list[ProgressHighlight]:
    """Stores each newly reached milestone once, with one highlight (and a webhook in the outbox when the
    clinic has one); the celebration hooks fire after commit."""
    pending = []
    for c in computations:
        for achieved in c.summary.milestones_achieved:  # what compute_summary detected, not detected again
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
                payload=webhooks.milestone_payload(h.patient, milestone, h),
            )
            for h, milestone in zip(highlights, milestones, strict=True)
            if h.patient.clinic.webhook_url
        ]
    )
    transaction.on_commit(lambda: _celebrate(highlights))
    if deliveries:
        send_on_commit(webhooks_queued, delivery_ids=[d.pk for d in deliveries])
    return highlights


def _celebrate(highlights: list[ProgressHighlight]) -> None:
    for highlight in highlights:
        milestone_achieved.send(sender=Milestone, milestone=highlight.milestone, highlight=highlight)


def _refresh_recommendations(computations: list[Computation]) -> None:
    """New recommendations are created, current ones updated (a dismissed one stays dismissed), and those
    whose condition no longer holds expire; one that applies again after it expired starts afresh."""
    now = timezone.now()
    existing: dict[int, dict[str, Recommendation]] = defaultdict(dict)  # patient → type → recommendation
    for r in Recommendation.objects.filter(patient__in=[c.patient for c in computations]):
        existing[r.patient_id][r.type] = r
    to_create, to_update = [], []
    for c in computations:
        stored = existing[c.patient.pk]
        drafts = {d.type: d for d in analytics.recommendations(c.summary, c.history)}
        for kind, draft in drafts.items():
            fields = {
                "title": draft.title,
                "description": draft.description,
                "priority": draft.priority,
                "reasoning": draft.reasoning,
            }
            rec = stored.get(kind)
            if rec is None:
                to_create.append(Recommendation(patient=c.patient, type=kind, **fields))
                continue
            if rec.expires_at is not None:
                fields.update(expires_at=None, dismissed=False, dismissed_at=None, dismissed_by=None)
            if any(getattr(rec, f) != v for f, v in fields.items()):
                for f, v in fields.items():
                    setattr(rec, f, v)
                to_update.append(rec)
        for kind, rec in stored.items():
            if kind not in drafts and rec.expires_at is None:
                rec.expires_at = now
                to_update.append(rec)
    for rec in to_update:
        rec.updated_at = now
    # INSERT … ON CONFLICT (patient, type) DO UPDATE, for the new and the changed: Django's bulk_update
    # builds a CASE of every row for every field, which took a quarter of a drain's CPU.
    Recommendation.objects.bulk_create(
        to_create + to_update,
        update_conflicts=True,
        unique_fields=["patient", "type"],
        update_fields=RECOMMENDATION_FIELDS,
    )


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
    disengaged = {
        c.patient.pk: (c.history.active_days[-1].day, c.history.active_days[-1].first_started_at)
        for c in computations
        if analytics.is_disengaged(c.summary.metrics, len(c.history.active_days))
    }
    raised = alerts.disengagement_alerts(
        disengaged=disengaged, patients={c.patient.pk: c.patient for c in computations}
    )
    if raised:
        clinic_ids = sorted({a.clinic_id for a in raised})
        send_on_commit(alerts_changed, clinic_ids=clinic_ids, raised=[a.pk for a in raised])


# ----- the specification's four operations ----------------------------------------------------------


def compute_progress_summary(patient: Patient, *, summaries_limit: int = RECENT_SESSIONS) -> dict[str, Any]:
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


def get_visualization_data(patient: Patient, *, days: int = 14) -> dict[str, Any]:
    """ProgressVizSeries for the `days` patient-local days ending today."""
    analytics.check_viz_days(days)  # before the queries
    today, sessions, markers = history.activity_by_day(patient, days)
    return analytics.visualization_series(today, patient.tz_name, days, sessions, markers)


# ----- recompute --------------------------------------------------------------------------------------

_collector = threading.Lock()
_collector_pauses = 0  # recomputes running in this process with the cyclic garbage collector paused
_collector_was_enabled = False


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a group recomputes, and resumed after it, even on
    failure. A group allocates about a hundred thousand tuples and datetimes (each patient's days) that
    live until it ends and are freed by reference counting then; meanwhile the collector ran every 700
    allocations and re-scanned them, and the process's whole heap every few groups, to find nothing: a
    fifth to a quarter of a group's time (issue 14). Threads that recompute at once share one pause: the
    collector resumes when the last of them is done, and only if it was running before the first."""
    global _collector_pauses, _collector_was_enabled
    with _collector:
        if _collector_pauses == 0:
            _collector_was_enabled = gc.isenabled()
            gc.disable()
        _collector_pauses += 1
    try:
        yield
    finally:
        with _collector:
            _collector_pauses -= 1
            if _collector_pauses == 0 and _collector_was_enabled:
                gc.enable()


@metrics.RECOMPUTE_SECONDS.time()
def patients_recompute(
    patient_ids: Iterable[int], *, stop_on: tuple[type[BaseException], ...] = (), skip_locked: bool = False
) -> int:
    """Recomputes and stores everything for these patients, in one transaction and a fixed number of
    queries for the whole group. Idempotent; safe to run concurrently (the patients' rows are locked, in
    id order, so runs for the same patient queue). When the group fails, each patient is recomputed on
    its own, in its own transaction: a patient that fails is logged by id, marked with its error's class
    and a retry time (`_record_failure`), and the others are stored. `stop_on` names exceptions that are
    nobody's fault (a task's soft time limit): they are raised. With `skip_locked` (the background
    drains), a patient whose row another transaction holds (an ingest for them, most often) is not waited
    for: it is left stale and queued again when this transaction commits. Returns how many patients exist
    and were recomputed."""
    ids = sorted(set(patient_ids))
    if not ids:
        return 0
    with cyclic_gc_paused():
        return _recompute_with_fallback(ids, stop_on=stop_on, skip_locked=skip_locked)


def _recompute_with_fallback(ids: list[int], *, stop_on: tuple[type[BaseException], ...], skip_locked: bool) -> int:
    try:
        return _recompute_together(ids, skip_locked=skip_locked)
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
            done += _recompute_together([patient_id], skip_locked=skip_locked)
        except stop_on:
            raise
        except Exception as error:
            _record_failure(patient_id, error)
    return done


def patient_recompute(patient_id: int, *, stop_on: tuple[type[BaseException], ...] = ()) -> bool:
    """Recomputes one patient (what the Celery task calls). False when the patient no longer exists, or
    its recompute failed (then recorded on the patient, as in a group)."""
    return patients_recompute([patient_id], stop_on=stop_on) == 1


ANALYTICS_RETRY_FIRST_SECONDS = 60
ANALYTICS_RETRY_MAX_SECONDS = 3600


def analytics_retry_seconds(failures: int) -> int:
    """After the 1st failure 1 min, then 2, 4 … capped at 1 hour."""
    return min(ANALYTICS_RETRY_MAX_SECONDS, ANALYTICS_RETRY_FIRST_SECONDS * 2 ** min(max(0, failures - 1), 16))


# Encrypted columns the recompute never reads (loaded only if something asks for them).
UNUSED_SECRETS = (*encrypted_columns(Patient), *encrypted_columns(Clinic, "clinic__"))


def _recompute_together(ids: list[int], *, skip_locked: bool = False) -> int:
    """The group recompute proper. The histories are read and the rules applied without holding a lock,
    so an ingest for these patients is not kept waiting while the group computes. Then, in one
    transaction with the patients' rows locked (in id order, as ingest locks them), the results are
    stored. A patient that another recompute stored while this one computed (its stamp moved) is
    computed again under the lock, from what is stored now, so two recomputes of one patient cannot both
    store the same new milestone. Stamped with the time its reads began: data that arrives while it is
    computed leaves the patient stale, to be computed again. With `skip_locked`, the rows another
    transaction holds are skipped instead of waited for, and their patients are queued again (the
    `data_changed` signal, after commit): waiting for one ingest's row while holding the rows locked so
    far made every ingest for those patients wait too, which was most of single-item ingest's latency
    under load (issue 14). Any failure rolls the stores back and is raised."""
    started = timezone.now()
    patients = _patients(ids)
    if not patients:
        return 0
    computations = _compute_many(patients)
    with transaction.atomic():
        stamps = dict(
            Patient.objects.select_for_update(skip_locked=skip_locked)
            .filter(pk__in=[p.pk for p in patients])
            .order_by("pk")
            .values_list("pk", "analytics_computed_at")
        )
        if skip_locked and len(stamps) < len(patients):
            send_on_commit(data_changed, patient_ids=[p.pk for p in patients if p.pk not in stamps])
        raced = [p.pk for p in patients if p.pk in stamps and stamps[p.pk] != p.analytics_computed_at]
        computations = [c for c in computations if c.patient.pk in stamps and c.patient.pk not in raced]
        stamped = {c.patient.pk: started for c in computations}
        if raced:
            relocked_at = timezone.now()  # under the lock: no ingest for them can commit meanwhile
            computations += _compute_many(_patients(raced))
            stamped.update(dict.fromkeys(raced, relocked_at))
        if not computations:
            return 0
        patients = [c.patient for c in computations]
        _store_summaries(computations)
        _store_new_milestones(computations)
        _refresh_recommendations(computations)
        _raise_disengagement_alerts(computations)
        expected_recovery.patients_refresh(patients)  # not on track (DESIGN §8), against the stored references
        for stamp in sorted(set(stamped.values())):
            Patient.objects.filter(pk__in=[pk for pk, at in stamped.items() if at == stamp]).update(
                analytics_computed_at=stamp, analytics_failures=0, analytics_error="", analytics_retry_at=None
            )
        send_on_commit(analytics_recomputed, patient_ids=sorted(stamped))
    return len(patients)


def _patients(ids: list[int]) -> list[Patient]:
    return list(
        Patient.objects.select_related("clinic")
        .defer(*UNUSED_SECRETS)  # encrypted, and not needed: decrypting them was a tenth of the group
        .filter(pk__in=ids)
        .order_by("pk")
    )


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
