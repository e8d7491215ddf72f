"""Retention (DESIGN §7): policies per clinic and category, and the batched removal of what aged out.

Each category names its main rows and the timestamp they age out by (`CATEGORIES`). A run removes them
in batches of at most `BATCH_SIZE` main rows per transaction (keyset by primary key: `DELETE ... WHERE
id IN (SELECT id ... ORDER BY id LIMIT n) RETURNING ...`), so it never holds a lock for long; in the same
transaction it removes the row-history copies of what it removed (django-pghistory's triggers write a
copy of every deleted row: those go too). Patients whose data went are marked stale (`data_changed_at`),
so their analytics are recomputed (at once by the `data_changed` signal, or by the reconciler). An audit
chain loses only a prefix, and its head keeps a checkpoint (the last removed `seq` and `hash`) so that
`verify_audit_log` starts there. One `retention.run` event per clinic records the counts, never contents.
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, models, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from reports.models import Alert, ClinicalNote, ClinicalNoteRevision, MeasureStatus, OutcomeResponse
from tracking import access, audit
from tracking.models import (
    AUDIT_RETENTION_MIN_DAYS,
    AuditAction,
    AuditChainHead,
    AuditEvent,
    BreakGlassGrant,
    CareAssignment,
    Clinic,
    Milestone,
    Patient,
    ProgressHighlight,
    ProgressMarker,
    ProgressSummary,
    Recommendation,
    RetentionCategory,
    RetentionPolicy,
    Role,
    TherapySession,
    WebhookDelivery,
    skipping_row_history,
    validate_retention,
)
from tracking.signals import data_changed, send_on_commit

BATCH_SIZE = 5000  # main rows per transaction (DESIGN §7)
MIN_BATCH = 250  # the smallest a batch shrinks to on a slow database
TARGET_BATCH_SECONDS = 0.3  # a batch that takes longer halves the next one
PATIENT_BATCH = 100  # inactive patients removed together, their rows still in batches of BATCH_SIZE


# Inactive patients last: what the other categories remove never makes a patient inactive (open alerts
# are never removed, only old rows are), so each category's count is the same as the dry run's.
RUN_ORDER = (
    RetentionCategory.ACTIVITY,
    RetentionCategory.OUTCOMES,
    RetentionCategory.ALERTS,
    RetentionCategory.DERIVED,
    RetentionCategory.AUDIT,
    RetentionCategory.INACTIVE_PATIENTS,
)


# ----- policies ------------------------------------------------------------------------------------


def policies_of(clinic: Clinic) -> dict[str, int]:
    return dict(RetentionPolicy.objects.filter(clinic=clinic).values_list("category", "days"))


def _check_category(category: str) -> None:
    if category not in RetentionCategory.values:
        raise ValidationError(
            {"category": f"Unknown category {category!r}; one of: {', '.join(RetentionCategory.values)}."}
        )


@transaction.atomic
def policy_set(*, clinic: Clinic, category: str, days: int, by: Any = None) -> RetentionPolicy:
    """Sets how many days the clinic keeps `category` (validated: at least 1 day; audit at least the
    six-year floor). Audited (`config.change`) with before and after."""
    _check_category(category)
    validate_retention(category, days)
    policy = RetentionPolicy.objects.select_for_update().filter(clinic=clinic, category=category).first()
    before = policy.days if policy else None
    if policy is None:
        policy = RetentionPolicy(clinic=clinic, category=category)
    policy.days = days
    policy.updated_by = by if getattr(by, "is_authenticated", False) else None
    policy.full_clean()
    policy.save()
    if before != days:
        _audit_change(clinic, category, before, days, by)
    return policy


@transaction.atomic
def policy_clear(*, clinic: Clinic, category: str, by: Any = None) -> bool:
    """Removes the clinic's policy for `category` (it is then kept forever). Returns whether there was one."""
    _check_category(category)
    policy = RetentionPolicy.objects.select_for_update().filter(clinic=clinic, category=category).first()
    if policy is None:
        return False
    before = policy.days
    policy.delete()
    _audit_change(clinic, category, before, None, by)
    return True


