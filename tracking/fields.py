"""Text encrypted at rest (DESIGN §7): patient display names, every free-text note, crisis reasons,
webhook secrets and TOTP keys.

The column holds a Fernet token (AES-128-CBC with HMAC-SHA256, urlsafe base64) and never the text.
Keys come from `FIELD_ENCRYPTION_KEYS`, comma-separated, newest first: the newest encrypts, every
key decrypts, so a new key can be put in front and `rotate_field_keys` re-encrypts everything with it
before the old one is removed. The keys are never derived from SECRET_KEY. Production refuses to start
without them; elsewhere (the demo, the tests) a key is generated once into `FIELD_ENCRYPTION_KEY_FILE`.

Every value round-trips exactly: None stays NULL, and "" and "0" are encrypted like any other text
(unlike django-fernet-encrypted-fields, which turns them into NULL). A ciphertext cannot be compared
in SQL, so the field refuses every lookup but `isnull` with a clear error instead of an empty result.
"""

import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core import checks
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.db import models

# `df`/`nd` (IS [NOT] DISTINCT FROM) are pgtrigger's, for the row-history triggers' OLD-versus-NEW
# conditions: column against column, which is meaningful on ciphertext.
ALLOWED_LOOKUPS = frozenset({"isnull", "df", "nd"})


@lru_cache(maxsize=8)
def _key_file_key(path: Path) -> str:
    """The key kept in `path`, created (readable by its owner only) on first use, and read once per
    process. Not for production. Written to a temporary file and linked into place, so a process
    starting at the same moment reads either no file or the whole key, never a half-written one."""
    if not path.exists():
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".field-key-")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(Fernet.generate_key().decode() + "\n")
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process was first: use its key
        finally:
            os.unlink(temporary)
    return path.read_text().strip()


def configured_keys() -> tuple[str, ...]:
    keys = tuple(settings.FIELD_ENCRYPTION_KEYS)
    if keys:
        return keys
    if getattr(settings, "PRODUCTION", False):
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS must be set when DJANGO_ENV=production")
    return (_key_file_key(Path(settings.FIELD_ENCRYPTION_KEY_FILE)),)


@lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as error:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS: each key must be 32 url-safe base64-encoded bytes "
            '(python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())")'
        ) from error


def fernet() -> MultiFernet:
    return _fernet(configured_keys())


def encrypt(text: str) -> str:
    return fernet().encrypt(text.encode("utf-8")).decode("ascii")


@checks.register(checks.Tags.security)
def check_keys(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """At start-up (and in `check --deploy`), not at the first page that reads a note: every key in
    FIELD_ENCRYPTION_KEYS must be a Fernet key."""
    try:
        fernet()
    except ImproperlyConfigured as error:
        return [checks.Error(str(error), id="tracking.E001")]
    return []


class UndecryptableValue(ImproperlyConfigured):
    """A stored value none of the configured keys opens: a key was removed before `rotate_field_keys`."""


def decrypt(token: str, *, where: str = "an encrypted field") -> str:
    try:
        return fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError) as error:
        raise UndecryptableValue(
            f"{where}: no key in FIELD_ENCRYPTION_KEYS decrypts the stored value (was a key removed "
            "before rotate_field_keys ran?)"
        ) from error


def rotate(token: str) -> str:
    """The same text encrypted under the newest key (MultiFernet.rotate keeps the original timestamp)."""
    return fernet().rotate(token.encode("ascii")).decode("ascii")


class EncryptedTextField(models.TextField):
    """A TextField stored as a Fernet token. `max_length` (optional) limits the text, not the column."""

    description = "Text encrypted at rest"

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or hasattr(value, "resolve_expression"):
            return value
        return encrypt(str(value))

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> str | None:
        if value is None:
            return None
        return decrypt(value, where=f"{self.model.__name__}.{self.name}")

    def get_lookup(self, lookup_name: str) -> Any:
        if lookup_name not in ALLOWED_LOOKUPS:
            raise FieldError(
                f"{self.model.__name__}.{self.name} is encrypted at rest: it cannot be filtered with "
                f"'{lookup_name}' (only 'isnull'). Filter on another field and compare in Python."
            )
        return super().get_lookup(lookup_name)

    def get_transform(self, lookup_name: str) -> Any:
        raise FieldError(
            f"{self.model.__name__}.{self.name} is encrypted at rest: '{lookup_name}' cannot be applied to it."
        )


def encrypted_fields() -> list[tuple[type[models.Model], EncryptedTextField]]:
    """Every (model, field) of the project that is encrypted, pghistory's row-history copies included."""
    from django.apps import apps

    return [
        (model, field)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedTextField)
    ]


def _convert_columns(labels: tuple[tuple[str, str], ...], convert: Any) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        connection = schema_editor.connection
        quote = connection.ops.quote_name
        with connection.cursor() as cursor:
            for label, field_name in labels:
                model = apps.get_model(label)
                table, pk = quote(model._meta.db_table), quote(model._meta.pk.column)
                column = quote(model._meta.get_field(field_name).column)
                if connection.vendor == "postgresql":
                    # A change of representation, not of data: no row-history copy of every row.
                    cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
                cursor.execute(f"SELECT {pk}, {column} FROM {table} WHERE {column} IS NOT NULL")  # noqa: S608
                for row_pk, value in cursor.fetchall():
                    cursor.execute(f"UPDATE {table} SET {column} = %s WHERE {pk} = %s", [convert(value), row_pk])  # noqa: S608
                if connection.vendor == "postgresql":
                    cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")

    return run


def encrypt_existing(*labels: tuple[str, str]) -> tuple[Any, Any]:
    """(forwards, backwards) for a migration's RunPython that makes plain text columns encrypted: each
    (model label, field name) has its stored text encrypted, and decrypted again when migrating back."""
    return _convert_columns(labels, encrypt), _convert_columns(labels, decrypt)


def encrypted_columns(model: type[models.Model], prefix: str = "") -> tuple[str, ...]:
    """The names of `model`'s encrypted columns (after `prefix`, e.g. "clinic__" through a relation): what
    a query leaves out with `defer()` when it never reads them, so nothing is decrypted for nothing."""
    return tuple(f"{prefix}{f.name}" for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField))
