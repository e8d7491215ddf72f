"""`manage.py seed_demo`: two demo clinics with staff, patients and months of plausible activity."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, models, transaction
from django.utils import timezone

from reports import expected_recovery
from reports.alerts import deterioration_alerts
from reports.models import Alert, AlertSeverity, OutcomeResponse
from reports.notes import note_create
from tracking import audit
from tracking.demo import CLINICS, Batch, Context, generate_batches, plan_patients
from tracking.fields import encrypt
from tracking.management.commands._base import refresh_statistics
from tracking.models import (
    AuditAction,
    AuditEvent,
    AuditOutcome,
    BreakGlassGrant,
    CareAssignment,
    Clinic,
    Membership,
    Patient,
    ProgressMarker,
    Role,
    TherapySession,
)

DEFAULT_PASSWORD = "demo-password-2026"  # noqa: S105 - a published demo password, overridable by env
BATCH_PATIENTS = 100  # patients per batch (one transaction each)
WRITER_THREADS = max(2, min(4, os.cpu_count() or 1))  # concurrent batches on PostgreSQL


class Command(BaseCommand):
    help = (
        "Create two demo clinics (northside, riverside), each with 2 therapists, a clinic admin and an "
        "auditor, and patients with sessions, progress markers, PHQ-9/GAD-7 responses and alerts. The data "
        "is a function of --seed, the size and today's date (today's events stop at the current time). "
        "Idempotent: while the demo clinics exist it changes nothing and says so; --reset deletes the two "
        "demo clinics and all their data first and seeds them again (the demo users are kept and updated). "
        "Every demo login has the password $DEMO_PASSWORD (default 'demo-password-2026'). On PostgreSQL "
        "rows are streamed with COPY (10,000 patients x 365 days in minutes); elsewhere with bulk_create. "
        "Each batch of 100 patients is its own transaction: after a failed run, run again with --reset."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--patients", type=int, default=64, help="Number of patients (default 64).")
        parser.add_argument("--days", type=int, default=120, help="Days of history ending today (default 120).")
        parser.add_argument("--seed", type=int, default=42, help="Random seed (default 42).")
        parser.add_argument("--reset", action="store_true", help="Delete the demo clinics and their data first.")
        parser.add_argument(
            "--writer",
            choices=("auto", "copy", "orm"),
            default="auto",
            help="How rows are written: COPY (PostgreSQL only), bulk_create, or auto (COPY on PostgreSQL).",
        )

    def handle(self, *args, patients: int, days: int, seed: int, reset: bool, writer: str, **options) -> None:
        if patients < 1:
            raise CommandError("--patients must be at least 1.")
        if not 1 <= days <= 3650:
            raise CommandError("--days must be between 1 and 3650.")
        if writer == "copy" and connection.vendor != "postgresql":
            raise CommandError("--writer copy needs PostgreSQL.")
        use_copy = writer == "copy" or (writer == "auto" and connection.vendor == "postgresql")
        password = os.environ.get("DEMO_PASSWORD") or DEFAULT_PASSWORD
        slugs = [c.slug for c in CLINICS]
        started = time.monotonic()

        if reset:
            if reset_demo_clinics(slugs):
                self.stderr.write(f"seed_demo: deleted the demo clinics ({time.monotonic() - started:.1f} s)")
        elif Clinic.objects.filter(slug__in=slugs).exists():
            self.stdout.write("The demo clinics already exist: nothing changed (use --reset to seed them again).")
            self._print_logins(existing_logins(slugs), password)
            return

        now = timezone.now().replace(microsecond=0)
        clinic_ids, user_ids, logins = create_clinics_and_staff(make_password(password))
        ctx = Context(seed=seed, days=days, now=int(now.timestamp()), clinic_ids=clinic_ids, therapist_ids=user_ids)
        sink = CopyWriter(now) if use_copy else OrmWriter()
        # Concurrent batches need their own connections and transactions: not inside the caller's transaction
        # (a test's), and not on SQLite (one writer at a time).
        threads = 1 if connection.in_atomic_block or not use_copy else WRITER_THREADS
        totals = dict.fromkeys(("patients", "sessions", "markers", "responses", "alerts"), 0)
        plans = plan_patients(seed, patients)
        batches = generate_batches(plans, ctx, BATCH_PATIENTS)
        for batch in write_batches(batches, sink, threads):
            for name in totals:
                totals[name] += len(getattr(batch, name))
            if options["verbosity"] >= 1:
                self.stderr.write(
                    f"seed_demo: {totals['patients']:,}/{patients:,} patients, {totals['sessions']:,} sessions, "
                    f"{totals['markers']:,} markers, {totals['responses']:,} responses, "
                    f"{time.monotonic() - started:.1f} s"
                )

        refresh_statistics([Patient, CareAssignment, *_BULK_MODELS])  # for the queries that follow a bulk load
        # The seeded alerts are history: nobody is e-mailed about them, and urgent ones are not escalated
        # (marked in the transaction that raises them, so the e-mail tasks sent at its commit find them sent).
        with transaction.atomic():
            totals["alerts"] += raise_deterioration_alerts(clinic_ids.values())
            # Expected recovery (DESIGN §8): each clinic's references and its patients' not-on-track results.
            totals["alerts"] += sum(expected_recovery.clinic_refresh(pk) for pk in clinic_ids.values())
            seeded = Alert.objects.filter(clinic_id__in=list(clinic_ids.values()))
            seeded.update(notified_at=now)
            seeded.filter(severity=AlertSeverity.URGENT).update(escalated_at=now)
        seed_notes([plan for plan in plans if plan.stalled], now)
        audited = seed_audit_history(now)

        self.stdout.write(
            f"Seeded {totals['patients']:,} patients, {totals['sessions']:,} sessions, "
            f"{totals['markers']:,} progress markers, {totals['responses']:,} questionnaire responses and "
            f"{totals['alerts']:,} alerts over {days} days (seed {seed}) in {time.monotonic() - started:.1f} s."
        )
        if audited:
            self.stdout.write(f"Seeded {audited:,} audit events (three days of each clinic's log).")
        self._print_logins(logins, password)

    def _print_logins(self, logins: list[tuple[str, str, str]], password: str) -> None:
        self.stdout.write("\nDemo logins:")
        self.stdout.write(f"  {'username':<20} {'role':<14} {'clinic':<11} password")
        for username, role, slug in logins:
            self.stdout.write(f"  {username:<20} {role:<14} {slug:<11} {password}")


def write_batches(batches: Iterator[Batch], sink: OrmWriter | CopyWriter, threads: int) -> Iterator[Batch]:
    """Write each batch with `sink.write` (one transaction each) and yield it once written.

    With one thread, the next batch is generated in the background meanwhile. With more, batches are written
    concurrently, each worker thread on its own database connection: a batch holds its patients with all
    their rows, so batches are independent. The database is the bottleneck, and this keeps several of its
    processes busy."""
    if threads <= 1:
        for batch in prefetch(batches):
            sink.write(batch)
            yield batch
        return

    def write(batch: Batch) -> Batch:
        try:
            sink.write(batch)
            return batch
        finally:
            connection.close()  # this thread's connection

    pending: set[Future] = set()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="seed-demo-writer") as pool:
        try:
            for batch in batches:
                pending.add(pool.submit(write, batch))
                if len(pending) > threads:  # bounded: at most threads + 1 batches in memory
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (future.result() for future in finished)
            for future in as_completed(pending):
                yield future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def existing_logins(slugs: list[str]) -> list[tuple[str, str, str]]:
    memberships = Membership.objects.filter(clinic__slug__in=slugs).select_related("user", "clinic")
    return [(m.user.username, m.role, m.clinic.slug) for m in memberships.order_by("clinic__slug", "pk")]


# --- Clinics, staff, reset ------------------------------------------------------------------------------


@transaction.atomic
def create_clinics_and_staff(password_hash: str) -> tuple[dict[str, int], dict[str, int], list[tuple[str, str, str]]]:
    """The two clinics, and their staff with one shared (already hashed) password.
    Returns clinic ids by slug, user ids by username and (username, role, clinic slug) logins."""
    user_model = get_user_model()
    clinic_ids, user_ids, logins = {}, {}, []
    for demo in CLINICS:
        clinic = Clinic.objects.create(slug=demo.slug, name=demo.name, timezone=demo.timezone)
        clinic_ids[demo.slug] = clinic.pk
        staff = [(name, Role.THERAPIST) for name in demo.therapists]
        staff += [(demo.admin, Role.CLINIC_ADMIN), (demo.auditor, Role.AUDITOR)]
        for username, role in staff:
            user, _ = user_model.objects.update_or_create(
                username=username,
                defaults={
                    "password": password_hash,
                    "first_name": username.split(".", 1)[1].capitalize(),
                    "email": f"{username}@example.org",
                    "is_active": True,
                },
            )
            Membership.objects.create(user=user, clinic=clinic, role=role)
            user_ids[username] = user.pk
            logins.append((username, role.value, demo.slug))
    return clinic_ids, user_ids, logins


# The big tables, in an order that deletes what refers to a row before the row.
_BULK_MODELS = (Alert, OutcomeResponse, ProgressMarker, TherapySession)


@transaction.atomic
def reset_demo_clinics(slugs: list[str]) -> bool:
    """Delete the clinics `slugs` and everything in them. The big tables go with one DELETE each (the ORM
    would load millions of rows to cascade); the rest through the ORM, so other apps' models cascade."""
    clinic_ids = list(Clinic.objects.filter(slug__in=slugs).values_list("pk", flat=True))
    if not clinic_ids:
        return False
    with connection.cursor() as cursor:
        for model in _BULK_MODELS:
            _clear_references_to(model, clinic_ids)
            table = connection.ops.quote_name(model._meta.db_table)
            placeholders = ", ".join(["%s"] * len(clinic_ids))
            cursor.execute(f"DELETE FROM {table} WHERE clinic_id IN ({placeholders})", clinic_ids)  # noqa: S608
    try:
        Patient.objects.filter(clinic_id__in=clinic_ids).delete()
        Clinic.objects.filter(pk__in=clinic_ids).delete()
    except models.ProtectedError as error:
        raise CommandError(f"Cannot delete the demo clinics: {error.args[0]}") from error
    return True


