"""`manage.py rotate_field_keys [--batch-size N] [--dry-run]` (DESIGN §7): re-encrypts every value of every
encrypted column (`tracking.fields.encrypted_fields()`, pghistory's row-history copies included) with the
newest key of FIELD_ENCRYPTION_KEYS, so that an older key can then be removed.

To rotate: put a new key in front (`FIELD_ENCRYPTION_KEYS=new,old`), restart, run this command, then drop
the old key. The stored ciphertext is read raw and rotated (`fields.rotate`, which keeps each token's
timestamp); the text is never handed to Python code beyond Fernet. A value the newest key already opens is
left alone, so a second run, or a run after an interrupted one, writes only what is left.

Each table is walked in batches of `--batch-size` rows by primary key, one transaction per batch, the rows
of the batch locked (SELECT … FOR UPDATE) so that a concurrent write is never overwritten by a rotated
copy of the value it replaced. A rotation changes the representation, not the data: pghistory's triggers
are told to ignore these updates (`pgtrigger.ignore`, a per-transaction setting, so every other writer
still leaves its history), and no row-history copy is made. SQLite (the demo) has no triggers.

A value no configured key opens (a key removed too early) stops the command with an error naming the
model, the field and the row's primary key, never the value; batches before it stay committed, which is
harmless since every key still configured opens them. `--dry-run` reads everything, reports what would be
rotated and checks that every value opens, writing nothing. A real run records one `config.change` audit
event (system chain) with the counts, also when it stops on an undecryptable value.
"""

from collections import defaultdict
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, models, transaction

from tracking import audit, fields
from tracking.models import AuditAction, AuditOutcome, skipping_row_history

COMMAND = "rotate_field_keys"


@dataclass
class Table:
    model: type[models.Model]
    columns: list[tuple[str, str]] = field(default_factory=list)  # (field name, column)

    @property
    def label(self) -> str:
        return self.model._meta.label


@dataclass
class Counts:
    rotated: int = 0
    current: int = 0  # already under the newest key


class Undecryptable(Exception):
    def __init__(self, where: str, pk: object) -> None:
        super().__init__(where, pk)
        self.where, self.pk = where, pk


def encrypted_tables() -> list[Table]:
    tables: dict[type[models.Model], Table] = {}
    for model, encrypted in fields.encrypted_fields():
        tables.setdefault(model, Table(model)).columns.append((encrypted.name, encrypted.column))
    return sorted(tables.values(), key=lambda t: t.label)