def _audit_change(clinic: Clinic, category: str, before: int | None, after: int | None, by: Any) -> None:
    audit.audit_here(
        action=AuditAction.CONFIG_CHANGE,
        clinic=clinic,
        user=by,
        object=f"retention:{category}",
        detail={
            "op": "update" if before is not None and after is not None else ("create" if before is None else "delete"),
            "model": "retention_policy",
            "changes": {"days": {"before": before, "after": after}},
        },
    )


# ----- what ages out -------------------------------------------------------------------------------


def _activity(clinic: Clinic, cutoff: datetime) -> models.QuerySet:
    return TherapySession.objects.filter(clinic=clinic, started_at__lt=cutoff)


def _outcomes(clinic: Clinic, cutoff: datetime) -> models.QuerySet:
    return OutcomeResponse.objects.filter(clinic=clinic, administered_at__lt=cutoff)


def _alerts(clinic: Clinic, cutoff: datetime) -> models.QuerySet:
    # acknowledged_at < cutoff excludes NULL: an open alert is never removed.
    return Alert.objects.filter(clinic=clinic, acknowledged_at__isnull=False, acknowledged_at__lt=cutoff)


def _recommendations(clinic: Clinic, cutoff: datetime) -> models.QuerySet:
    return Recommendation.objects.filter(patient__clinic=clinic, created_at__lt=cutoff)


def _highlights(clinic: Clinic, cutoff: datetime) -> models.QuerySet:
    return ProgressHighlight.objects.filter(patient__clinic=clinic, created_at__lt=cutoff)


def _inactive_patients(clinic: Clinic, cutoff: datetime) -> models.QuerySet:
    """Patients with no session, no response and no open alert since the cutoff (and known before it)."""
    recent_session = TherapySession.objects.filter(patient=OuterRef("pk"), started_at__gte=cutoff)
    recent_response = OutcomeResponse.objects.filter(patient=OuterRef("pk"), administered_at__gte=cutoff)
    open_alert = Alert.objects.filter(patient=OuterRef("pk"), acknowledged_at__isnull=True)
    return Patient.objects.filter(clinic=clinic, created_at__lt=cutoff).filter(
        ~Exists(recent_session), ~Exists(recent_response), ~Exists(open_alert)
    )


def _audit_prefix_end(clinic: Clinic, cutoff: datetime) -> tuple[int, int]:
    """(checkpoint seq, last seq to remove) of the clinic's chain: the prefix of events all older than
    the cutoff. Nothing to remove when the two are equal."""
    chain = audit.clinic_slug(clinic)
    head = AuditChainHead.objects.filter(chain=chain).first()
    if head is None:
        return 0, 0
    first_kept = AuditEvent.objects.filter(chain=chain, at__gte=cutoff).order_by("seq").values_list("seq", flat=True)
    kept = first_kept.first()
    last_removed = (kept - 1) if kept is not None else head.seq
    return head.checkpoint_seq, max(head.checkpoint_seq, last_removed)


# ----- counting (the dry run and the console's preview) -------------------------------------------