def _clear_references_to(model: type[models.Model], clinic_ids: list[int]) -> None:
    """Apply on_delete for rows of models other than the big four that point at `model`'s rows."""
    for relation in model._meta.related_objects:
        if relation.related_model in _BULK_MODELS or relation.on_delete is models.DO_NOTHING:
            continue  # DO_NOTHING: unconstrained references that outlive the row (pghistory's row history)
        rows = relation.related_model._base_manager.filter(**{f"{relation.field.name}__clinic_id__in": clinic_ids})
        if relation.on_delete is models.SET_NULL:
            rows.update(**{relation.field.name: None})
        elif relation.on_delete is models.CASCADE:
            rows.delete()
        elif rows.exists():
            raise CommandError(f"Cannot delete the demo data: {relation.related_model.__name__} rows refer to it.")


# --- Writers ----------------------------------------------------------------------------------------------


def _aware(timestamp: int | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=UTC)


class OrmWriter:
    """Any database: bulk_create, one transaction per batch; ids come back from the inserts."""

    batch_size = 2000

    @transaction.atomic
    def write(self, batch: Batch) -> None:
        size, ts = self.batch_size, _aware
        patients = Patient.objects.bulk_create(
            [
                Patient(
                    clinic_id=c, player_id=p, timezone=tz, risk_flag=f, risk_flag_raised_at=ts(r), data_changed_at=ts(d)
                )
                for c, p, tz, f, r, d in batch.patients
            ],
            batch_size=size,
        )
        patient_ids = [p.pk for p in patients]
        CareAssignment.objects.bulk_create(
            [CareAssignment(patient_id=patient_ids[p], therapist_id=t) for p, t in batch.assignments], batch_size=size
        )

        def session(row: tuple) -> TherapySession:
            p, c, sid, start, end, status, minutes, world, character, approaches, interventions, achievements = row
            return TherapySession(
                patient_id=patient_ids[p],
                clinic_id=c,
                session_id=sid,
                started_at=ts(start),
                ended_at=ts(end),
                status=status,
                duration_minutes=minutes,
                world=world,
                character=character,
                approaches=list(approaches),
                interventions_count=interventions,
                key_achievements=list(achievements),
            )

        sessions = TherapySession.objects.bulk_create([session(row) for row in batch.sessions], batch_size=size)
        session_ids = [s.pk for s in sessions]
        ProgressMarker.objects.bulk_create(
            [
                ProgressMarker(
                    session_id=session_ids[s],
                    patient_id=patient_ids[p],
                    clinic_id=c,
                    marker_id=mid,
                    type=kind,
                    description=text,
                    achieved_at=ts(at),
                    therapeutic_value=value,
                    related_goal_id=goal,
                )
                for s, p, c, mid, kind, text, at, value, goal in batch.markers
            ],
            batch_size=size,
        )
        responses = OutcomeResponse.objects.bulk_create(
            [
                OutcomeResponse(
                    patient_id=patient_ids[p],
                    clinic_id=c,
                    response_id=rid,
                    instrument=instrument,
                    administered_at=ts(at),
                    total=total,
                    **OutcomeResponse.item_columns(list(items)),
                )
                for p, c, rid, instrument, at, total, items in batch.responses
            ],
            batch_size=size,
        )
        response_ids = [r.pk for r in responses]
        Alert.objects.bulk_create(
            [
                Alert(
                    patient_id=patient_ids[p],
                    clinic_id=c,
                    kind=kind,
                    severity=severity,
                    reason=reason,
                    alert_id=alert_id,
                    source_response_id=None if r is None else response_ids[r],
                    occurred_at=ts(at),
                )
                for p, c, kind, severity, reason, alert_id, r, at in batch.alerts
            ],
            batch_size=size,
        )


