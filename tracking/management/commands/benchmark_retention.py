"""Benchmark of retention on the current database (PostgreSQL): one run over N expired sessions (with a
marker for every tenth), while a second connection ingests a session a tenth of a second apart into the
same clinic and the same patients. Reports how long the run took, how many transactions it used, the
longest of them (a bound on how long it held any lock), and the slowest ingest during the run.

    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/progress_ret_bench
    python manage.py migrate
    python manage.py benchmark_retention --sessions 1000000

The rows are written by one INSERT ... SELECT generate_series into a clinic of their own
(`bench-retention-<n>`). The recompute the run asks for afterwards goes to Celery in production and is
not part of the run: here the signal is not sent.
"""

import statistics
import threading
import time
from datetime import timedelta
from unittest import mock

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, connections
from django.utils import timezone

from tracking import ingest, retention
from tracking.models import Clinic, Patient, ProgressMarker, RetentionPolicy, TherapySession


class Command(BaseCommand):
    help = "Time one retention run over N expired sessions while ingest goes on."

    def add_arguments(self, parser):
        parser.add_argument("--sessions", type=int, default=1_000_000)
        parser.add_argument("--patients", type=int, default=1000)

    def handle(self, *args, sessions: int, patients: int, **options):
        if connection.vendor != "postgresql":
            raise CommandError("benchmark_retention needs PostgreSQL (set DATABASE_URL).")
        stamp = time.time_ns()
        clinic = Clinic.objects.create(slug=f"bench-retention-{stamp}", name="Retention benchmark")
        Patient.objects.bulk_create([Patient(clinic=clinic, player_id=f"bench-{i}") for i in range(patients)])
        first_patient = Patient.objects.filter(clinic=clinic).order_by("pk").values_list("pk", flat=True).first()
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO tracking_therapysession (clinic_id, patient_id, session_id, started_at, ended_at, status,
                    duration_minutes, world, character, approaches, interventions_count, key_achievements,
                    received_at, updated_at)
                SELECT %s, %s + (g %% %s), 'bench-s-' || g, now() - interval '800 days' + g * interval '1 second',
                    NULL, 'completed', 20, '', '', '[]'::jsonb, 0, '[]'::jsonb, now(), now()
                FROM generate_series(1, %s) AS g
                """,
                [clinic.pk, first_patient, patients, sessions],
            )
            cursor.execute(
                """
                INSERT INTO tracking_progressmarker (clinic_id, patient_id, session_id, marker_id, type, description,
                    achieved_at, therapeutic_value, related_goal_id, received_at)
                SELECT clinic_id, patient_id, id, 'bench-m-' || id, 'skill_acquired', '', started_at, 0.5, '', now()
                FROM tracking_therapysession WHERE clinic_id = %s AND id %% 10 = 0
                """,
                [clinic.pk],
            )
            cursor.execute("ANALYZE tracking_therapysession")
            cursor.execute("ANALYZE tracking_progressmarker")
        markers = ProgressMarker.objects.filter(clinic=clinic).count()
        self.stdout.write(
            f"wrote {sessions:,} expired sessions and {markers:,} markers in {time.perf_counter() - started:.1f} s"
        )
        RetentionPolicy.objects.create(clinic=clinic, category="activity", days=365)

        latencies: list[float] = []
        stop = threading.Event()
        ingester = threading.Thread(target=self._ingest_loop, args=(clinic, patients, stop, latencies))
        ingester.start()
        try:
            started = time.perf_counter()
            with mock.patch.object(retention, "send_on_commit"):
                run = retention.enforce_clinic(clinic)
            elapsed = time.perf_counter() - started
        finally:
            stop.set()
            ingester.join()
        left = TherapySession.objects.filter(clinic=clinic, started_at__lt=timezone.now() - timedelta(days=365))
        self.stdout.write(
            f"retention run: {run.counts['activity']:,} sessions removed in {elapsed:.1f} s "
            f"({run.counts['activity'] / elapsed:,.0f} sessions/s), {run.batches} transactions, "
            f"longest {run.max_batch_seconds * 1000:.0f} ms; {left.count()} expired sessions left"
        )
        timings = sorted(retention.BATCH_SECONDS)
        slowest = sorted(range(len(retention.BATCH_SECONDS)), key=lambda i: -retention.BATCH_SECONDS[i])[:3]
        self.stdout.write(
            f"transactions: median {statistics.median(timings) * 1000:.0f} ms, "
            f"p99 {timings[int(len(timings) * 0.99)] * 1000:.0f} ms, slowest at positions {slowest} of {len(timings)}"
        )
        if latencies:
            median = statistics.median(latencies) * 1000
            self.stdout.write(
                f"ingest during the run: {len(latencies)} batches, median {median:.0f} ms, "
                f"slowest {max(latencies) * 1000:.0f} ms"
            )

    def _ingest_loop(self, clinic: Clinic, patients: int, stop: threading.Event, latencies: list[float]) -> None:
        try:
            n = 0
            while not stop.is_set():
                n += 1
                item = {
                    "session_id": f"bench-live-{n}",
                    "player_id": f"bench-{n % patients}",
                    "started_at": timezone.now(),
                    "ended_at": None,
                    "status": "active",
                    "duration_minutes": 5.0,
                    "world": "",
                    "character": "",
                    "approaches": [],
                    "interventions_count": 0,
                    "key_achievements": [],
                    "_index": 0,
                }
                started = time.perf_counter()
                with mock.patch.object(ingest, "send_on_commit"):
                    ingest.ingest_batch(
                        clinic=clinic,
                        items={"sessions": [item], "markers": [], "outcomes": [], "alerts": []},
                        token_name="bench",  # noqa: S106 (a name)
                    )
                latencies.append(time.perf_counter() - started)
                stop.wait(0.1)
        finally:
            connections.close_all()
