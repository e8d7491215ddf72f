"""Redis stopped for 30 s in the middle of a 10,000-event ingest through the deployed stack (issue 15).

docker-compose.yml's web, worker and beat (tests/stack.py) run on a Redis of the test's own (cache and
broker), which is stopped while four game clients post their batches and started again, empty (it keeps
nothing on disk: whatever it held, queued tasks, the changed-patients set and the debounce keys, is gone,
the harder case). The worker is holding an unacknowledged message when Redis goes (a recompute kept
running on a locked row), which used to stop it for good. Then, with no human step:
- every event acknowledged with 2xx is stored exactly once (exact counts per kind), and nothing answered
  a 5xx but the documented 503, retried with the same batch;
- the worker, the web and beat are the same processes, still running: the worker reconnected by itself;
- within 2 minutes of Redis's return every patient's analytics are fresh and every alert's e-mail has
  reached the SMTP server (the reconciler and the pending-alert sweep find what the outage dropped).
"""

import collections
import re
import threading
import time
from datetime import datetime, timedelta

import pytest
import redis
from django.db import connection
from django.utils import timezone

from reports.models import Alert, OutcomeResponse
from tests.factories import CareAssignmentFactory, PatientFactory, TherapySessionFactory
from tests.smtp import smtp_env
from tests.stack import Stack, patient_rows_locked
from tests.test_celery_worker import broker, wait_until  # noqa: F401 (a fixture)
from tracking.models import Patient, ProgressMarker, TherapySession
from tracking.tasks import recompute_patient_analytics

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

CLIENTS = 4
PATIENTS_PER_CLIENT = 10
BATCHES = 25  # per client, 100 events each: 4 × 25 × 100 = 10,000 events
BEFORE, DURING = range(0, 8), range(8, 17)  # the batches posted before and during the outage; the rest after
OUTAGE_SECONDS = 30
CONVERGE_SECONDS = 120
ALERT_SUBJECT = re.compile(r"^\[(URGENT|HIGH|MODERATE)\] .*: patient ")
SERVER_ERROR = re.compile(r'HTTP/1\.[01]" 5(?!03)\d\d')


@pytest.fixture
def stack(transactional_db, broker, smtp, tmp_path):  # noqa: F811 (the broker fixture)
    stack = Stack(
        tmp_path,
        redis_url=broker.url,
        env={
            **smtp_env(smtp),
            # the safety nets' intervals, shortened from a minute so that the test stays short
            "ANALYTICS_RECONCILE_SECONDS": "5",
            "ALERT_SWEEP_SECONDS": "5",
        },
    )
    try:
        stack.start("web", "worker", "beat")
        yield stack
    finally:
        stack.stop()