NULL = "\\N"


def _copy_escape(text: str) -> str:
    """COPY text format: backslash, tab, newline and carriage return are escaped."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class _TimestampText:
    """Epoch seconds -> 'YYYY-MM-DD HH:MM:SS+00' quickly (dates cached, clock times precomputed)."""

    def __init__(self) -> None:
        self.clock = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
        self.days: dict[int, str] = {}
        self.epoch = date(1970, 1, 1).toordinal()

    def __call__(self, timestamp: int | None) -> str:
        if timestamp is None:
            return NULL
        day, second = divmod(timestamp, 86400)
        text = self.days.get(day)
        if text is None:
            text = self.days[day] = date.fromordinal(self.epoch + day).isoformat()
        return f"{text} {self.clock[second]}+00"


class _Table:
    """COPY target: the columns the rows give, then every other column of the model (except an id the rows
    do not give) with its default, so a field added to the model later is filled as bulk_create would."""

    def __init__(self, model: type[models.Model], given: list[str], now: datetime) -> None:
        self.name = connection.ops.quote_name(model._meta.db_table)
        columns = [model._meta.get_field(name).column for name in given]
        constants = []
        for f in model._meta.concrete_fields:
            if f.column in columns or f.primary_key:
                continue
            if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
                value = now
            else:
                value = f.get_db_prep_save(f.get_default(), connection)
            if value is None and not f.null:
                raise CommandError(f"seed_demo does not know how to fill {model.__name__}.{f.name}; teach it.")
            columns.append(f.column)
            constants.append(self._text(value))
        self.sql = f"COPY {self.name} ({', '.join(connection.ops.quote_name(c) for c in columns)}) FROM STDIN"
        self.suffix = "".join("\t" + c for c in constants) + "\n"

    @staticmethod
    def _text(value) -> str:
        if value is None:
            return NULL
        if isinstance(value, bool):
            return "t" if value else "f"
        if isinstance(value, datetime):
            return value.isoformat()
        if hasattr(value, "obj"):  # psycopg's Jsonb wrapper
            value = json.dumps(value.obj)
        return _copy_escape(str(value))


class CopyWriter:
    """PostgreSQL: COPY ... FROM STDIN through psycopg 3, one transaction per batch.

    Ids of patients, sessions and responses (which other rows refer to) are reserved from their sequences
    and assigned here, so no round trip is needed to learn them; the sequence stays ahead of every id used.
    Markers, assignments and alerts take their ids from the column default."""

    chunk_rows = 5000  # rows per write() to the COPY stream

    def __init__(self, now: datetime) -> None:
        self.ts = _TimestampText()
        self._json: dict[tuple, str] = {}
        self._escaped: dict[str, str] = {}
        self.patients = _Table(
            Patient,
            ["id", "clinic", "player_id", "timezone", "risk_flag", "risk_flag_raised_at", "data_changed_at"],
            now,
        )
        self.assignments = _Table(CareAssignment, ["patient", "therapist"], now)
        self.sessions = _Table(
            TherapySession,
            [
                "id",
                "patient",
                "clinic",
                "session_id",
                "started_at",
                "ended_at",
                "status",
                "duration_minutes",
                "world",
                "character",
                "approaches",
                "interventions_count",
                "key_achievements",
            ],
            now,
        )
        self.markers = _Table(
            ProgressMarker,
            [
                "session",
                "patient",
                "clinic",
                "marker_id",
                "type",
                "description",
                "achieved_at",
                "therapeutic_value",
                "related_goal_id",
            ],
            now,
        )
        item_fields = list(OutcomeResponse.item_columns(None))
        self.responses = _Table(
            OutcomeResponse,
            ["id", "patient", "clinic", "response_id", "instrument", "administered_at", "total", *item_fields],
            now,
        )
        self.item_count = len(item_fields)
        self.alerts = _Table(
            Alert,
            ["patient", "clinic", "kind", "severity", "reason", "alert_id", "source_response", "occurred_at"],
            now,
        )

    def write(self, batch: Batch) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            patient_ids = self._reserve(cursor, Patient, len(batch.patients))
            session_ids = self._reserve(cursor, TherapySession, len(batch.sessions))
            response_ids = self._reserve(cursor, OutcomeResponse, len(batch.responses))
            pg = cursor.cursor  # the psycopg cursor under Django's wrapper
            self._copy(pg, self.patients, self._patient_lines(batch, patient_ids))
            self._copy(pg, self.assignments, (f"{patient_ids[p]}\t{t}" for p, t in batch.assignments))
            self._copy(pg, self.sessions, self._session_lines(batch, patient_ids, session_ids))
            self._copy(pg, self.markers, self._marker_lines(batch, patient_ids, session_ids))
            self._copy(pg, self.responses, self._response_lines(batch, patient_ids, response_ids))
            self._copy(pg, self.alerts, self._alert_lines(batch, patient_ids, response_ids))

    @staticmethod
    def _reserve(cursor, model: type[models.Model], count: int) -> list[int]:
        """Draw `count` ids from the table's sequence. No lock is needed, so concurrent batches and ordinary
        inserts can go on meanwhile, and the sequence stays ahead of every id used."""
        if not count:
            return []
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [model._meta.db_table, count],
        )
        return [row[0] for row in cursor.fetchall()]

    def _copy(self, pg_cursor, table: _Table, lines: Iterable[str]) -> None:
        suffix, chunk = table.suffix, []
        with pg_cursor.copy(table.sql) as copy:
            for line in lines:
                chunk.append(line)
                chunk.append(suffix)
                if len(chunk) >= 2 * self.chunk_rows:
                    copy.write("".join(chunk))
                    chunk.clear()
            if chunk:
                copy.write("".join(chunk))

    def _json_text(self, values: tuple) -> str:
        text = self._json.get(values)
        if text is None:
            text = self._json[values] = _copy_escape(json.dumps(list(values)))
        return text

    def _esc(self, text: str) -> str:
        """Escaped text, cached: the generator's texts come from small vocabularies."""
        escaped = self._escaped.get(text)
        if escaped is None:
            escaped = self._escaped[text] = _copy_escape(text)
        return escaped

    # The generator's ids (player_id, session_id, ...) are letters, digits and dashes: not escaped.

    def _patient_lines(self, batch: Batch, patient_ids: list[int]) -> Iterator[str]:
        ts = self.ts
        for pk, (clinic, player, tz, flag, raised, changed) in zip(patient_ids, batch.patients, strict=True):
            yield f"{pk}\t{clinic}\t{player}\t{tz}\t{'t' if flag else 'f'}\t{ts(raised)}\t{ts(changed)}"

    def _session_lines(self, batch: Batch, patient_ids: list[int], session_ids: list[int]) -> Iterator[str]:
        ts, esc, js = self.ts, self._esc, self._json_text
        for pk, row in zip(session_ids, batch.sessions, strict=True):
            p, c, sid, start, end, status, minutes, world, character, approaches, interventions, achievements = row
            yield (
                f"{pk}\t{patient_ids[p]}\t{c}\t{sid}\t{ts(start)}\t{ts(end)}\t{status}\t{minutes!r}\t"
                f"{esc(world)}\t{esc(character)}\t{js(approaches)}\t{interventions}\t{js(achievements)}"
            )

    def _marker_lines(self, batch: Batch, patient_ids: list[int], session_ids: list[int]) -> Iterator[str]:
        ts, esc = self.ts, self._esc
        for s, p, c, mid, kind, text, at, value, goal in batch.markers:
            yield (
                f"{session_ids[s]}\t{patient_ids[p]}\t{c}\t{mid}\t{kind}\t{esc(text)}\t{ts(at)}\t{value!r}\t{esc(goal)}"
            )

    def _response_lines(self, batch: Batch, patient_ids: list[int], response_ids: list[int]) -> Iterator[str]:
        ts, width = self.ts, self.item_count
        for pk, (p, c, rid, instrument, at, total, items) in zip(response_ids, batch.responses, strict=True):
            cells = "\t".join([*map(str, items), *[NULL] * (width - len(items))])
            yield f"{pk}\t{patient_ids[p]}\t{c}\t{rid}\t{instrument}\t{ts(at)}\t{total}\t{cells}"

    def _alert_lines(self, batch: Batch, patient_ids: list[int], response_ids: list[int]) -> Iterator[str]:
        ts, esc = self.ts, self._esc
        for p, c, kind, severity, reason, alert_id, r, at in batch.alerts:
            source = NULL if r is None else response_ids[r]
            game_id = NULL if alert_id is None else alert_id
            yield f"{patient_ids[p]}\t{c}\t{kind}\t{severity}\t{esc(encrypt(reason))}\t{game_id}\t{source}\t{ts(at)}"


