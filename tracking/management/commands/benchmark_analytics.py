"""Benchmark of the progress service on the current database (run it on the seed_demo cohort):

    DATABASE_URL=postgres://... manage.py seed_demo --patients 10000 --days 365
    DATABASE_URL=postgres://... manage.py benchmark_analytics

Reports p50/p95 of the four operations for the patient with the most sessions, beside the physical limit
of the same reads: the hand-written SQL of what the rules need (per-day counts, minutes and first start,
marker counts by type and in the recent windows, the N-th moments of the count milestones), run through
the same connection; then the throughput of a full-cohort recompute with one process per core, beside its
limit: the same reads for every group of 200 patients, written by hand, and the computed-at stamp every
recompute writes, in the same processes. It writes (summaries, milestones), like the real thing.
"""

import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, connections, transaction
from django.db.models import Count
from django.utils import timezone

from reports.models import Alert
from tracking import analytics, history, recompute
from tracking.management.commands._base import percentile, refresh_statistics
from tracking.models import (
    Clinic,
    Milestone,
    Patient,
    PatientDay,
    ProgressHighlight,
    ProgressMarker,
    ProgressSummary,
    Recommendation,
    TherapySession,
)

# What the rules of one patient need, written by hand: the floor under compute_progress_summary's reads.
LIMIT_SQL = (
    """SELECT (started_at AT TIME ZONE %(tz)s)::date AS d, count(*), sum(duration_minutes), min(started_at)
    FROM tracking_therapysession WHERE patient_id = %(pid)s GROUP BY d ORDER BY d""",
    """SELECT type, count(*), count(*) FILTER (WHERE achieved_at >= %(recent)s AND achieved_at < %(end)s),
        count(*) FILTER (WHERE achieved_at >= %(week)s AND achieved_at < %(end)s)
    FROM tracking_progressmarker WHERE patient_id = %(pid)s GROUP BY type""",
    """SELECT started_at FROM tracking_therapysession WHERE patient_id = %(pid)s
    ORDER BY started_at, id LIMIT %(sessions)s""",
    """SELECT achieved_at FROM tracking_progressmarker WHERE patient_id = %(pid)s AND type = 'skill_acquired'
    ORDER BY achieved_at, id LIMIT %(skills)s""",
    """SELECT achieved_at FROM tracking_progressmarker WHERE patient_id = %(pid)s AND type = 'breakthrough'
    ORDER BY achieved_at, id LIMIT %(breakthroughs)s""",
)


def _limit_params(subject: Patient) -> dict:
    tz = subject.tz_name
    today = history.local_today(tz)
    rules = history.milestone_rules_for(subject.clinic)
    return {
        "tz": tz,
        "pid": subject.pk,
        "recent": history.local_midnight(today - timedelta(days=13), tz),
        "week": history.local_midnight(today - timedelta(days=6), tz),
        "end": history.local_midnight(today + timedelta(days=1), tz),
        **{
            family: max(analytics.thresholds_for(rules, family), default=0)
            for family in ("sessions", "skills", "breakthroughs")
        },
    }


LONG_PATIENT = "bench-20k"  # DESIGN's 20,000-session patient
LONG_SESSIONS = 20_000
LONG_EVERY_MINUTES = 52  # 20,000 sessions over about two years
LONG_MARKER_EVERY = 4
LONG_MARKER_TYPES = ("skill_acquired", "breakthrough", "insight", "milestone", "goal_achieved")