def cutoff_for(days: int, now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(days=days)


def count_expired(clinic: Clinic, category: str, days: int, now: datetime | None = None) -> int:
    """How many main rows of `category` a run now would remove (sessions for activity, patients for
    inactive_patients, recommendations + highlights for derived)."""
    cutoff = cutoff_for(days, now)
    if category == RetentionCategory.ACTIVITY:
        return _activity(clinic, cutoff).count()
    if category == RetentionCategory.OUTCOMES:
        return _outcomes(clinic, cutoff).count()
    if category == RetentionCategory.ALERTS:
        return _alerts(clinic, cutoff).count()
    if category == RetentionCategory.DERIVED:
        return _recommendations(clinic, cutoff).count() + _highlights(clinic, cutoff).count()
    if category == RetentionCategory.INACTIVE_PATIENTS:
        return _inactive_patients(clinic, cutoff).count()
    if category == RetentionCategory.AUDIT:
        if days < AUDIT_RETENTION_MIN_DAYS:
            return 0
        start, end = _audit_prefix_end(clinic, cutoff)
        return AuditEvent.objects.filter(chain=audit.clinic_slug(clinic), seq__gt=start, seq__lte=end).count()
    raise ValidationError({"category": f"Unknown category {category!r}."})


def preview(clinic: Clinic, now: datetime | None = None) -> dict[str, int]:
    """category → rows tonight's run would remove, for each category with a policy."""
    return {
        category: count_expired(clinic, category, days, now)
        for category, days in sorted(policies_of(clinic).items())
        if category != RetentionCategory.AUDIT or days >= AUDIT_RETENTION_MIN_DAYS
    }


# ----- removing ------------------------------------------------------------------------------------


def _history_model(model: type[models.Model]) -> type[models.Model] | None:
    """The pghistory event model that keeps copies of `model`'s rows, if any."""
    for related in model._meta.related_objects:
        candidate = related.related_model
        if related.field.name == "pgh_obj" and isinstance(candidate, type):
            return candidate
    return None


def _delete_batch(queryset: models.QuerySet, limit: int = BATCH_SIZE) -> list[tuple[int, int | None]]:
    """Deletes up to `limit` rows of `queryset` (smallest primary keys first) and the row-history copies
    of them, in the caller's transaction. Returns (pk, patient_id) of what went."""
    model = queryset.model
    table = connection.ops.quote_name(model._meta.db_table)
    pk = connection.ops.quote_name(model._meta.pk.column)
    has_patient = any(f.attname == "patient_id" for f in model._meta.concrete_fields)
    patient_col = connection.ops.quote_name("patient_id") if has_patient else "NULL"
    subquery, params = queryset.order_by("pk").values("pk")[:limit].query.sql_with_params()
    # The copies of deleted rows would only be removed again below: skipping them is 15 times faster.
    with skipping_row_history([model], events=("delete",)), connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE {pk} IN ({subquery}) RETURNING {pk}, {patient_col}",  # noqa: S608 (names from the model)
            params,
        )
        rows = [(int(r[0]), r[1]) for r in cursor.fetchall()]
    history = _history_model(model)
    if history is not None and rows:
        # The copies of earlier updates. One statement (no ORM collector): nothing references them.
        history.objects.filter(pgh_obj_id__in=[r[0] for r in rows])._raw_delete(connection.alias)
    return rows


# How long each batch's transaction took (seconds), for the benchmark and the logs: a bound on how
# long a run holds any row lock.
BATCH_SECONDS: list[float] = []


