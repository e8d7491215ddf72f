"""Benchmark of the progress service on the current database (run it on the seed_demo cohort):

    DATABASE_URL=postgres://... manage.py seed_demo --patients 10000 --days 365
    DATABASE_URL=postgres://... manage.py benchmark_analytics

Reports p50/p95 of the four operations for the patient with the most sessions, and the throughput of a
full-cohort recompute with one process per core. It writes (summaries, milestones), like the real thing.
"""

import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.db.models import Count

from tracking import recompute
from tracking.models import Patient


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


CHUNK = 200  # patients per recompute (one transaction, a fixed number of queries)


def _recompute_chunk(ids: list[int]) -> int:
    connections.close_all()  # each process opens its own connection
    done = sum(recompute.patients_recompute(ids[i : i + CHUNK]) for i in range(0, len(ids), CHUNK))
    connections.close_all()
    return done


class Command(BaseCommand):
    help = "Time the four progress operations and a full-cohort recompute (see the module docstring)."

    def add_arguments(self, parser):
        parser.add_argument("--iterations", type=int, default=200)
        parser.add_argument("--patient", help="player id (default: the patient with the most sessions)")
        parser.add_argument("--cohort", type=int, default=None, help="patients to recompute (default: all)")
        parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)

    def handle(self, *args, iterations, patient, cohort, processes, **options):
        if patient:
            subject = Patient.objects.select_related("clinic").filter(player_id=patient).first()
        else:
            subject = Patient.objects.select_related("clinic").annotate(n=Count("sessions")).order_by("-n").first()
        if subject is None:
            raise CommandError("No patient to measure: run seed_demo first.")
        sessions = subject.sessions.count()
        self.stdout.write(f"patient {subject.player_id}: {sessions} sessions, {subject.markers.count()} markers")
        recompute.patient_recompute(subject.pk)  # warm up: caches, connection, stored state
        operations = {
            "compute_progress_summary": lambda: recompute.compute_progress_summary(subject),
            "detect_and_update_milestones": lambda: recompute.detect_and_update_milestones(subject),
            "generate_progress_insights": lambda: recompute.generate_progress_insights(subject),
            "get_visualization_data(days=90)": lambda: recompute.get_visualization_data(subject, days=90),
        }
        for name, operation in operations.items():
            samples = []
            for _ in range(iterations):
                started = time.perf_counter()
                operation()
                samples.append((time.perf_counter() - started) * 1000)
            self.stdout.write(
                f"{name:34} p50 {statistics.median(samples):6.2f} ms   p95 {_percentile(samples, 0.95):6.2f} ms"
                f"   (n={iterations}, target p95 <= 20 ms)"
            )

        ids = list(Patient.objects.order_by("pk").values_list("pk", flat=True)[:cohort])
        chunks = [ids[i::processes] for i in range(processes)]
        connections.close_all()
        started = time.perf_counter()
        with ProcessPoolExecutor(max_workers=processes) as pool:
            done = sum(pool.map(_recompute_chunk, chunks))
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"full-cohort recompute: {done} patients in {elapsed:.1f} s = {done / elapsed:.0f} patients/s "
            f"with {processes} processes (target >= 200/s)"
        )