def _long_patient() -> str:
    """The player id of the 20,000-session patient, added to the first clinic if it is not there yet."""
    if not Patient.objects.filter(player_id=LONG_PATIENT).exists():
        clinic = Clinic.objects.order_by("pk").first()
        if clinic is None:
            raise CommandError("No clinic to add the long patient to: run seed_demo first.")
        with transaction.atomic():
            patient = Patient.objects.create(clinic=clinic, player_id=LONG_PATIENT)
            start = timezone.now().replace(microsecond=0) - timedelta(minutes=LONG_EVERY_MINUTES * LONG_SESSIONS)
            sessions = TherapySession.objects.bulk_create(
                [
                    TherapySession(
                        clinic=clinic,
                        patient=patient,
                        session_id=f"{LONG_PATIENT}-{i}",
                        started_at=start + timedelta(minutes=LONG_EVERY_MINUTES * i),
                        ended_at=start + timedelta(minutes=LONG_EVERY_MINUTES * i + 20),
                        status="completed",
                        duration_minutes=20.0,
                    )
                    for i in range(LONG_SESSIONS)
                ],
                batch_size=2000,
            )
            ProgressMarker.objects.bulk_create(
                [
                    ProgressMarker(
                        clinic=clinic,
                        patient=patient,
                        session=session,
                        marker_id=f"{LONG_PATIENT}-m-{i}",
                        type=LONG_MARKER_TYPES[i % len(LONG_MARKER_TYPES)],
                        achieved_at=session.started_at + timedelta(minutes=5),
                        therapeutic_value=0.5,
                    )
                    for i, session in enumerate(sessions[::LONG_MARKER_EVERY])
                ],
                batch_size=2000,
            )
        refresh_statistics([TherapySession, ProgressMarker, PatientDay])
    return LONG_PATIENT


def _hand_written_reads(params: dict) -> None:
    with connection.cursor() as cursor:
        for sql in LIMIT_SQL:
            cursor.execute(sql, params)
            cursor.fetchall()


# The tables a recompute writes. The first recompute after seed_demo fills the derived tables from nothing, and
# every recompute (and its limit) rewrites each patient's row: 20,000 dead rows a run. Where autovacuum is
# off or late (FINDINGS), the planner went on estimating the derived tables empty and read a group's
# milestones with a sequential scan of every patient's (11 ms a group of 200 instead of 0.4), and the
# patients' table grew to 25 times its size in a dozen runs, each slower than the last. They are vacuumed
# and analyzed before each round of the cohort is timed, as autovacuum would have done by then.
RECOMPUTE_TABLES = (Patient, Milestone, ProgressHighlight, ProgressSummary, Recommendation, Alert)

CHUNK = 200  # patients per recompute (one transaction, a fixed number of queries)

# The full-cohort limit, per group of CHUNK patients in one transaction: what the rules read, written by
# hand (each patient's days in its own time zone, marker counts by type and in the recent windows), and
# the one write every recompute makes (the patients' computed-at stamp).
GROUP_LIMIT_SQL = (
    """SELECT s.patient_id, (s.started_at AT TIME ZONE COALESCE(NULLIF(p.timezone, ''), c.timezone))::date AS d,
        count(*), sum(s.duration_minutes), min(s.started_at)
    FROM tracking_therapysession s JOIN tracking_patient p ON p.id = s.patient_id
    JOIN tracking_clinic c ON c.id = p.clinic_id
    WHERE s.patient_id = ANY(%(ids)s) GROUP BY s.patient_id, d ORDER BY s.patient_id, d""",
    """SELECT patient_id, type, count(*), count(*) FILTER (WHERE achieved_at >= %(recent)s),
        count(*) FILTER (WHERE achieved_at >= %(week)s)
    FROM tracking_progressmarker WHERE patient_id = ANY(%(ids)s) GROUP BY patient_id, type""",
    "UPDATE tracking_patient SET analytics_computed_at = now() WHERE id = ANY(%(ids)s)",
)


def _recompute_chunk(ids: list[int]) -> int:
    connections.close_all()  # each process opens its own connection
    done = sum(recompute.patients_recompute(ids[i : i + CHUNK]) for i in range(0, len(ids), CHUNK))
    connections.close_all()
    return done


def _limit_chunk(ids: list[int]) -> int:
    connections.close_all()
    now = datetime.now(UTC)
    for i in range(0, len(ids), CHUNK):
        params = {"ids": ids[i : i + CHUNK], "recent": now - timedelta(days=14), "week": now - timedelta(days=7)}
        with transaction.atomic(), connection.cursor() as cursor:
            for sql in GROUP_LIMIT_SQL:
                cursor.execute(sql, params)
                if cursor.description:
                    cursor.fetchall()
    connections.close_all()
    return len(ids)


def _in_processes(work, chunks: list[list[int]]) -> tuple[int, float]:
    """(patients done, seconds) of `work` over the chunks, one process each. The connection pools are
    closed first: a forked process must open its own (a pool's connections and threads do not survive a
    fork; the children used the parent's sockets, and their transactions failed)."""
    for conn in connections.all():
        conn.close()
        if hasattr(conn, "close_pool"):
            conn.close_pool()
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=len(chunks)) as pool:
        done = sum(pool.map(work, chunks))
    return done, time.perf_counter() - started