def batch(client: int, number: int, players: list[str]) -> dict:
    """100 events: 20 sessions, 74 markers, 2 PHQ-9 (one with item 9 answered) and 2 GAD-7 responses, 2
    crisis signals; ids unique across the run."""
    now = timezone.now().replace(microsecond=0)
    prefix = f"out-c{client}-b{number}"
    sessions = []
    for i in range(20):
        started = now - timedelta(days=number * 2 + i // 10, hours=client + 1)
        sessions.append(
            {"session_id": f"{prefix}-s{i}", "player_id": players[i % 10], "started_at": started.isoformat(),
             "status": "completed", "duration_minutes": 20}
        )  # fmt: skip
    kinds = ["skill_acquired", "breakthrough", "insight", "goal_achieved"]
    markers = [
        {"marker_id": f"{prefix}-m{j}", "session_id": sessions[j % 20]["session_id"],
         "player_id": sessions[j % 20]["player_id"], "type": kinds[j % 4], "therapeutic_value": 0.5,
         "achieved_at": (datetime.fromisoformat(sessions[j % 20]["started_at"])
                         + timedelta(minutes=1 + j // 20)).isoformat()}
        for j in range(74)
    ]  # fmt: skip
    outcomes = [
        {"response_id": f"{prefix}-r{k}", "player_id": players[(number + k) % 10], "instrument": instrument,
         "administered_at": (now - timedelta(days=number, minutes=k + 1)).isoformat(), "items": items}
        for k, (instrument, items) in enumerate(
            [("phq9", [1, 1, 1, 1, 1, 1, 1, 1, 0]), ("phq9", [1, 1, 1, 1, 1, 1, 1, 1, 1]),
             ("gad7", [1, 1, 1, 1, 1, 1, 1]), ("gad7", [2, 1, 1, 1, 1, 1, 0])]
        )
    ]  # fmt: skip
    alerts = [
        {"alert_id": f"{prefix}-a{k}", "player_id": players[(number + 5 + k) % 10], "level": "urgent",
         "reason": "Crisis phrase in chat", "occurred_at": (now - timedelta(minutes=k + 1)).isoformat()}
        for k in range(2)
    ]  # fmt: skip
    return {"sessions": sessions, "markers": markers, "outcomes": outcomes, "alerts": alerts}


ID_FIELD = {"sessions": "session_id", "markers": "marker_id", "outcomes": "response_id", "alerts": "alert_id"}
STORED = {
    "sessions": (TherapySession, "session_id"),
    "markers": (ProgressMarker, "marker_id"),
    "outcomes": (OutcomeResponse, "response_id"),
    "alerts": (Alert, "alert_id"),
}


class Game:
    """The game's clients: each posts its batches one after another, waits at the phase gates, and
    retries a 503 with the same batch after its Retry-After (bounded)."""

    def __init__(self, stack: Stack, token: str, players: list[list[str]]):
        self.stack, self.token, self.players = stack, token, players
        self.down, self.up = threading.Event(), threading.Event()
        self.lock = threading.Lock()
        self.statuses: collections.Counter = collections.Counter()
        self.acknowledged: dict[str, set[str]] = {kind: set() for kind in ID_FIELD}
        self.created: collections.Counter = collections.Counter()
        self.posted: collections.Counter = collections.Counter()  # batches acknowledged, per phase
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._client, args=(c,), daemon=True) for c in range(CLIENTS)]

    def start(self):
        for thread in self.threads:
            thread.start()

    def done(self) -> bool:
        return not any(thread.is_alive() for thread in self.threads)

    def _client(self, client: int):
        try:
            for number in range(BATCHES):
                if number == DURING.start and not self.down.wait(CONVERGE_SECONDS):
                    raise AssertionError("the outage never began")
                if number == DURING.stop and not self.up.wait(CONVERGE_SECONDS):
                    raise AssertionError("Redis never came back")
                self._post(batch(client, number, self.players[client]), number)
        except Exception as error:  # reported by the test
            with self.lock:
                self.failures.append(f"client {client}: {error!r}")

    def _post(self, body: dict, number: int):
        deadline = time.monotonic() + CONVERGE_SECONDS
        while True:
            status, headers, answer = self.stack.ingest(self.token, body)
            with self.lock:
                self.statuses[status] += 1
            if status in (200, 201):
                break
            if status != 503 or time.monotonic() > deadline:
                raise AssertionError(f"answered {status}: {answer}")
            time.sleep(min(5.0, float(headers.get("Retry-After", "1"))))  # what the client is told to do
        phase = "before" if number in BEFORE else "during" if number in DURING else "after"
        with self.lock:
            self.posted[phase] += 1
            for kind, field in ID_FIELD.items():
                self.acknowledged[kind].update(item[field] for item in body[kind])
                self.created[kind] += answer[kind]["created"]


def _waiting_on_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def _converged(clinic, smtp) -> bool:
    patients = Patient.objects.filter(clinic=clinic)
    if patients.stale_analytics().exists() or patients.filter(analytics_computed_at__isnull=True).exists():
        return False
    if Alert.objects.filter(notified_at__isnull=True).exists():
        return False
    return len(_alert_mails(smtp)) >= Alert.objects.count()


def _alert_mails(smtp) -> list:
    return [message for _, _, message in smtp.received if ALERT_SUBJECT.match(message["Subject"])]


def test_redis_stopped_for_30_s_during_a_10000_event_ingest_loses_nothing_and_converges_by_itself(
    stack,
    broker,  # noqa: F811 (the fixture)
    smtp,
    clinic,
    therapist_a,
    token,  # noqa: F811 (the broker fixture)
):
    therapist_a.email = "anna@clinic.example"
    therapist_a.save()
    players = []
    for client in range(CLIENTS):
        names = [f"out-p{client}-{n}" for n in range(PATIENTS_PER_CLIENT)]
        for name in names:
            CareAssignmentFactory(patient=PatientFactory(clinic=clinic, player_id=name), therapist=therapist_a)
        players.append(names)
    # A patient outside the game's load whose recompute the worker is running when Redis goes: its row is
    # held locked, so the worker holds that task's message unacknowledged (acks_late).
    canary = PatientFactory(clinic=clinic, player_id="out-canary")
    TherapySessionFactory(patient=canary, started_at=timezone.now() - timedelta(hours=2))
    Patient.objects.filter(pk=canary.pk).update(
        data_changed_at=timezone.now() - timedelta(minutes=1), analytics_computed_at=timezone.now()
    )
    pids = {service: stack.processes[service].pid for service in ("web", "worker", "beat")}
    game = Game(stack, token, players)
    game.start()

    wait_until(lambda: game.posted["before"] == CLIENTS * len(BEFORE) or game.failures, 60, "the first batches")
    assert not game.failures, game.failures
    lock = patient_rows_locked([canary.pk])
    try:
        recompute_patient_analytics.delay(canary.pk)
        wait_until(lambda: _waiting_on_locks() >= 1, 30, "the worker running the canary's recompute")
        assert redis.Redis.from_url(broker.url).hlen("unacked") >= 1  # the worker holds its message
        broker.stop()
        down_at = time.monotonic()
        game.down.set()
    finally:
        lock.close()  # the canary's recompute goes on and finishes with Redis gone: its ack fails

    # The deliberate outage: the clients post the middle of their batches meanwhile, all answered 2xx.
    wait_until(
        lambda: game.posted["during"] == CLIENTS * len(DURING) or game.failures,
        OUTAGE_SECONDS - 2,
        "the batches posted during the outage",
    )
    assert not game.failures, game.failures
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
    assert stack.processes["worker"].poll() is None, "the worker exited during the outage"
    broker.start()
    up_at = time.monotonic()
    game.up.set()

    wait_until(lambda: game.done() and _converged(clinic, smtp), CONVERGE_SECONDS, "analytics and alert e-mails")
    converged = time.monotonic() - up_at
    assert not game.failures, game.failures

    # Nothing lost, nothing twice: every acknowledged event is stored once, and nothing else from the game.
    events = sum(len(ids) for ids in game.acknowledged.values())
    assert events == CLIENTS * BATCHES * 100 == 10_000
    for kind, (model, field) in STORED.items():
        rows = model.objects.filter(**{f"{field}__startswith": "out-"})
        assert set(rows.values_list(field, flat=True)) == game.acknowledged[kind], kind
        assert rows.count() == len(game.acknowledged[kind]) == game.created[kind], kind
    item9 = Alert.objects.filter(kind="phq9_item9").count()
    assert item9 == CLIENTS * BATCHES  # one per response with item 9 answered

    # No 5xx but the documented 503 (retried with the same batch); the services are the same processes.
    assert set(game.statuses) <= {200, 201, 503}, game.statuses
    assert not SERVER_ERROR.search(stack.log("web"))
    for service, pid in pids.items():
        assert stack.processes[service].pid == pid and stack.processes[service].poll() is None, service
    worker_log = stack.log("worker")  # it lost Redis, retried, and connected again by itself
    assert "Cannot connect to" in worker_log and worker_log.count("Connected to") == 2
    assert "Unrecoverable error" not in worker_log
    for service in ("web", "worker", "beat"):
        assert stack.healthcheck(service), service

    # Each alert e-mailed exactly once.
    mails = _alert_mails(smtp)
    assert len(mails) == Alert.objects.count() == Alert.objects.filter(notified_at__isnull=False).count()
    print(
        f"\n{events} events acknowledged ({dict(game.statuses)} answers; {game.statuses[503]} × 503), "
        f"{Alert.objects.count()} alerts e-mailed; converged {converged:.1f} s after Redis's return"
    )
