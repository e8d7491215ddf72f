"""Analytics and celebrations through a real Celery worker (with its beat) on a real Redis broker.

The broker of these tests is a Redis server of their own, so a broker outage can be real: the server is
stopped while the game posts data, and started again afterwards.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.utils import timezone

from progress_site.celery import app as celery_app
from tests.stack import free_port, run_database_url
from tests.test_ingest import post
from tracking import history, webhooks
from tracking.models import Milestone, Patient, ProgressHighlight, ProgressSummary, WebhookDelivery
from tracking.tasks import recompute_patient_analytics

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[1]


def wait_until(condition, timeout: float = 45, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Broker:
    """A throwaway redis-server the test can stop and start."""

    def __init__(self, tmp: Path):
        self.port, self.tmp, self.process = free_port(), tmp, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._accepts, 20, "the broker to accept connections")

    def stop(self):
        if self.process:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False


def use_broker(url: str) -> None:
    """Points this process's Celery app at `url`, dropping pooled connections to the old broker."""
    celery_app.conf.broker_url = url
    celery_app._after_fork()  # the documented way Celery resets its connection pools


@pytest.fixture
def broker(tmp_path):
    broker = Broker(tmp_path)
    broker.start()
    previous = celery_app.conf.broker_url
    use_broker(broker.url)
    yield broker
    use_broker(previous)
    broker.stop()


@pytest.fixture
def worker(transactional_db, broker, tmp_path):
    """`celery worker -B` in its own process, on the test database, with a 1-second reconciler."""
    env = {
        **os.environ,
        "DATABASE_URL": run_database_url(),
        "CELERY_BROKER_URL": broker.url,
        "ANALYTICS_RECONCILE_SECONDS": "1",
        "ANALYTICS_DEBOUNCE_SECONDS": "0.5",
    }
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "progress_site",
            "worker",
            "-B",
            "--pool=solo",
            "--loglevel=INFO",
            "-s",
            str(tmp_path / "beat-schedule"),
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: celery_app.control.ping(timeout=0.5), 60, "the worker to answer a ping")
        yield process
    finally:
        process.terminate()
        process.wait(20)
        log.close()
        if os.environ.get("SHOW_WORKER_LOG"):
            print((tmp_path / "worker.log").read_text())


class Receiver:
    """A local game server that records the celebration webhooks it receives."""

    def __init__(self, status: int = 204):
        self.requests: list[tuple[dict, bytes]] = []
        self.status = status
        received, receiver = self.requests, self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/celebrate"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()


def week_of_sessions(patient_tz: str, player: str) -> dict:
    """Seven sessions on seven consecutive local days ending today: completes a 7-day streak."""
    today = history.local_today(patient_tz)
    now = timezone.now().replace(microsecond=0)
    sessions = []
    for n in range(7):
        # 09:00 local, or now if today's 09:00 is still ahead (ingest refuses the future)
        start = min(history.local_midnight(today - timedelta(days=6 - n), patient_tz) + timedelta(hours=9), now)
        sessions.append(
            {
                "session_id": f"{player}-w{n}",
                "player_id": player,
                "started_at": start.isoformat(),
                "status": "completed",
                "duration_minutes": 15,
            }
        )
    return {"sessions": sessions}


def week_with_a_crisis(patient_tz: str, player: str, alert_id: str, reason: str) -> dict:
    """`week_of_sessions` and an urgent crisis signal raised at the start of its last session."""
    batch = week_of_sessions(patient_tz, player)
    batch["alerts"] = [
        {"alert_id": alert_id, "player_id": player, "level": "urgent", "reason": reason,
         "occurred_at": batch["sessions"][-1]["started_at"]}
    ]  # fmt: skip
    return batch