class Command(BaseCommand):
    help = "Re-encrypt every encrypted field with the newest key of FIELD_ENCRYPTION_KEYS."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500, help="rows per transaction (default 500)")
        parser.add_argument("--dry-run", action="store_true", help="count what would be rotated; write nothing")

    def handle(self, *args, batch_size, dry_run, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        fields.fernet()  # a missing or malformed key is an ImproperlyConfigured before anything is read
        newest = Fernet(fields.configured_keys()[0].encode())
        tables = encrypted_tables()
        counts: dict[str, Counts] = defaultdict(Counts)
        try:
            with skipping_row_history(t.model for t in tables):
                for table in tables:
                    self._rotate_table(table, newest, counts, batch_size=batch_size, dry_run=dry_run)
        except Undecryptable as error:
            if not dry_run:
                self._audit(counts, outcome=AuditOutcome.FAILED, stopped_at=f"{error.where} pk {error.pk}")
            raise CommandError(
                f"{error.where}, pk {error.pk}: no key in FIELD_ENCRYPTION_KEYS decrypts the stored value (a key "
                "removed before its values were rotated, or a value written without encryption). Add the key that "
                "encrypted it after the newest one and run rotate_field_keys again; --dry-run checks every value "
                "without writing." + ("" if dry_run else " The batches before this row were rotated and committed.")
            ) from None
        for table in tables:
            for name, _ in table.columns:
                where = f"{table.label}.{name}"
                done = counts[where]
                verb = "to rotate" if dry_run else "rotated"
                self.stdout.write(f"{where}: {done.rotated} {verb}, {done.current} already under the newest key")
        total = sum(c.rotated for c in counts.values())
        if dry_run:
            self.stdout.write(f"dry run: {total} values would be re-encrypted; nothing was written")
        else:
            self._audit(counts, outcome=AuditOutcome.OK)
            self.stdout.write(self.style.SUCCESS(f"re-encrypted {total} values with the newest key"))

    def _rotate_table(
        self, table: Table, newest: Fernet, counts: dict[str, Counts], *, batch_size: int, dry_run: bool
    ) -> None:
        last_pk = None
        while True:
            with transaction.atomic():
                rows = self._batch(table, last_pk, batch_size, lock=not dry_run)
                # Every value of the batch is rotated (or found undecryptable) before the first write.
                changes, batch_counts = self._rotated(table, rows, newest)
                if not dry_run:
                    for row_pk, values in changes:
                        self._update(table, row_pk, values)
            for where, done in batch_counts.items():  # counted once the batch is committed
                counts[where].rotated += done.rotated
                counts[where].current += done.current
            if len(rows) < batch_size:
                return
            last_pk = rows[-1][0]

    def _batch(self, table: Table, last_pk: object, size: int, *, lock: bool) -> list[tuple]:
        quote = connection.ops.quote_name
        meta = table.model._meta
        pk = quote(meta.pk.column)
        columns = [quote(column) for _, column in table.columns]
        conditions = ["(" + " OR ".join(f"{c} IS NOT NULL" for c in columns) + ")"]
        params: list[object] = []
        if last_pk is not None:
            conditions.append(f"{pk} > %s")
            params.append(last_pk)
        sql = (
            f"SELECT {pk}, {', '.join(columns)} FROM {quote(meta.db_table)} "  # noqa: S608 (names from the models)
            f"WHERE {' AND '.join(conditions)} ORDER BY {pk} LIMIT %s"
        )
        if lock and connection.features.has_select_for_update:
            sql += " FOR UPDATE"
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, size])
            return cursor.fetchall()

    def _rotated(
        self, table: Table, rows: list[tuple], newest: Fernet
    ) -> tuple[list[tuple[object, dict[str, str]]], dict[str, Counts]]:
        """(pk, {column: the token under the newest key}) of the rows with a value that needs it, and the
        counts per field."""
        changes = []
        counts: dict[str, Counts] = defaultdict(Counts)
        for row_pk, *values in rows:
            rotated = {}
            for (name, column), token in zip(table.columns, values, strict=True):
                if token is None:
                    continue
                where = f"{table.label}.{name}"
                if _opens(newest, token):
                    counts[where].current += 1
                    continue
                try:
                    rotated[column] = fields.rotate(token)
                except (InvalidToken, UnicodeError, TypeError):
                    raise Undecryptable(where, row_pk) from None
                counts[where].rotated += 1
            if rotated:
                changes.append((row_pk, rotated))
        return changes, counts

    def _update(self, table: Table, row_pk: object, changes: dict[str, str]) -> None:
        quote = connection.ops.quote_name
        meta = table.model._meta
        assignments = ", ".join(f"{quote(column)} = %s" for column in changes)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s",  # noqa: S608
                [*changes.values(), row_pk],
            )

    def _audit(self, counts: dict[str, Counts], *, outcome: str, stopped_at: str | None = None) -> None:
        # A list of {"field", "rotated", "current"}: a field's name is not a detail's key, since
        # audit.masked would hide the counts of `webhook_secret` and `key` as secrets.
        detail: dict[str, object] = {
            "command": COMMAND,
            "fields": [
                {"field": where, "rotated": c.rotated, "current": c.current} for where, c in sorted(counts.items())
            ],
            "rotated": sum(c.rotated for c in counts.values()),
        }
        if stopped_at:
            detail["stopped_at"] = stopped_at
        with transaction.atomic():
            audit.audit_here(
                action=AuditAction.CONFIG_CHANGE, object="encrypted_fields", detail=detail, outcome=outcome
            )


def _opens(newest: Fernet, token: str) -> bool:
    try:
        newest.decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeError, TypeError):
        return False
    return True
