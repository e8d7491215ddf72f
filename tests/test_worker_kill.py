"""A Celery worker killed with SIGKILL while it works through 100 recompute tasks (issue 15): the worker of
docker-compose.yml (tests/stack.py, on a Redis of the test's own) is killed with its whole process group,
compose's health check sees it dead, a new one is started as `restart: unless-stopped` would, and every
one of the 100 patients' analytics is computed: the tasks still queued by the new worker, the ones the
dead worker held (unacknowledged, so Redis keeps them) by the reconciler of beat, well before the
broker's visibility timeout would deliver them again."""

import os
import signal
import time

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from progress_site.celery import app as celery_app
from tests.factories import PatientFactory, TherapySessionFactory
from tests.stack import Stack, compose, patient_rows_locked
from tests.test_celery_worker import broker, wait_until  # noqa: F401 (a fixture)
from tracking.models import Patient
from tracking.tasks import recompute_patient_analytics

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

PATIENTS = 100


def test_the_visibility_timeout_outlasts_every_message_a_live_worker_holds():
    """A message a worker has not acknowledged is delivered again after the visibility timeout, even to
    a second worker while the first still runs it: no acks_late task may hold one that long (its hard
    time limit, after the longest countdown anything is sent with)."""
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    longest_countdown = max(settings.ANALYTICS_DEBOUNCE_SECONDS, settings.REFERENCE_DEBOUNCE_SECONDS)
    held = {
        name: (task.time_limit or celery_app.conf.task_time_limit) + longest_countdown
        for name, task in celery_app.tasks.items()
        if not name.startswith("celery.") and task.acks_late
    }
    assert held and max(held.values()) < visibility, held
    assert not celery_app.tasks["tracking.tasks.enforce_retention"].acks_late  # runs 3 h: acknowledged at start


def test_compose_restarts_worker_and_beat_and_checks_their_health():
    for service in ("web", "worker", "beat"):
        assert compose()["services"][service]["restart"] == "unless-stopped", service
    assert compose()["services"]["worker"]["healthcheck"] and compose()["services"]["beat"]["healthcheck"]
    assert settings.CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP is True
    assert settings.CELERY_BROKER_CONNECTION_MAX_RETRIES is None  # reconnects for as long as the outage lasts


@pytest.fixture
def stack(transactional_db, broker, tmp_path):  # noqa: F811 (the broker fixture)
    stack = Stack(
        tmp_path,
        redis_url=broker.url,
        env={"ANALYTICS_RECONCILE_SECONDS": "2"},
    )
    try:
        yield stack
    finally:
        stack.stop()


def _waiting_on_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def _computed(ids) -> int:
    return Patient.objects.filter(pk__in=ids, analytics_computed_at__isnull=False).count()


def test_a_worker_killed_during_100_recompute_tasks_is_restarted_and_all_of_them_complete(stack, broker, clinic):  # noqa: F811
    now = timezone.now()
    ids = []
    for n in range(PATIENTS):
        patient = PatientFactory(clinic=clinic, player_id=f"kill-{n:03d}")
        for day in range(5):
            TherapySessionFactory(patient=patient, started_at=now - timezone.timedelta(days=day, hours=1))
        ids.append(patient.pk)
    Patient.objects.filter(pk__in=ids).update(data_changed_at=now, analytics_computed_at=None)
    blocked = ids[30:32]  # two tasks the worker is bound to be running when it is killed
    locks = patient_rows_locked(blocked)
    queue = redis.Redis.from_url(broker.url)
    try:
        stack.start("worker")
        for pid in ids:
            recompute_patient_analytics.delay(pid)
        # Both pool processes are inside a task (waiting on the rows), the other tasks are done or queued.
        wait_until(lambda: _waiting_on_locks() >= 2 and _computed(ids) >= 25, 60, "two running tasks, 25 done")
        done_before = _computed(ids)
        stack.kill("worker", signal.SIGKILL)  # the whole process group: the main process and its pool
    finally:
        locks.close()
    killed_at = time.monotonic()
    held, queued = queue.hlen("unacked"), queue.llen("celery")
    assert held >= 2  # the dead worker's messages, unacknowledged: Redis keeps them (for the visibility timeout)
    assert queued >= PATIENTS - done_before - held - 2 > 0
    assert not stack.healthcheck("worker")  # compose's check sees the worker dead (no answer to its ping)
    assert _computed(ids) < PATIENTS

    # What `restart: unless-stopped` does: the same command again. Beat's reconciler is the safety net.
    log_before = len(stack.log("worker"))
    stack.start("worker", "beat")
    wait_until(lambda: _computed(ids) == PATIENTS, 90, "every patient's analytics after the kill")
    took = time.monotonic() - killed_at
    assert not Patient.objects.filter(pk__in=ids).stale_analytics().exists()
    wait_until(lambda: queue.llen("celery") == 0, 30, "the queued tasks consumed by the new worker")
    lines = stack.log("worker")[log_before:].splitlines()
    ran = sum("recompute_patient_analytics[" in line and " succeeded in " in line for line in lines)
    assert ran >= queued  # the queued tasks, run by the new worker (the reconciler's groups are another task)
    print(
        f"\nworker killed with {done_before}/{PATIENTS} done, {held} unacknowledged and {queued} queued; "
        f"all {PATIENTS} computed {took:.1f} s after the kill"
    )


def test_the_beat_health_check_fails_for_a_dead_beat_and_passes_once_it_is_started_again(stack, tmp_path):
    stack.start("beat")  # waits for compose's check: the schedule file was written just now
    stack.kill("beat", signal.SIGKILL)
    assert stack.healthcheck("beat")  # the file is still fresh: a beat dead for a moment is not yet noticed
    old = time.time() - 11 * 60
    for path in tmp_path.glob("celerybeat-schedule*"):
        os.utime(path, (old, old))  # ... but after ten minutes without a write it is
    assert not stack.healthcheck("beat")
    stack.start("beat")  # what the restart policy does; beat rewrites its schedule file at once
    assert stack.healthcheck("beat")