def test_a_batch_completing_a_week_streak_leads_to_milestone_highlight_and_signed_webhook(
    worker, receiver, api, clinic
):
    clinic.webhook_url, clinic.webhook_secret = receiver.url, "s3cret-for-tests"
    clinic.save()
    batch = week_of_sessions(clinic.timezone, "streaker")
    assert post(api, batch).status_code == 201

    milestone = wait_until(
        lambda: Milestone.objects.filter(patient__player_id="streaker", family="streak", threshold=7).first(),
        what="the One Week Streak milestone",
    )
    seventh_day_start = batch["sessions"][6]["started_at"]  # the run reached 7 with today's session
    assert milestone.achieved_at.isoformat() == seventh_day_start
    highlight = ProgressHighlight.objects.get(milestone=milestone)
    assert highlight.celebration_shown is False
    wait_until(
        lambda: any(json.loads(b)["milestone"]["title"] == "One Week Streak" for _, b in receiver.requests),
        what="the webhook",
    )
    for headers, body in receiver.requests:
        assert webhooks.verify(body, "s3cret-for-tests", headers[webhooks.SIGNATURE_HEADER])
        assert not webhooks.verify(body, "another-secret", headers[webhooks.SIGNATURE_HEADER])
    wait_until(lambda: not WebhookDelivery.objects.exclude(status="delivered").exists(), what="deliveries recorded")
    counts = (Milestone.objects.count(), ProgressHighlight.objects.count(), len(receiver.requests))
    assert counts == (2, 2, 2)  # One Week Streak and 5 Sessions Completed

    # The same batch again: nothing is new, and even a forced recompute through the worker adds nothing.
    response = post(api, batch)
    assert response.status_code == 200 and response.json()["sessions"]["unchanged"] == 7
    patient = Patient.objects.get(player_id="streaker")
    before = patient.analytics_computed_at

    recompute_patient_analytics.delay(patient.pk)
    wait_until(lambda: Patient.objects.get(pk=patient.pk).analytics_computed_at > before, what="the recompute")
    assert (Milestone.objects.count(), ProgressHighlight.objects.count(), len(receiver.requests)) == counts


def test_with_the_broker_down_ingest_answers_2xx_and_analytics_converge_once_it_is_back(worker, broker, api, clinic):
    broker.stop()
    response = post(api, week_of_sessions(clinic.timezone, "offline-player"))
    assert response.status_code == 201
    patient = Patient.objects.get(player_id="offline-player")
    assert patient.data_changed_at is not None and patient.analytics_computed_at is None
    assert not ProgressSummary.objects.filter(patient=patient).exists()

    broker.start()  # the worker reconnects; its beat's reconciler finds the stale patient
    summary = wait_until(lambda: ProgressSummary.objects.filter(patient=patient).first(), 90, "the recomputed summary")
    assert summary.current_streak_days == 7
    assert Milestone.objects.filter(patient=patient, title="One Week Streak").exists()


def test_new_questionnaires_rebuild_the_reference_and_raise_the_not_on_track_alert(worker, api, clinic, settings):
    """Outcome ingest → (debounced) the clinic's reference rebuilt by the worker, the patient judged, and
    the moderate not-on-track alert raised once (DESIGN §8)."""
    from reports.models import Alert, AlertKind, MeasureStatus, TrajectoryReference

    settings.REFERENCE_DEBOUNCE_SECONDS = 0.5
    # Yesterday at noon UTC: 7 weeks before it is 7 weeks of London's local days, whatever the time of the run
    # (from now, a run after 23:00 UTC in winter put the first answer past midnight of summer time: week 6).
    now = (timezone.now() - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    outcomes = [
        {"response_id": f"stuck-{n}", "player_id": "stuck", "instrument": "phq9", "total": total,
         "administered_at": (now - timedelta(weeks=weeks)).isoformat()}
        for n, (weeks, total) in enumerate([(7, 16), (3, 16), (0, 15)])
    ]  # fmt: skip
    assert post(api, {"outcomes": outcomes}).status_code == 201
    reference = wait_until(lambda: TrajectoryReference.objects.filter(clinic=clinic, instrument="phq9").first(),
                           what="the reference")  # fmt: skip
    assert reference.group_size == 1 and reference.data["bands"] == {}  # 1 patient: no reference at any week
    status = wait_until(
        lambda: MeasureStatus.objects.filter(patient__player_id="stuck", instrument="phq9", not_on_track=True).first(),
        what="the not-on-track result",
    )
    assert status.basis == "no_reliable_improvement" and status.trajectory["week"] == 7
    alert = wait_until(lambda: Alert.objects.filter(kind=AlertKind.NOT_ON_TRACK).first(), what="the alert")
    assert alert.severity == "moderate" and alert.measures == ["phq9"]
    wait_until(lambda: Alert.objects.get(pk=alert.pk).notified_at is not None, what="the alert e-mail")
    assert Alert.objects.filter(kind=AlertKind.NOT_ON_TRACK).count() == 1