class Command(BaseCommand):
    help = "Time the four progress operations and a full-cohort recompute (see the module docstring)."

    def add_arguments(self, parser):
        parser.add_argument("--iterations", type=int, default=200)
        parser.add_argument("--patient", help="player id (default: the patient with the most sessions)")
        parser.add_argument(
            "--long-patient",
            action="store_true",
            help=f"measure {LONG_PATIENT} (made first if missing): {LONG_SESSIONS:,} sessions, one every "
            f"{LONG_EVERY_MINUTES} minutes up to now, and a marker every {LONG_MARKER_EVERY} sessions",
        )
        parser.add_argument("--cohort", type=int, default=None, help="patients to recompute (default: all)")
        parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
        parser.add_argument("--rounds", type=int, default=2, help="full-cohort runs, each beside its limit")

    def handle(self, *args, iterations, patient, long_patient, cohort, processes, rounds, **options):
        if connection.vendor != "postgresql":  # before any work (the long patient is 25,000 rows)
            raise CommandError("The hand-written limit is PostgreSQL SQL: run this on PostgreSQL.")
        if long_patient:
            patient = _long_patient()
        if patient:
            subject = Patient.objects.select_related("clinic").filter(player_id=patient).first()
        else:
            subject = Patient.objects.select_related("clinic").annotate(n=Count("sessions")).order_by("-n").first()
        if subject is None:
            raise CommandError("No patient to measure: run seed_demo first.")
        sessions = subject.sessions.count()
        self.stdout.write(f"patient {subject.player_id}: {sessions} sessions, {subject.markers.count()} markers")
        recompute.patient_recompute(subject.pk)  # warm up: caches, connection, stored state
        params = _limit_params(subject)
        operations = {
            "limit: hand-written SQL reads": lambda: _hand_written_reads(params),
            "compute_progress_summary": lambda: recompute.compute_progress_summary(subject),
            "detect_and_update_milestones": lambda: recompute.detect_and_update_milestones(subject),
            "generate_progress_insights": lambda: recompute.generate_progress_insights(subject),
            "get_visualization_data(days=90)": lambda: recompute.get_visualization_data(subject, days=90),
        }
        # Interleaved: each round runs every operation once, so that a change in the machine's speed
        # during the run (a neighbour, CPU steal) moves the limit and the operations alike.
        samples: dict[str, list[float]] = {name: [] for name in operations}
        for _ in range(iterations):
            for name, operation in operations.items():
                started = time.perf_counter()
                operation()
                samples[name].append((time.perf_counter() - started) * 1000)
        medians = {name: statistics.median(times) for name, times in samples.items()}
        for name, times in samples.items():
            self.stdout.write(
                f"{name:34} p50 {medians[name]:6.2f} ms   p95 {percentile(times, 0.95):6.2f} ms"
                f"   (n={iterations}, target p95 <= 20 ms)"
            )

        limit = medians["limit: hand-written SQL reads"]
        self.stdout.write(
            f"compute_progress_summary / limit: {medians['compute_progress_summary'] / limit:.1f}x (p50 against p50, "
            "target <= 2x)"
        )

        ids = list(Patient.objects.order_by("pk").values_list("pk", flat=True)[:cohort])
        chunks = [ids[i::processes] for i in range(processes)]
        # In rounds, each the recompute then its limit: the first round also reads into memory what the
        # machine evicted meanwhile (the two read different tables), so each round is printed.
        for round_number in range(1, rounds + 1):
            refresh_statistics(RECOMPUTE_TABLES, vacuum=True)
            done, elapsed = _in_processes(_recompute_chunk, chunks)
            limit_done, limit_elapsed = _in_processes(_limit_chunk, chunks)
            rate, limit_rate = done / elapsed, limit_done / limit_elapsed
            self.stdout.write(
                f"round {round_number}: full-cohort recompute: {done} patients in {elapsed:.1f} s = {rate:.0f} "
                f"patients/s with {processes} processes (target >= 1,500/s on 2)"
            )
            self.stdout.write(
                f"round {round_number}: limit: the same reads and stamp by hand, same processes: "
                f"{limit_rate:.0f} patients/s; ratio {limit_rate / rate:.1f}x"
            )
