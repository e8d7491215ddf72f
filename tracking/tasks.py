"""Celery tasks: thin, take ids, idempotent (acks_late is on globally, so a task lost with its worker
runs again). Nothing here is the only record of work to do: the database is (patients' data_changed_at
vs analytics_computed_at; pending webhook deliveries), and the periodic tasks find what a lost or
never-sent task left behind.

Every periodic task returns a count and handles each item on its own: one item's failure is recorded on
its row (a patient's `analytics_retry_at`, a delivery's `next_attempt_at`) and logged with its id only,
and the sweep goes on. Only a soft time limit, which is not the item's fault, ends a sweep early."""

import contextlib
import logging
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from progress_site.celery import PendingSet, app, enqueue, enqueue_once
from tracking import audit, history, recompute, webhooks
from tracking.models import Patient, WebhookDelivery

logger = logging.getLogger(__name__)

DEBOUNCE_KEY = "analytics-queued:{}"
GROUP_SIZE = 200  # patients per group recompute
RECONCILE_CLAIM_SECONDS = 600
STOP_ON = (SoftTimeLimitExceeded,)  # not an item's fault: end the task, the next run goes on
CHANGED = PendingSet("analytics-changed")  # patients whose analytics wait for a recompute
DRAIN_QUEUED_KEY = "analytics-drain-queued"
DRAIN_SECONDS = 30.0  # a drain hands over to a new task after this long (well inside its time limit)


def schedule_recompute(patient_ids, delay: float | None = None) -> None:
    """The patients' analytics are to be recomputed. They join the set of changed patients, and one drain
    task (at most one queued at a time) recomputes that set in groups of GROUP_SIZE, `delay` seconds
    later (ANALYTICS_DEBOUNCE_SECONDS): a burst of ingests for many patients becomes a few group runs, not
    one task per patient. The drain is sent with no countdown and waits out the window itself: an ETA
    message waits in a worker's timer, which a lost broker connection empties, while the debounce key
    still says a drain is queued (issue 15); a message without one waits in Redis. With tasks run
    in-process (the demo) they are recomputed now. When the set cannot be written, group tasks are sent
    instead; when those cannot be sent either, the reconciler finds the patients (their
    data_changed_at)."""
    ids = sorted(set(patient_ids))
    if not ids:
        return
    if not _drains():
        _send_groups(ids)
        return
    try:
        CHANGED.add(ids)
    except Exception as error:
        logger.warning("changed-patients set unavailable: %s", type(error).__name__)
        _send_groups(ids)
        return
    delay = settings.ANALYTICS_DEBOUNCE_SECONDS if delay is None else delay
    enqueue_once(recompute_changed_analytics, time.time() + delay, key=DRAIN_QUEUED_KEY)


def _drains() -> bool:
    """Whether changed patients go through the set and a drain: not with tasks run in-process (the demo)
    nor without Redis beside the cache."""
    return not app.conf.task_always_eager and CHANGED.available()


def _send_groups(ids: list[int]) -> None:
    for start in range(0, len(ids), GROUP_SIZE):
        enqueue(recompute_patient_group, ids[start : start + GROUP_SIZE])


# ----- receivers of the services' signals (connected in TrackingConfig.ready) ------------------------


def on_data_changed(sender, *, patient_ids, **kwargs) -> None:
    schedule_recompute(patient_ids)


def on_webhooks_queued(sender, *, delivery_ids, **kwargs) -> None:
    for delivery_id in delivery_ids:
        enqueue(deliver_webhook, delivery_id)


# ----- tasks ----------------------------------------------------------------------------------------


@shared_task(time_limit=60, soft_time_limit=50)
def recompute_patient_analytics(patient_id: int) -> bool:
    """One patient (what an operator or a message queued by an earlier release asks for)."""
    cache.delete(DEBOUNCE_KEY.format(patient_id))  # changes from now on queue a new run
    return recompute.patient_recompute(patient_id, stop_on=STOP_ON)  # a failure is recorded, not raised


@shared_task(time_limit=120, soft_time_limit=100)
def recompute_changed_analytics(not_before: float | None = None) -> int:
    """Drains the set of changed patients, a group at a time, each group in one transaction with a fixed
    number of queries. It starts at `not_before` (a Unix time: the end of the debounce window of the
    change that queued it; never more than ANALYTICS_DEBOUNCE_SECONDS from now, whatever the clocks say),
    and the changes of the burst join the set meanwhile. When a full group comes out, more may be
    waiting: another drain is queued, so a second worker process drains beside this one (each pops its
    own groups). After DRAIN_SECONDS it hands what is left to a new task. Returns how many were
    recomputed."""
    if not_before is not None:
        time.sleep(max(0.0, min(not_before - time.time(), settings.ANALYTICS_DEBOUNCE_SECONDS)))
    with contextlib.suppress(Exception):
        cache.delete(DRAIN_QUEUED_KEY)  # changes from now on queue a new drain
    deadline = time.monotonic() + DRAIN_SECONDS
    done = 0
    while ids := CHANGED.pop(GROUP_SIZE):
        if len(ids) == GROUP_SIZE:
            enqueue_once(recompute_changed_analytics, key=DRAIN_QUEUED_KEY)
        done += recompute.patients_recompute(ids, stop_on=STOP_ON, skip_locked=True)
        if time.monotonic() > deadline:
            enqueue_once(recompute_changed_analytics, key=DRAIN_QUEUED_KEY)
            break
    return done


