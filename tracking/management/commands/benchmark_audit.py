"""Benchmark of the audit log on the current database (PostgreSQL): how long `verify_audit_log` takes on a
chain of N events, and what auditing costs ingest, batches of 1 and of 100 items, with the audit event
and without it (the same batches, interleaved runs).

    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/progress_bench REDIS_URL=redis://127.0.0.1:6379/14
    python manage.py migrate
    python manage.py benchmark_audit --events 1000000

The chain is written with COPY into a chain of its own (`bench-audit`), dated 7 years ago, so that the
trigger lets the command delete it afterwards as retention would (`--batches 0` skips the ingest part).
"""

import contextlib
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from unittest import mock

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.utils import timezone

from tracking import audit, ingest
from tracking.models import AuditChainHead, AuditEvent, Clinic, Patient

CHAIN = "bench-audit"


class Command(BaseCommand):
    help = "Time audit verification on N events, and ingest with and without its audit event."

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=1_000_000)
        parser.add_argument("--batches", type=int, default=200, help="ingest batches per size and mode")

    def handle(self, *args, events: int, batches: int, **options):
        if connection.vendor != "postgresql":
            raise CommandError("benchmark_audit needs PostgreSQL (set DATABASE_URL).")
        if batches and settings.CELERY_TASK_ALWAYS_EAGER:
            raise CommandError("Set REDIS_URL: with tasks in-process, each batch's recompute would be timed too.")
        self._clear()
        started = time.perf_counter()
        self._write_chain(events)
        self.stdout.write(f"wrote {events:,} chained events in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        result = audit.verify_chain(CHAIN)
        seconds = time.perf_counter() - started
        status = "intact" if result.broken is None else str(result.broken)
        self.stdout.write(f"verify_audit_log on {result.events:,} events: {seconds:.1f} s ({status}); target < 30 s")
        self._clear()
        if batches:
            self._ingest(batches)

    # ----- verification --------------------------------------------------------------------------

    def _write_chain(self, count: int) -> None:
        base = datetime.now(UTC) - timedelta(days=7 * 365)
        prev = audit.ZERO_HASH
        columns = [f.column for f in AuditEvent._meta.concrete_fields if f.column != "id"]
        with (
            connection.cursor() as cursor,
            cursor.connection.cursor().copy(f"COPY audit_event ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for seq in range(1, count + 1):
                event = AuditEvent(
                    chain=CHAIN,
                    seq=seq,
                    at=base + timedelta(milliseconds=seq),
                    actor=f"therapist.{seq % 40}",
                    role="therapist",
                    action="patient.read",
                    patients=[f"p-{seq % 5000}"],
                    object="",
                    detail={"n": seq % 7},
                    ip="10.0.0.1",
                    outcome="ok",
                    prev_hash=prev,
                )
                event.hash = audit.chain_hash(prev, audit.event_fields(event))
                prev = event.hash
                copy.write_row(
                    [
                        _copy_value(getattr(event, f.attname))
                        for f in AuditEvent._meta.concrete_fields
                        if f.column != "id"
                    ]
                )
        AuditChainHead.objects.update_or_create(chain=CHAIN, defaults={"seq": count, "hash": prev})
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE audit_event")

    def _clear(self) -> None:
        AuditEvent.objects.filter(chain=CHAIN).delete()  # dated 7 years ago: the trigger allows it
        AuditChainHead.objects.filter(chain=CHAIN).delete()

    # ----- ingest --------------------------------------------------------------------------------

    def _ingest(self, batches: int) -> None:
        clinic, _ = Clinic.objects.get_or_create(slug="bench-ingest", defaults={"name": "Ingest benchmark"})
        for size in (1, 100):
            self._ingest_run(clinic, size, batches, audited=True)  # warm up: connection, caches, patients
            runs: dict[str, list[float]] = {"audit on": [], "audit off": [], "no row history": []}
            for _ in range(3):  # interleaved, so a busy moment of the machine hits every mode alike
                for mode in runs:
                    with _row_history_triggers(enabled=mode != "no row history"):
                        seconds = self._ingest_run(clinic, size, batches, audited=mode != "audit off")
                    runs[mode].append(size * batches / seconds)
            rates = {mode: statistics.median(values) for mode, values in runs.items()}
            self.stdout.write(
                f"ingest, batches of {size}: the row-history triggers (pghistory) cost "
                f"{1 - rates['audit on'] / rates['no row history']:.0%} "
                f"({rates['no row history']:,.0f} items/s without them)"
            )
            ratio = rates["audit on"] / rates["audit off"]
            self.stdout.write(
                f"ingest, batches of {size}: {rates['audit on']:,.0f} items/s audited, "
                f"{rates['audit off']:,.0f} items/s without: {ratio:.0%} (target ≥ 80%)"
            )
        Patient.objects.filter(clinic=clinic).delete()

    def _ingest_run(self, clinic: Clinic, size: int, batches: int, *, audited: bool) -> float:
        stamp = time.time_ns()
        now = timezone.now() - timedelta(hours=1)
        plans = [
            {
                "sessions": [
                    {
                        "session_id": f"s-{stamp}-{b}-{i}",
                        "player_id": f"bench-{(b * size + i) % 500}",
                        "started_at": now,
                        "ended_at": None,
                        "status": "completed",
                        "duration_minutes": 20.0,
                        "world": "",
                        "character": "",
                        "approaches": [],
                        "interventions_count": 0,
                        "key_achievements": [],
                        "_index": i,
                    }
                    for i in range(size)
                ],
                "markers": [],
                "outcomes": [],
                "alerts": [],
            }
            for b in range(batches)
        ]
        patch = mock.patch.object(audit, "audit_record", lambda **kwargs: None) if not audited else None
        started = time.perf_counter()
        if patch:
            patch.start()
        try:
            for items in plans:
                ingest.ingest_batch(clinic=clinic, items=items, token_name="bench")  # noqa: S106 (a name)
        finally:
            if patch:
                patch.stop()
        return time.perf_counter() - started


@contextlib.contextmanager
def _row_history_triggers(*, enabled: bool):
    """With `enabled=False`, this connection's triggers are off (`session_replication_role = replica`,
    superuser only): what ingest would cost without django-pghistory's row history."""
    if enabled:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = origin")


def _copy_value(value):
    """A value as COPY's Python-side row expects it: JSON columns as JSON text."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return value
