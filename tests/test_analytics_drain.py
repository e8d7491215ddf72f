"""Changed patients wait in a Redis set and a drain task recomputes them in groups (issue 14, item 4): a
burst of ingests for many patients costs a few group runs, no task waits in a worker for its time, and
the reconciler stays the safety net for what the set loses."""

import time

import pytest
from django.core.cache import cache
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from progress_site.celery import app as celery_app
from tests.factories import PatientFactory, TherapySessionFactory
from tests.stack import patient_rows_locked
from tracking import recompute, tasks
from tracking.models import Patient


@pytest.fixture
def changed_set():
    """The real set, in the suite's Redis, empty before and after."""
    client = tasks.CHANGED._redis()
    client.delete(tasks.CHANGED.key)
    cache.delete(tasks.DRAIN_QUEUED_KEY)
    yield tasks.CHANGED
    client.delete(tasks.CHANGED.key)
    cache.delete(tasks.DRAIN_QUEUED_KEY)


@pytest.fixture
def stale(clinic):
    patients = [PatientFactory(clinic=clinic, player_id=f"drain-{n}") for n in range(5)]
    for patient in patients:
        TherapySessionFactory(patient=patient, started_at=timezone.now())
    Patient.objects.update(data_changed_at=timezone.now(), analytics_computed_at=None)
    return [p.pk for p in patients]


@pytest.fixture
def groups(monkeypatch):
    """The groups the drain recomputes, in order (the real recompute runs)."""
    seen: list[list[int]] = []
    real = recompute.patients_recompute

    def recording(ids, **kwargs):
        seen.append(list(ids))
        return real(ids, **kwargs)

    monkeypatch.setattr(recompute, "patients_recompute", recording)
    monkeypatch.setattr(tasks, "GROUP_SIZE", 2)
    return seen


def test_changed_patients_join_the_set_and_one_drain_is_queued(changed_set, stale):
    assert not celery_app.conf.task_always_eager
    tasks.schedule_recompute(stale)
    tasks.schedule_recompute(stale[:2])  # again: the same set, the drain already queued
    assert changed_set.members(stale) == set(stale)
    assert cache.get(tasks.DRAIN_QUEUED_KEY) == 1
    assert Patient.objects.stale_analytics().count() == 5  # nothing computed in the request


def test_the_drain_recomputes_every_changed_patient_in_groups(changed_set, stale, groups):
    tasks.schedule_recompute(stale)
    assert tasks.recompute_changed_analytics() == 5
    assert sorted(len(g) for g in groups) == [1, 2, 2]
    assert sorted(pid for g in groups for pid in g) == sorted(stale)
    assert not Patient.objects.stale_analytics().exists()
    assert changed_set.pop(10) == []


def test_a_drain_that_finds_less_than_a_group_leaves_the_next_change_to_queue_a_drain(changed_set, stale, groups):
    tasks.schedule_recompute(stale[:1])
    assert tasks.recompute_changed_analytics() == 1
    assert cache.get(tasks.DRAIN_QUEUED_KEY) is None  # the next change queues a new drain


def test_a_full_group_queues_a_second_drain_to_work_beside_the_first(changed_set, stale, groups, monkeypatch):
    sent = []
    monkeypatch.setattr(tasks, "enqueue_once", lambda task, *args, key, countdown=0: sent.append(task.name))
    changed_set.add(stale)
    assert tasks.recompute_changed_analytics() == 5
    assert sent == [tasks.recompute_changed_analytics.name] * 2  # after each full group of 2, not after the last


def test_a_drain_past_its_time_hands_the_rest_to_a_new_task(changed_set, stale, groups, monkeypatch):
    tasks.schedule_recompute(stale)
    monkeypatch.setattr(tasks, "DRAIN_SECONDS", -1.0)
    assert tasks.recompute_changed_analytics() == 2
    assert len(changed_set.members(stale)) == 3
    assert cache.get(tasks.DRAIN_QUEUED_KEY) == 1  # handed over


def test_the_reconciler_leaves_patients_waiting_for_a_drain_and_makes_sure_one_is_queued(changed_set, stale):
    changed_set.add(stale[:3])  # their drain's message was lost
    assert tasks.reconcile_analytics() == 2  # the two not in the set are sent in a group
    assert cache.get(tasks.DRAIN_QUEUED_KEY) == 1
    assert changed_set.members(stale) == set(stale[:3])


def test_with_tasks_in_process_the_patients_are_recomputed_at_once(changed_set, stale):
    celery_app.conf.task_always_eager = True
    try:
        tasks.schedule_recompute(stale)
    finally:
        celery_app.conf.task_always_eager = False
    assert not Patient.objects.stale_analytics().exists()
    assert changed_set.members(stale) == set()


def test_the_drain_is_sent_without_a_countdown_and_waits_out_the_window_itself(
    changed_set, stale, monkeypatch, settings
):
    """No ETA message waits in a worker's timer, which a lost broker connection empties (issue 15): the
    drain goes to the queue at once and sleeps until the end of the window of the change that queued it,
    never longer than the window, whatever the clocks say."""
    settings.ANALYTICS_DEBOUNCE_SECONDS = 0.5
    sent = []
    monkeypatch.setattr(tasks, "enqueue_once", lambda task, *args, key, countdown=0: sent.append((args, countdown)))
    before = time.time()
    tasks.schedule_recompute(stale)
    [((not_before,), countdown)] = sent
    assert countdown == 0 and before + 0.5 <= not_before <= time.time() + 0.5
    called, started = time.time(), time.monotonic()
    assert tasks.recompute_changed_analytics(not_before) == 5
    assert time.monotonic() - started >= not_before - called - 0.05  # it waited for the end of the window
    tasks.schedule_recompute(stale)
    started = time.monotonic()
    assert tasks.recompute_changed_analytics(time.time() + 3600) == 5  # a skewed clock: at most the window
    assert time.monotonic() - started < 5


@pytest.mark.django_db(transaction=True)
def test_a_drain_skips_a_patient_whose_row_an_open_ingest_holds_and_queues_it_again(changed_set, stale):
    """A drain waited for the rows ingests held, while holding the rows it had locked so far, and every
    ingest for those patients waited behind it. Now it stores the others at once and leaves the held
    patient stale and queued again."""
    held = stale[2]
    with patient_rows_locked([held]):  # an ingest's open transaction
        assert recompute.patients_recompute(stale, skip_locked=True) == 4
        assert list(Patient.objects.stale_analytics().values_list("pk", flat=True)) == [held]
        assert changed_set.members(stale) == {held}
        assert cache.get(tasks.DRAIN_QUEUED_KEY) == 1  # and a drain will come for it
    assert recompute.patients_recompute([held], skip_locked=True) == 1
    assert not Patient.objects.stale_analytics().exists()


@pytest.mark.django_db(transaction=True)
def test_an_explicit_recompute_still_waits_for_a_held_row(stale):
    """A page or the API recomputing a patient for its answer waits for the ingest in flight, as before."""
    with (
        patient_rows_locked([stale[0]]),
        transaction.atomic(),
        pytest.raises(OperationalError, match="lock timeout"),
    ):
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '200ms'")
        recompute._recompute_together(stale)