@shared_task(time_limit=300, soft_time_limit=280)
def reconcile_analytics(limit: int = 5000) -> int:
    """Queues every patient whose data changed after its last computation, or whose summary is for an
    earlier local day (streaks and risk move with the calendar), in groups. A patient already queued
    (in the changed set, for which it makes sure a drain is queued, or by an earlier run whose group has
    not started) is not sent again; a claim that is never
    honoured (a lost task) lapses after RECONCILE_CLAIM_SECONDS. A patient whose recompute failed waits
    for its `analytics_retry_at`, and is then sent in a group of its own, so that it cannot fail a group
    of others again. Returns how many were queued."""
    now = timezone.now()
    due = Q(analytics_retry_at__isnull=True) | Q(analytics_retry_at__lte=now)
    rows = list(Patient.objects.stale_analytics().filter(due).values_list("pk", "analytics_retry_at")[:limit])
    ids = [pid for pid, _ in rows]
    retrying = {pid for pid, retry_at in rows if retry_at is not None}
    outdated = history.patients_with_outdated_summary(limit=max(0, limit - len(ids)))
    if outdated:
        failed = dict(
            Patient.objects.filter(pk__in=outdated, analytics_retry_at__isnull=False).values_list(
                "pk", "analytics_retry_at"
            )
        )
        ids += [pid for pid in outdated if pid not in failed or failed[pid] <= now]
        retrying.update(failed)
    waiting = _waiting_for_a_drain(ids)
    if waiting:  # a drain is due for them; make sure one is queued (its message may have been lost)
        enqueue_once(recompute_changed_analytics, key=DRAIN_QUEUED_KEY)
    claimed = [pid for pid in ids if pid not in waiting and _claim(pid)]
    groups = [[pid] for pid in claimed if pid in retrying]
    healthy = [pid for pid in claimed if pid not in retrying]
    groups += [healthy[start : start + GROUP_SIZE] for start in range(0, len(healthy), GROUP_SIZE)]
    for group in groups:
        enqueue(recompute_patient_group, group)
    return len(claimed)


def _waiting_for_a_drain(ids: list[int]) -> set[int]:
    """Those of `ids` in the changed set: a drain is due to recompute them."""
    if not _drains():
        return set()
    try:
        return CHANGED.members(ids)
    except Exception:  # Redis down: send them all (a recompute twice is harmless)
        return set()


def _claim(patient_id: int) -> bool:
    try:
        return cache.add(DEBOUNCE_KEY.format(patient_id), 1, timeout=RECONCILE_CLAIM_SECONDS)
    except Exception:  # the cache is down: send it anyway (a recompute twice is harmless)
        return True


@shared_task(time_limit=120, soft_time_limit=100)
def recompute_patient_group(patient_ids: list[int]) -> int:
    """Many patients in one transaction and a fixed number of queries (what the reconciler sends); when
    that fails, each patient on its own, so one failing patient does not hold back the others. Returns
    how many were recomputed."""
    with contextlib.suppress(Exception):
        cache.delete_many([DEBOUNCE_KEY.format(pid) for pid in patient_ids])  # changes from now on queue anew
    return recompute.patients_recompute(patient_ids, stop_on=STOP_ON, skip_locked=True)


@shared_task(time_limit=1800, soft_time_limit=1780)
def audit_nightly() -> int:
    """Verifies every audit chain (the console shows when and up to which seq) and writes the signed
    heads outside the database. Returns how many chains were verified."""
    results = audit.verify_chains(via="nightly")
    audit.export_heads()
    return len(results)


@shared_task(time_limit=30, soft_time_limit=25)
def deliver_webhook(delivery_id: int) -> str:
    return webhooks.deliver(delivery_id, stop_on=STOP_ON)


@shared_task(time_limit=120, soft_time_limit=110)
def retry_pending_webhooks(limit: int = 500) -> int:
    """Queues pending deliveries that are due (a failed attempt's backoff has passed, or the first task
    was never sent or lost), oldest first. Returns how many were queued; a delivery that cannot be sent
    is logged and the others are still queued."""
    now = timezone.now()
    due = WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING).filter(
        Q(next_attempt_at__lte=now)
        | Q(next_attempt_at__isnull=True, created_at__lte=now - timezone.timedelta(seconds=60))
    )
    ids = list(due.order_by("created_at", "pk").values_list("pk", flat=True)[:limit])
    return sum(enqueue(deliver_webhook, delivery_id) for delivery_id in ids)


# Acknowledged when it starts, unlike the other tasks: it may run longer than the broker's visibility
# timeout (settings.CELERY_BROKER_TRANSPORT_OPTIONS), after which a message still unacknowledged is
# delivered again, which would start a second run beside the first. A run lost with its worker keeps the
# batches it committed, and the next night's run removes the rest.
@shared_task(time_limit=3 * 3600, soft_time_limit=3 * 3600 - 60, acks_late=False)
def enforce_retention() -> int:
    """Each night: every clinic's retention policies (DESIGN §7), in batches of at most 5,000 rows per
    transaction; an audit policy under the six-year floor is refused and logged, the rest still runs.
    Returns how many main rows were removed."""
    from tracking import retention

    removed = 0
    for run in retention.enforce_all():
        removed += sum(run.counts.values())
        for category in sorted(run.refused):
            logger.error("retention policy refused: clinic %s category %s (under the floor)", run.clinic.pk, category)
    return removed