def prefetch(items: Iterator, depth: int = 1) -> Iterator:
    """Produce the next items in a background thread while the caller consumes this one: generation (pure
    Python, no database) overlaps with the database digesting the previous batch."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(item)
            buffer.put(done)
        except BaseException as error:  # handed to the consumer
            buffer.put(error)

    thread = threading.Thread(target=produce, name="seed-demo-generator", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                buffer.get(timeout=0.1)
        thread.join()


def raise_deterioration_alerts(clinic_ids, chunk: int = 500) -> int:
    """The reliable-deterioration alerts that ingest would have raised for the seeded questionnaires."""
    ids = list(Patient.objects.filter(clinic_id__in=list(clinic_ids)).order_by("pk").values_list("pk", flat=True))
    raised = 0
    for start in range(0, len(ids), chunk):
        with transaction.atomic():
            patients = list(Patient.objects.filter(pk__in=ids[start : start + chunk]).select_related("clinic"))
            raised += len(deterioration_alerts(patients=patients))
    return raised


# --- The audit log's history -----------------------------------------------------------------------------

DEMO_TOKEN_ACTOR = "token:game-server"  # noqa: S105 (an actor, not a secret)
BREAK_GLASS_REASON = "Patient called the crisis line in distress; their therapist is off today and unreachable"


DEMO_NOTES = (
    (17, "Intake review. Low mood most days, sleeping poorly; plays in the evenings. Agreed a weekly check-in "
     "and to repeat the PHQ-9 and GAD-7 every two weeks."),
    (3, "Scores have not moved since intake and the dashboard marks the PHQ-9 not on track. Reviewed the plan "
     "together: adding behavioural activation between sessions; to discuss with supervision."),
)  # fmt: skip


def seed_notes(stalled: Iterable, now: datetime) -> int:
    """Two clinical notes by the assigned therapist on each stalled demo patient (the not-on-track ones)."""
    written = 0
    for plan in stalled:
        patient = Patient.objects.select_related("clinic").get(clinic__slug=plan.clinic.slug, player_id=plan.player_id)
        author = get_user_model().objects.get(username=plan.therapist)
        today = now.astimezone(ZoneInfo(patient.clinic.timezone)).date()
        for days_ago, body in DEMO_NOTES:
            note_create(patient=patient, author=author, written_on=today - timedelta(days=days_ago), body=body)
            written += 1
    return written


def seed_audit_history(now: datetime) -> int:
    """Three days of each demo clinic's audit log, so the auditor's console has something to show: logins
    (one failed, then a lockout), caseload and patient reads, the game's ingest batches, an acknowledgement,
    a break-glass grant (expired: its grant row is written too), an export, logouts. Appended in time
    order through `audit.audit_record` with past `at`s. A chain that already holds events from before
    `now` is left alone: the log outlives --reset (its events cannot be deleted), and a second history
    would only repeat the first. Returns the number of events appended."""
    appended = 0
    for demo in CLINICS:
        if AuditEvent.objects.filter(chain=demo.slug, at__lt=now).exists():
            continue
        clinic = Clinic.objects.get(slug=demo.slug)
        caseloads = {
            name: list(
                CareAssignment.objects.filter(patient__clinic=clinic, therapist__username=name)
                .order_by("patient__player_id")
                .values_list("patient__player_id", flat=True)
            )
            for name in demo.therapists
        }
        with transaction.atomic():
            for at, fields in _audit_story(demo.therapists, demo.auditor, caseloads, clinic, now):
                audit.audit_record(chain=demo.slug, at=at, **fields)
                appended += 1
    return appended


def _audit_story(
    therapists: tuple[str, ...], auditor: str, caseloads: dict[str, list[str]], clinic: Clinic, now: datetime
) -> list[tuple[datetime, dict]]:
    """(at, fields) of the seeded events, in time order: three working days and this morning."""
    first, second = therapists[0], therapists[1]
    ips = {first: "10.20.0.11", second: "10.20.0.23", auditor: "10.20.0.40", DEMO_TOKEN_ACTOR: "10.30.0.5"}
    roles = {first: "therapist", second: "therapist", auditor: "auditor", DEMO_TOKEN_ACTOR: ""}
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    events: list[tuple[datetime, dict]] = []

    def add(day: int, clock: str, action: str, actor: str, **fields) -> None:
        hour, minute = map(int, clock.split(":"))
        at = midnight - timedelta(days=day) + timedelta(hours=hour, minutes=minute, seconds=len(events) % 50)
        if at < now:  # today's events stop at the current time
            fields = {"role": roles[actor], "ip": ips[actor], **fields}
            events.append((at, {"action": action, "actor": actor, **fields}))

    def working_day(day: int, user: str, clock: str) -> None:
        caseload = caseloads.get(user, [])
        hour = int(clock.split(":")[0])
        add(day, clock, AuditAction.LOGIN, user)
        add(day, f"{hour}:20", AuditAction.CASELOAD_READ, user, patients=caseload[:50], detail={"view": "caseload"})
        for n, player in enumerate(caseload[:3]):
            read = {"patients": [player], "object": f"patient:{player}", "detail": {"view": "patient"}}
            add(day, f"{hour}:{25 + 7 * n}", AuditAction.PATIENT_READ, user, **read)
        add(day, "17:30", AuditAction.LOGOUT, user)

    def ingest(day: int, clock: str, players: list[str]) -> None:
        counts = {
            "sessions": {"created": len(players), "updated": len(players) // 2, "unchanged": 0},
            "markers": {"created": 2 * len(players), "updated": 0, "unchanged": 0},
            "outcomes": {"created": 1, "updated": 0, "unchanged": 0},
        }
        detail = {"counts": counts, "alerts_raised": 0}
        add(day, clock, AuditAction.INGEST, DEMO_TOKEN_ACTOR, patients=players, detail=detail)

    everyone = sorted(p for caseload in caseloads.values() for p in caseload)
    mine = caseloads.get(first, [])
    for day in (3, 2, 1):
        working_day(day, first, "8:52")
        working_day(day, second, "9:15")
        ingest(day, "9:40", everyone[day : day + 4])
        ingest(day, "13:10", everyone[-day - 4 : -day])
    # A failed login (a typo), then the right password.
    add(2, "9:14", AuditAction.LOGIN_FAILED, second, outcome=AuditOutcome.FAILED)
    alert = (
        Alert.objects.filter(clinic=clinic, patient__player_id__in=mine)
        .order_by("occurred_at", "pk")
        .values_list("pk", "patient__player_id")
        .first()
    )
    if alert:
        acknowledged = {"alert_ids": [alert[0]], "count": 1, "with_note": True}
        add(2, "10:12", AuditAction.ALERT_ACKNOWLEDGE, first, patients=[alert[1]], object=f"alert:{alert[0]}",
            detail=acknowledged)  # fmt: skip
    export = {"format": "csv", "rows": len(mine[:50])}
    add(2, "16:05", AuditAction.EXPORT, first, patients=mine[:50], object="report:caseload-outcomes", detail=export)
    # Someone tries the second therapist's account from outside: five failures, then the lockout.
    for n in range(5):
        add(1, f"7:{40 + n}", AuditAction.LOGIN_FAILED, second, outcome=AuditOutcome.FAILED, ip="198.51.100.23")
    lockout = {"detail": {"failures": 5}, "outcome": AuditOutcome.DENIED, "ip": "198.51.100.23"}
    add(1, "7:45", AuditAction.LOCKOUT, second, **lockout)
    # The evening before: the second therapist opens a patient of the first in an emergency.
    if mine:
        emergency = mine[0]
        granted = midnight - timedelta(days=1) + timedelta(hours=19, minutes=8)
        grant = BreakGlassGrant.objects.create(
            clinic=clinic,
            user=get_user_model().objects.get(username=second),
            patient=Patient.objects.get(clinic=clinic, player_id=emergency),
            reason=BREAK_GLASS_REASON,
            granted_at=granted,
            expires_at=granted + timedelta(minutes=60),
        )
        detail = {"reason": BREAK_GLASS_REASON, "minutes": 60, "expires_at": audit.format_at(grant.expires_at)}
        add(1, "19:06", AuditAction.LOGIN, second)
        add(1, "19:08", AuditAction.BREAK_GLASS, second, patients=[emergency], object=f"break_glass:{grant.pk}",
            detail=detail)  # fmt: skip
        read = {"patients": [emergency], "object": f"patient:{emergency}", "detail": {"view": "patient"}}
        add(1, "19:09", AuditAction.PATIENT_READ, second, **read)
        add(1, "19:40", AuditAction.LOGOUT, second)
    # This morning: the auditor.
    add(0, "7:30", AuditAction.LOGIN, auditor)
    return sorted(events, key=lambda item: item[0])
