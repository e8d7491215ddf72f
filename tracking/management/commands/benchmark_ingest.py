"""Ingest through the production-like stack, beside its physical limit (issue 14, docs/performance.md).

    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/progress_bench REDIS_URL=redis://127.0.0.1:6379/14
    python manage.py migrate
    python manage.py benchmark_ingest [--sizes 1,100,1000] [--clients 1,4] [--markers 20000]

It starts the stack itself: gunicorn with the command line of docker-compose.yml's `web` service (bound to a
free loopback port instead of 0.0.0.0:8000) and a Celery worker with the `worker` service's command, both on
the configured PostgreSQL and Redis. For each batch size and number of clients, every client posts its own
batches (N markers and N/5 sessions, new players per client) one after another, and the command prints
markers/s, the request latency p50/p95/p99, the time from the end of the load until every patient's
analytics are fresh, and the limit: the same rows written with COPY into the same tables, in the same run,
with the ratio. Everything it wrote is removed afterwards (its own clinic, `bench-ingest`).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from reports.models import Alert, MeasureStatus, OutcomeResponse, TrajectoryReference
from tracking import services
from tracking.management.commands._base import percentile, refresh_statistics
from tracking.models import (
    Clinic,
    IngestToken,
    Milestone,
    Patient,
    PatientDay,
    ProgressHighlight,
    ProgressMarker,
    ProgressSummary,
    Recommendation,
    TherapySession,
    WebhookDelivery,
    skipping_row_history,
)

ROOT = Path(settings.BASE_DIR)
CLINIC = "bench-ingest"
LIMIT_CLINIC = "bench-ingest-copy"
SESSIONS_PER_MARKERS = 5  # one session per 5 markers, as the game sends them
PLAYERS_PER_CLIENT = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compose_commands() -> tuple[list[str], list[str]]:
    """The gunicorn command of compose's `web` and the worker's, as argument lists."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    web = compose["services"]["web"]["command"]
    match = re.search(r"gunicorn\s.*", web if isinstance(web, str) else " ".join(web))
    if match is None:
        raise CommandError("docker-compose.yml: the web command has no gunicorn")
    worker = compose["services"]["worker"]["command"]
    return shlex.split(match.group(0).strip().rstrip('"')), shlex.split(worker) if isinstance(worker, str) else worker


@dataclass
class Run:
    size: int
    clients: int
    latencies: list[float] = field(default_factory=list)
    markers: int = 0
    seconds: float = 0.0
    fresh_after: float = 0.0
    copy_per_second: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.markers / self.seconds if self.seconds else 0.0