def _drain(
    queryset_for: Callable[[], models.QuerySet],
    touched: set[int],
    before_delete: Callable[[models.QuerySet], None] | None = None,
) -> int:
    """Deletes every row of the queryset in batches, one transaction each, keyset by primary key (each
    batch starts after the last one's largest key, so it never rescans what went). A batch is at most
    BATCH_SIZE rows, and smaller while batches take longer than TARGET_BATCH_SECONDS (a busy database):
    no lock is held for long. Returns how many rows went."""
    removed, after, limit = 0, 0, BATCH_SIZE
    while True:
        started = time.monotonic()
        with transaction.atomic():
            queryset = queryset_for().filter(pk__gt=after)
            if before_delete is not None:
                before_delete(queryset)
            rows = _delete_batch(queryset, limit=limit)
        took = time.monotonic() - started
        BATCH_SECONDS.append(took)
        removed += len(rows)
        touched.update(pid for _, pid in rows if pid is not None)
        if len(rows) < limit:
            return removed
        after = max(pk for pk, _ in rows)
        if took > TARGET_BATCH_SECONDS:
            limit = max(min(MIN_BATCH, BATCH_SIZE), limit // 2)
        elif took < TARGET_BATCH_SECONDS / 3:
            limit = min(BATCH_SIZE, limit * 2)


def _unlink_alerts(responses: models.QuerySet) -> None:
    """An alert raised by a response outlives it: its link is cleared (the FK is not ON DELETE in SQL)."""
    batch = responses.order_by("pk").values("pk")[:BATCH_SIZE]
    Alert.objects.filter(source_response__in=batch).update(source_response=None)


def _drop_deliveries(highlights: models.QuerySet) -> None:
    """A highlight's webhook deliveries go with it."""
    WebhookDelivery.objects.filter(highlight__in=highlights.order_by("pk").values("pk")[:BATCH_SIZE]).delete()


def _remove_activity(clinic: Clinic, cutoff: datetime, touched: set[int]) -> int:
    # The markers of expired sessions first, in their own batches, then the sessions.
    _drain(lambda: ProgressMarker.objects.filter(clinic=clinic, session__started_at__lt=cutoff), touched)
    return _drain(lambda: _activity(clinic, cutoff), touched)


def _remove_audit_prefix(clinic: Clinic, cutoff: datetime) -> int:
    chain = audit.clinic_slug(clinic)
    removed = 0
    while True:
        started = time.monotonic()
        with transaction.atomic():
            # Locks the chain's head for one batch only: appends to this chain wait at most that long.
            head = AuditChainHead.objects.select_for_update().filter(chain=chain).first()
            if head is None:
                return removed
            start, end = _audit_prefix_end(clinic, cutoff)
            stop = min(end, start + BATCH_SIZE)
            if stop <= start:
                return removed
            last_hash = AuditEvent.objects.filter(chain=chain, seq=stop).values_list("hash", flat=True).first()
            if last_hash is None:  # a gap: verification will name it; retention removes nothing past it
                return removed
            deleted = AuditEvent.objects.filter(chain=chain, seq__gt=start, seq__lte=stop)._raw_delete(connection.alias)
            AuditChainHead.objects.filter(chain=chain).update(checkpoint_seq=stop, checkpoint_hash=last_hash)
        BATCH_SECONDS.append(time.monotonic() - started)
        removed += deleted


_PATIENT_DATA: tuple[tuple[type[models.Model], str], ...] = (
    # child rows of a patient, in an order the foreign keys allow
    (ProgressMarker, "patient_id"),
    (TherapySession, "patient_id"),
    (Alert, "patient_id"),
    (OutcomeResponse, "patient_id"),
    (MeasureStatus, "patient_id"),
    (ClinicalNoteRevision, "note__patient_id"),
    (ClinicalNote, "patient_id"),
    (WebhookDelivery, "highlight__patient_id"),
    (ProgressHighlight, "patient_id"),
    (Milestone, "patient_id"),
    (Recommendation, "patient_id"),
    (ProgressSummary, "patient_id"),
    (CareAssignment, "patient_id"),
    (BreakGlassGrant, "patient_id"),
)


def _remove_inactive_patients(clinic: Clinic, cutoff: datetime) -> int:
    removed = 0
    while True:
        ids = list(_inactive_patients(clinic, cutoff).order_by("pk").values_list("pk", flat=True)[:PATIENT_BATCH])
        if not ids:
            return removed
        for model, column in _PATIENT_DATA:
            _drain(lambda m=model, c=column, i=ids: m.objects.filter(**{f"{c}__in": i}), set())
        with transaction.atomic():
            # Still inactive now (ingest may have sent something meanwhile)? Then their last rows and them.
            locked = list(Patient.objects.select_for_update().filter(pk__in=ids).values_list("pk", flat=True))
            still = list(_inactive_patients(clinic, cutoff).filter(pk__in=locked).values_list("pk", flat=True))
            for model, column in _PATIENT_DATA:
                while _delete_batch(model.objects.filter(**{f"{column}__in": still})):
                    pass
            removed += len(_delete_batch(Patient.objects.filter(pk__in=still), limit=len(still) or 1)) if still else 0
        if len(ids) < PATIENT_BATCH:
            return removed


@dataclass
class ClinicRun:
    clinic: Clinic
    counts: dict[str, int] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    batches: int = 0  # transactions that removed rows
    max_batch_seconds: float = 0.0  # the longest of them: a bound on how long any lock was held


def enforce_clinic(
    clinic: Clinic, *, dry_run: bool = False, now: datetime | None = None, record: bool = True
) -> ClinicRun:
    """Applies every policy of the clinic (or, with `dry_run`, counts what would go and removes nothing).
    An audit policy under the six-year floor is refused (listed in `refused`), the others still run.
    Records one `retention.run` event with the counts per category (unless `record` is false)."""
    now = now or timezone.now()
    run = ClinicRun(clinic=clinic, dry_run=dry_run)
    BATCH_SECONDS.clear()
    touched: set[int] = set()
    policies = policies_of(clinic)
    for category in RUN_ORDER:
        if category not in policies:
            continue
        days = policies[category]
        try:
            validate_retention(category, days)
        except ValidationError as error:
            run.refused[category] = "; ".join(error.message_dict.get("days", error.messages))
            continue
        cutoff = cutoff_for(days, now)
        if dry_run:
            run.counts[category] = count_expired(clinic, category, days, now)
        elif category == RetentionCategory.ACTIVITY:
            run.counts[category] = _remove_activity(clinic, cutoff, touched)
        elif category == RetentionCategory.OUTCOMES:
            run.counts[category] = _drain(lambda c=cutoff: _outcomes(clinic, c), touched, before_delete=_unlink_alerts)
        elif category == RetentionCategory.ALERTS:
            run.counts[category] = _drain(lambda c=cutoff: _alerts(clinic, c), touched)
        elif category == RetentionCategory.DERIVED:
            run.counts[category] = _drain(lambda c=cutoff: _recommendations(clinic, c), touched) + _drain(
                lambda c=cutoff: _highlights(clinic, c), touched, before_delete=_drop_deliveries
            )
        elif category == RetentionCategory.INACTIVE_PATIENTS:
            run.counts[category] = _remove_inactive_patients(clinic, cutoff)
        elif category == RetentionCategory.AUDIT:
            run.counts[category] = _remove_audit_prefix(clinic, cutoff)
    run.batches, run.max_batch_seconds = len(BATCH_SECONDS), max(BATCH_SECONDS, default=0.0)
    with transaction.atomic():
        alive = list(Patient.objects.filter(pk__in=touched).values_list("pk", flat=True))
        if alive:
            # Their analytics are recomputed: at once through the signal, or by the reconciler.
            Patient.objects.filter(pk__in=alive).update(data_changed_at=timezone.now())
            send_on_commit(data_changed, patient_ids=sorted(alive))
        if record and (run.counts or run.refused):
            detail: dict[str, Any] = {"counts": run.counts, "dry_run": dry_run}
            if run.refused:
                detail["refused"] = sorted(run.refused)
            audit.audit_here(action=AuditAction.RETENTION_RUN, clinic=clinic, actor=audit.SYSTEM_ACTOR, detail=detail)
    return run


def clinics_with_policies(slugs: Iterable[str] | None = None) -> list[Clinic]:
    clinics = Clinic.objects.filter(Q(retention_policies__isnull=False)).distinct().order_by("slug")
    if slugs is not None:
        clinics = clinics.filter(slug__in=list(slugs))
    return list(clinics)


def enforce_all(*, dry_run: bool = False, now: datetime | None = None) -> list[ClinicRun]:
    """Every clinic with a policy (what the nightly task runs)."""
    return [enforce_clinic(clinic, dry_run=dry_run, now=now) for clinic in clinics_with_policies()]


# ----- the console ---------------------------------------------------------------------------------


def admin_clinics(user: Any) -> list[Clinic]:
    return list(access.clinics_with_role(user, Role.CLINIC_ADMIN).order_by("name"))


def admin_clinic(user: Any, slug: str | None) -> Clinic | None:
    """The clinic `slug` if the user is its admin (their first clinic without a slug), else None."""
    clinics = admin_clinics(user)
    if slug is None:
        return clinics[0] if clinics else None
    return next((c for c in clinics if c.slug == slug), None)


# What a category's count counts (its main rows), as the console says it: (one, many).
UNITS = {
    RetentionCategory.ACTIVITY: ("session (with its markers)", "sessions (with their markers)"),
    RetentionCategory.OUTCOMES: ("questionnaire response", "questionnaire responses"),
    RetentionCategory.ALERTS: ("acknowledged alert", "acknowledged alerts"),
    RetentionCategory.DERIVED: ("recommendation or highlight", "recommendations and highlights"),
    RetentionCategory.INACTIVE_PATIENTS: ("patient, with all their data", "patients, with all their data"),
    RetentionCategory.AUDIT: ("audit event", "audit events"),
}


def console_rows(clinic: Clinic, now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per category: its label, the policy's days (None: kept forever) and the preview count."""
    policies = policies_of(clinic)
    rows = []
    for category, label in RetentionCategory.choices:
        days = policies.get(category)
        rows.append(
            {
                "category": category,
                "label": label,
                "days": days,
                "preview": count_expired(clinic, category, days, now) if days is not None else None,
                "minimum": AUDIT_RETENTION_MIN_DAYS if category == RetentionCategory.AUDIT else 1,
                "unit": UNITS[category],
            }
        )
    return rows