class Command(BaseCommand):
    help = "Ingest through gunicorn + a Celery worker, beside the COPY limit of the same rows."

    def add_arguments(self, parser):
        parser.add_argument("--sizes", default="1,100,1000", help="markers per batch (comma-separated)")
        parser.add_argument("--clients", default="1,4", help="concurrent clients (comma-separated)")
        parser.add_argument("--markers", type=int, default=20000, help="markers per run (size 1: a tenth of it)")
        parser.add_argument("--fresh-timeout", type=float, default=120.0)

    def handle(self, *args, sizes: str, clients: str, markers: int, fresh_timeout: float, **options):
        if connection.vendor != "postgresql" or not os.environ.get("REDIS_URL"):
            raise CommandError("benchmark_ingest needs PostgreSQL and Redis (set DATABASE_URL and REDIS_URL).")
        web_command, worker_command = compose_commands()
        port = free_port()
        web_command = [*web_command[: web_command.index("--bind")], *web_command[web_command.index("--bind") + 2 :]]
        web_command += ["--bind", f"127.0.0.1:{port}"]
        self._clear()
        clinic = Clinic.objects.create(slug=CLINIC, name="Ingest benchmark", timezone="Europe/London")
        _, token = services.ingest_token_create(clinic=clinic, name="bench")
        logs = tempfile.TemporaryDirectory(prefix="benchmark-ingest-")
        processes = [
            self._start([sys.executable, "-m", *web_command], Path(logs.name) / "web.log"),
            self._start([sys.executable, "-m", *worker_command], Path(logs.name) / "worker.log"),
        ]
        try:
            self._wait_for_web(port)
            self.stdout.write(f"web: {' '.join(web_command)}\nworker: {' '.join(worker_command)}\n")
            for size in [int(s) for s in sizes.split(",")]:
                for n_clients in [int(c) for c in clients.split(",")]:
                    run = self._run(port, token, clinic, size, n_clients, markers, fresh_timeout)
                    self._report(run)
                    if run.fresh_after == float("inf"):
                        self._explain_stale(clinic, Path(logs.name) / "worker.log")
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(30)
            self._clear()
            logs.cleanup()

    def _explain_stale(self, clinic: Clinic, worker_log: Path) -> None:
        """What is left stale after the timeout: the patients' recorded errors, and the worker's warnings."""
        stale = Patient.objects.filter(clinic=clinic).stale_analytics()
        errors = sorted({e or "none recorded" for e in stale.values_list("analytics_error", flat=True)})
        self.stdout.write(f"  still stale: {stale.count()} patients; their recorded errors: {', '.join(errors)}")
        lines = [line for line in worker_log.read_text().splitlines() if "WARNING" in line or "ERROR" in line]
        for line in lines[-10:]:
            self.stdout.write(f"  worker: {line[:200]}")

    # ----- the stack --------------------------------------------------------------------------------

    def _start(self, command: list[str], log: Path) -> subprocess.Popen:
        output = log.open("w")  # noqa: SIM115 (open while the process runs; the directory goes at the end)
        env = {**os.environ, "DEBUG": os.environ.get("DEBUG", "false")}  # as deployed: no query log, no debug pages
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603

    def _wait_for_web(self, port: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            time.sleep(0.2)
        raise CommandError("gunicorn did not answer /healthz within 60 s")

    # ----- one configuration ----------------------------------------------------------------------

    def _batches(self, run_id: str, client: int, size: int, count: int) -> list[bytes]:
        """`count` batches of `size` markers for this client, with their sessions (one per 5 markers)."""
        start = datetime.now(UTC) - timedelta(days=2)
        batches = []
        marker_no = 0
        for b in range(count):
            sessions, items = [], []
            for m in range(size):
                if marker_no % SESSIONS_PER_MARKERS == 0:
                    session_no = marker_no // SESSIONS_PER_MARKERS
                    player = f"{run_id}-c{client}-p{session_no % PLAYERS_PER_CLIENT}"
                    at = start + timedelta(seconds=session_no * 7)
                    session_id = f"{run_id}-c{client}-s{session_no}"
                    sessions.append(
                        {"session_id": session_id, "player_id": player, "started_at": at.isoformat(),
                         "ended_at": (at + timedelta(minutes=20)).isoformat(), "status": "completed",
                         "duration_minutes": 20.0}
                    )  # fmt: skip
                items.append(
                    {"marker_id": f"{run_id}-c{client}-m{marker_no}", "session_id": session_id, "player_id": player,
                     "type": "skill_acquired", "description": "Completed a guided breathing exercise",
                     "achieved_at": (at + timedelta(minutes=5 + m % 10)).isoformat(), "therapeutic_value": 0.5}
                )  # fmt: skip
                marker_no += 1
            batches.append(json.dumps({"sessions": sessions, "markers": items}).encode())
            del b
        return batches

    def _run(self, port, token, clinic, size, n_clients, markers, fresh_timeout) -> Run:
        run = Run(size, n_clients)
        total = max(size, (markers // 10) if size == 1 else markers)
        per_client = max(1, total // size // n_clients)
        run_id = f"r{size}x{n_clients}"
        work = [self._batches(run_id, c, size, per_client) for c in range(n_clients)]
        lock = threading.Lock()

        def client(batches: list[bytes]) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            for body in batches:
                began = time.perf_counter()
                conn.request("POST", "/api/v1/ingest", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                elapsed = time.perf_counter() - began
                with lock:
                    run.latencies.append(elapsed)
                    if response.status >= 300:
                        run.errors.append(str(response.status))
            conn.close()

        threads = [threading.Thread(target=client, args=(batches,)) for batches in work]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        run.seconds = time.perf_counter() - began
        run.markers = size * per_client * n_clients
        ended = time.perf_counter()
        stale = Patient.objects.filter(clinic=clinic).stale_analytics()
        while stale.exists() and time.perf_counter() - ended < fresh_timeout:
            time.sleep(0.05)
        run.fresh_after = time.perf_counter() - ended if not stale.exists() else float("inf")
        run.copy_per_second = self._copy_limit(clinic, [b for batches in work for b in batches])
        return run

    # ----- the limit: the same rows by COPY ---------------------------------------------------------

    def _copy_limit(self, clinic: Clinic, bodies: list[bytes]) -> float:
        """Markers/s of COPY writing the same sessions and markers into the same tables (a scratch clinic
        with the same players), measured now; the scratch rows are removed."""
        scratch = Clinic.objects.create(slug=LIMIT_CLINIC, name="COPY limit", timezone="Europe/London")
        try:
            batches = [json.loads(body) for body in bodies]
            players = sorted({s["player_id"] for b in batches for s in b["sessions"]})
            now = datetime.now(UTC)
            Patient.objects.bulk_create(Patient(clinic=scratch, player_id=p, data_changed_at=now) for p in players)
            patient_ids = dict(Patient.objects.filter(clinic=scratch).values_list("player_id", "pk"))
            sessions = io.StringIO()
            for b in batches:
                for s in b["sessions"]:
                    sessions.write(
                        f"{scratch.pk}\t{patient_ids[s['player_id']]}\t{s['session_id']}\t{s['started_at']}\t"
                        f"{s['ended_at']}\tcompleted\t20.0\t\t\t[]\t0\t[]\t{now.isoformat()}\t{now.isoformat()}\n"
                    )
            began = time.perf_counter()
            with transaction.atomic(), connection.cursor() as cursor:
                columns = (
                    "clinic_id, patient_id, session_id, started_at, ended_at, status, duration_minutes, world, "
                    "character, approaches, interventions_count, key_achievements, received_at, updated_at"
                )
                with cursor.copy(f"COPY tracking_therapysession ({columns}) FROM STDIN") as copy:
                    copy.write(sessions.getvalue())
                cursor.execute("SELECT session_id, id FROM tracking_therapysession WHERE clinic_id = %s", [scratch.pk])
                session_ids = dict(cursor.fetchall())
                markers = io.StringIO()
                count = 0
                for b in batches:
                    for m in b["markers"]:
                        markers.write(
                            f"{scratch.pk}\t{patient_ids[m['player_id']]}\t{session_ids[m['session_id']]}\t"
                            f"{m['marker_id']}\tskill_acquired\t{m['description']}\t{m['achieved_at']}\t0.5\t\t"
                            f"{now.isoformat()}\n"
                        )
                        count += 1
                columns = (
                    "clinic_id, patient_id, session_id, marker_id, type, description, achieved_at, "
                    "therapeutic_value, related_goal_id, received_at"
                )
                with cursor.copy(f"COPY tracking_progressmarker ({columns}) FROM STDIN") as copy:
                    copy.write(markers.getvalue())
            return count / (time.perf_counter() - began)
        finally:
            self._remove(Clinic.objects.filter(slug=LIMIT_CLINIC))

    # ----- output and cleaning ----------------------------------------------------------------------

    def _report(self, run: Run) -> None:
        ms = [x * 1000 for x in run.latencies]
        ratio = run.copy_per_second / run.per_second if run.per_second else float("inf")
        self.stdout.write(
            f"batch {run.size:>5,} × {run.clients} client{'s' if run.clients > 1 else ' '}: "
            f"{run.per_second:>8,.0f} markers/s  p50 {statistics.median(ms):7.1f} ms  "
            f"p95 {percentile(ms, 0.95):7.1f} ms  "
            f"p99 {percentile(ms, 0.99):7.1f} ms  fresh {run.fresh_after:5.1f} s after the load  "
            f"COPY {run.copy_per_second:>8,.0f} markers/s  ratio {ratio:5.1f}×"
            + (f"  ERRORS {len(run.errors)}: {sorted(set(run.errors))}" if run.errors else "")
        )
        self.stdout.flush()

    def _clear(self) -> None:
        self._remove(Clinic.objects.filter(slug__in=[CLINIC, LIMIT_CLINIC]))

    def _remove(self, clinics) -> None:
        """Everything of these clinics but their audit chains (append-only: a trigger refuses deletes)."""
        ids = list(clinics.values_list("pk", flat=True))
        if not ids:
            return
        models = (
            ProgressHighlight, Milestone, Recommendation, ProgressSummary, MeasureStatus, Alert, OutcomeResponse,
            ProgressMarker, TherapySession,
        )  # fmt: skip
        with transaction.atomic(), skipping_row_history([*models, Patient]):
            WebhookDelivery.objects.filter(highlight__patient__clinic_id__in=ids).delete()
            for model in models:
                model.objects.filter(patient__clinic_id__in=ids).delete()
            Patient.objects.filter(clinic_id__in=ids).delete()
            IngestToken.objects.filter(clinic_id__in=ids).delete()
            TrajectoryReference.objects.filter(clinic_id__in=ids).delete()
            Clinic.objects.filter(pk__in=ids).delete()
        # What was removed, vacuumed as autovacuum would (off or late on this machine, FINDINGS): the rows
        # left dead made every later run slower, its COPY limit too (18,000 markers/s down to 14,000).
        if not connection.in_atomic_block:
            refresh_statistics([*models, PatientDay, Patient], vacuum=True)
