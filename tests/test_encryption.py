"""Encryption at rest (DESIGN §7): display names, notes, crisis reasons, webhook secrets and TOTP keys are
stored as Fernet tokens (tracking.fields), round-trip exactly, cannot be filtered on, never appear in a
database dump, survive a key rotation (`rotate_field_keys`) and a migration of plain text columns
(`encrypt_existing`); production refuses to run without keys."""

import io
import os
import subprocess
import sys
import threading
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection, models, transaction
from django.test import override_settings
from django.test.utils import isolate_apps
from django.utils import timezone

from reports.alerts import alert_raise
from reports.models import Alert, AlertKind, AlertSeverity, ClinicalNote, ClinicalNoteRevision
from tests.conftest import logged_in
from tests.factories import PASSWORD, CareAssignmentFactory, ClinicFactory, PatientFactory, UserFactory
from tracking import fields
from tracking.management.commands.rotate_field_keys import Command as RotateCommand
from tracking.models import (
    AuditAction,
    AuditEvent,
    AuditReview,
    AuthenticatorDevice,
    BreakGlassGrant,
    Clinic,
    Patient,
)

ROOT = Path(__file__).resolve().parents[1]
KEY = Fernet.generate_key().decode()
OLD, NEW, NEWER = (Fernet.generate_key().decode() for _ in range(3))
NON_ASCII = "Zoë — 情绪 😊"
LONG = "".join(f"{n:06d} {NON_ASCII}\n" for n in range(7000))  # ~130 KB
assert len(LONG.encode()) > 100_000

postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL: triggers, pg_dump")


def raw(model: type[models.Model], field_name: str, pk: object) -> str | None:
    """The column as stored, read with SQL (no field decodes it)."""
    quote = connection.ops.quote_name
    meta = model._meta
    column = meta.get_field(field_name).column
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {quote(column)} FROM {quote(meta.db_table)} WHERE {quote(meta.pk.column)} = %s",  # noqa: S608
            [pk],
        )
        return cursor.fetchone()[0]


def set_raw(model: type[models.Model], field_name: str, pk: object, value: str | None) -> None:
    quote = connection.ops.quote_name
    meta = model._meta
    column = meta.get_field(field_name).column
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} SET {quote(column)} = %s WHERE {quote(meta.pk.column)} = %s",  # noqa: S608
            [value, pk],
        )


def opens(key: str, token: str) -> str | None:
    """The text `key` decrypts from `token`, or None when it does not."""
    try:
        return Fernet(key.encode()).decrypt(token.encode("ascii")).decode()
    except InvalidToken:
        return None


def assert_token_of(key: str, token: str | None, text: str) -> None:
    assert token is not None
    assert token.startswith("gAAAAA")  # Fernet: version byte 0x80, urlsafe base64
    assert token != text
    assert opens(key, token) == text


# ----- round trips --------------------------------------------------------------------------------


VALUES = pytest.mark.parametrize(
    "value", ["", "0", "x", NON_ASCII, LONG], ids=["empty", "zero", "x", "non-ascii", "100kb"]
)


@VALUES
@override_settings(FIELD_ENCRYPTION_KEYS=[KEY])
def test_a_value_round_trips_through_the_orm_and_a_fresh_read_and_is_stored_as_a_token(db, value):
    patient = PatientFactory(risk_flag_clear_note=value)
    assert patient.risk_flag_clear_note == value
    fresh = Patient.objects.get(pk=patient.pk)
    assert fresh.risk_flag_clear_note == value
    assert type(fresh.risk_flag_clear_note) is str
    assert Patient.objects.filter(pk=patient.pk).values_list("risk_flag_clear_note", flat=True).get() == value
    stored = raw(Patient, "risk_flag_clear_note", patient.pk)
    assert_token_of(KEY, stored, value)
    if len(value) > 3:
        assert value not in stored


@VALUES
@override_settings(FIELD_ENCRYPTION_KEYS=[KEY])
def test_every_write_path_encrypts(db, value):
    """create, save, QuerySet.update (the acknowledgement's path), bulk_create and bulk_update."""
    clinic = ClinicFactory()
    made = Patient.objects.bulk_create([Patient(clinic=clinic, player_id="p-bulk", display_name=value)])
    [patient] = made
    assert_token_of(KEY, raw(Patient, "display_name", patient.pk), value)
    Patient.objects.filter(pk=patient.pk).update(risk_flag_clear_note=value)
    assert_token_of(KEY, raw(Patient, "risk_flag_clear_note", patient.pk), value)
    patient = Patient.objects.get(pk=patient.pk)
    patient.display_name = value + "!"
    Patient.objects.bulk_update([patient], ["display_name"])
    assert_token_of(KEY, raw(Patient, "display_name", patient.pk), value + "!")
    patient.risk_flag_clear_note = "re" + value
    patient.save()
    assert_token_of(KEY, raw(Patient, "risk_flag_clear_note", patient.pk), "re" + value)
    fresh = Patient.objects.get(pk=patient.pk)
    assert (fresh.display_name, fresh.risk_flag_clear_note) == (value + "!", "re" + value)


@override_settings(FIELD_ENCRYPTION_KEYS=[KEY])
def test_the_same_text_twice_is_two_different_tokens(db):
    """Fernet's random IV: equal notes cannot be recognised as equal in the table."""
    a, b = PatientFactory(display_name="Sam"), PatientFactory(display_name="Sam")
    assert raw(Patient, "display_name", a.pk) != raw(Patient, "display_name", b.pk)


@isolate_apps("tracking")
@override_settings(FIELD_ENCRYPTION_KEYS=[KEY])
def test_none_stays_null_and_empty_is_not_null(db):
    """On a nullable encrypted column (none of the project's is: they are blank, not null)."""

    class Note(models.Model):
        text = fields.EncryptedTextField(null=True)

        class Meta:
            app_label = "tracking"
            db_table = "test_encryption_note"

        def __str__(self) -> str:
            return f"note {self.pk}"

    with connection.schema_editor() as editor:
        editor.create_model(Note)
    none, empty, zero = Note.objects.create(text=None), Note.objects.create(text=""), Note.objects.create(text="0")
    assert raw(Note, "text", none.pk) is None
    assert Note.objects.get(pk=none.pk).text is None
    assert_token_of(KEY, raw(Note, "text", empty.pk), "")
    assert Note.objects.get(pk=empty.pk).text == ""
    assert Note.objects.get(pk=zero.pk).text == "0"
    assert list(Note.objects.filter(text__isnull=True).values_list("pk", flat=True)) == [none.pk]
    assert sorted(Note.objects.filter(text__isnull=False).values_list("pk", flat=True)) == [empty.pk, zero.pk]
    Note.objects.filter(pk=empty.pk).update(text=None)
    assert raw(Note, "text", empty.pk) is None


# ----- lookups ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lookup", "named"),
    [
        ("display_name", "Patient.display_name"),
        ("display_name__exact", "Patient.display_name"),
        ("display_name__icontains", "Patient.display_name"),
        ("display_name__startswith", "Patient.display_name"),
        ("display_name__in", "Patient.display_name"),
        ("risk_flag_clear_note__iexact", "Patient.risk_flag_clear_note"),
    ],
)
def test_a_lookup_on_an_encrypted_field_is_an_error_naming_the_field(db, lookup, named):
    PatientFactory(display_name="x", risk_flag_clear_note="x")
    value = ["x"] if lookup.endswith("__in") else "x"
    with pytest.raises(FieldError, match=rf"{named} is encrypted at rest"):
        list(Patient.objects.filter(**{lookup: value}))
    with pytest.raises(FieldError, match=rf"{named} is encrypted at rest"):
        list(Patient.objects.exclude(**{lookup: value}))


def test_a_lookup_through_a_relation_is_an_error_too(db):
    with pytest.raises(FieldError, match=r"Alert\.note is encrypted at rest"):
        list(Patient.objects.filter(alerts__note__icontains="x"))
    with pytest.raises(FieldError, match=r"Patient\.display_name is encrypted at rest"):
        list(Alert.objects.filter(patient__display_name="x"))


def test_a_transform_is_an_error_naming_the_field(db):
    with pytest.raises(FieldError, match=r"Patient\.display_name is encrypted at rest"):
        list(Patient.objects.filter(display_name__lower__exact="x"))


def test_isnull_works(db):
    patients = [PatientFactory(display_name=""), PatientFactory(display_name="Ann")]
    assert Patient.objects.filter(display_name__isnull=True).count() == 0
    assert sorted(Patient.objects.filter(display_name__isnull=False).values_list("pk", flat=True)) == sorted(
        p.pk for p in patients
    )


# ----- through the pages, and not in a dump -------------------------------------------------------


class FormFields(HTMLParser):
    """The fields a browser would submit from the form with id `form_id` (one submit button's aside)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside, self.data = form_id, False, {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside:
            return
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.data[name] = a.get("value", "on" if a.get("type") == "checkbox" else "")
        elif tag == "select" and name:
            self._select = name
            self.data.setdefault(name, "")
        elif tag == "option" and self._select and "selected" in a:
            self.data[self._select] = a.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea] += data.removeprefix("\n") if not self.data[self._textarea] else data


def form_fields(html: str, form_id: str) -> dict[str, str]:
    parser = FormFields(form_id)
    parser.feed(html)
    return parser.data


def pg_dump() -> str:
    settings = connection.settings_dict
    command = ["pg_dump", "--no-owner", "--dbname", settings["NAME"]]
    for option, key in (("--host", "HOST"), ("--port", "PORT"), ("--username", "USER")):
        if settings.get(key):
            command += [option, str(settings[key])]
    env = {**os.environ, "PGPASSWORD": settings.get("PASSWORD") or ""}
    result = subprocess.run(command, capture_output=True, env=env, timeout=120, check=True)  # noqa: S603
    return result.stdout.decode("utf-8")


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_notes_and_a_display_name_saved_through_the_pages_are_shown_there_and_absent_from_a_dump(
    clinic, therapist_a, patient_a, django_user_model
):
    note = "Canary-ack-Qx7 spoke with Zoë's GP"
    flag_note = "Canary-flag-Jw3 safety plan agreed 情绪"
    name = "Canary-name-Vk9 Zoë"
    reason = "Canary-reason-Hp2 said she feels unsafe"
    alert = alert_raise(
        patient=patient_a,
        kind=AlertKind.CRISIS_SIGNAL,
        severity=AlertSeverity.URGENT,
        reason=reason,
        occurred_at=timezone.now(),
    )
    assert Patient.objects.get(pk=patient_a.pk).risk_flag
    therapist = logged_in(therapist_a)

    response = therapist.post(f"/patients/p-a1/alerts/{alert.pk}/acknowledge", {"note": note})
    assert response.status_code == 302
    response = therapist.post("/patients/p-a1/risk-flag/clear", {"note": flag_note})
    assert response.status_code == 302
    superuser = django_user_model.objects.create_superuser("root", "root@example.org", PASSWORD)
    admin = logged_in(superuser)
    url = f"/admin/tracking/patient/{patient_a.pk}/change/"
    page = admin.get(url)
    assert page.status_code == 200
    data = form_fields(page.content.decode(), "patient_form")
    assert "display_name" in data and "assignments-TOTAL_FORMS" in data, sorted(data)
    response = admin.post(url, {**data, "display_name": name, "_save": "Save"})
    assert response.status_code == 302, response.content.decode()[:3000]

    stored = Patient.objects.get(pk=patient_a.pk)
    assert (stored.display_name, stored.risk_flag_clear_note, stored.risk_flag) == (name, flag_note, False)
    assert Alert.objects.get(pk=alert.pk).note == note
    patient_page = therapist.get("/patients/p-a1/").content.decode()
    assert note.replace("'", "&#x27;") in patient_page
    assert flag_note in patient_page
    assert reason in patient_page
    assert name in admin.get(url).content.decode()

    dump = pg_dump()
    assert "Northside" in dump and "p-a1" in dump  # the dump holds the data (plain columns are plain)
    assert "tracking_patientevent" in dump
    for secret in (note, flag_note, name, reason):
        for fragment in (secret, secret.split()[0]):  # the whole text, and the canary word alone
            assert fragment not in dump


# ----- rotation -----------------------------------------------------------------------------------


def history_counts() -> dict[str, int]:
    return {label: apps.get_model(label).objects.count() for label in ("tracking.PatientEvent", "reports.AlertEvent")}


def every_value() -> dict[tuple[str, str, object], str | None]:
    """(model label, field, pk) → the text, read through the ORM, of every encrypted value there is."""
    values = {}
    for model, field in fields.encrypted_fields():
        for pk, value in model._default_manager.values_list("pk", field.name):
            values[(model._meta.label, field.name, pk)] = value
    return values


def every_token() -> dict[tuple[str, str, object], str | None]:
    tokens = {}
    quote = connection.ops.quote_name
    for model, field in fields.encrypted_fields():
        meta = model._meta
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {quote(meta.pk.column)}, {quote(field.column)} FROM {quote(meta.db_table)}")  # noqa: S608
            for pk, token in cursor.fetchall():
                tokens[(meta.label, field.name, pk)] = token
    return tokens


def make_everything() -> dict[str, object]:
    """A row of every model with an encrypted field, and a row-history copy of a note."""
    clinic = Clinic.objects.create(slug="rot", name="Rotation", webhook_secret="whsec-Ab3")
    user = UserFactory(username="rot.therapist")
    patients = [Patient.objects.create(clinic=clinic, player_id=f"p-{n}", display_name=f"Name {n} ë") for n in range(5)]
    patient = patients[0]
    CareAssignmentFactory(patient=patient, therapist=user)
    patient.risk_flag_clear_note = "cleared: " + NON_ASCII
    patient.save(update_fields=["risk_flag_clear_note"])  # a PatientEvent now holds its ciphertext
    alert = Alert.objects.create(
        clinic=clinic,
        patient=patient,
        kind=AlertKind.CRISIS_SIGNAL,
        severity=AlertSeverity.URGENT,
        reason="the game's words",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    Alert.objects.filter(pk=alert.pk).update(note="called back", acknowledged_at=timezone.now())  # an AlertEvent
    AuditReview.objects.create(event_id=1, chain="rot", reviewed_by=user, reviewed_at=timezone.now(), note="seen")
    now = timezone.now()
    BreakGlassGrant.objects.create(
        clinic=clinic,
        user=user,
        patient=patients[1],
        reason="a crisis call at night, the assigned therapist away",
        granted_at=now,
        expires_at=now + timedelta(hours=1),
    )
    device = AuthenticatorDevice.objects.create(user=user, name="phone")
    note = ClinicalNote.objects.create(patient=patient, author=user, written_on=date(2026, 1, 2), body="first words")
    ClinicalNoteRevision.objects.create(note=note, written_on=note.written_on, body=note.body, replaced_at=now)
    ClinicalNote.objects.filter(pk=note.pk).update(body="second words " + NON_ASCII)  # a ClinicalNoteEvent
    return {"patient": patient, "device": device, "totp_key": device.key}


@postgres_only
def test_rotation_re_encrypts_every_value_with_the_newest_key_without_row_history(db):
    with override_settings(FIELD_ENCRYPTION_KEYS=[OLD]):
        made = make_everything()
        values = every_value()
        before = every_token()
    counted = history_counts()
    assert counted["tracking.PatientEvent"] >= 1 and counted["reports.AlertEvent"] >= 1
    # Every model from encrypted_fields() is covered, event models included, with a non-empty value.
    assert {label for label, _, _ in values} == {m._meta.label for m, _ in fields.encrypted_fields()}
    assert all(opens(OLD, token) is not None for token in before.values())
    assert values[("tracking.AuthenticatorDevice", "key", made["device"].pk)] == made["totp_key"]

    since = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    out = io.StringIO()
    with override_settings(FIELD_ENCRYPTION_KEYS=[NEW, OLD]):
        call_command("rotate_field_keys", batch_size=2, stdout=out)  # 5 patients: batches of 2, 2, 1
    printed = out.getvalue()
    assert "tracking.Patient.display_name: 5 rotated, 0 already under the newest key" in printed
    assert "tracking.PatientEvent.risk_flag_clear_note: 1 rotated" in printed
    assert "tracking.AuthenticatorDevice.key: 1 rotated" in printed
    assert f"re-encrypted {len(before)} values" in printed

    assert history_counts() == counted  # rotating made no row-history copy
    after = every_token()
    assert after.keys() == before.keys()
    for where, token in after.items():
        assert token != before[where], where
        assert opens(NEW, token) is not None and opens(OLD, token) is None, where
    with override_settings(FIELD_ENCRYPTION_KEYS=[NEW]):
        assert every_value() == values
        device = AuthenticatorDevice.objects.get(pk=made["device"].pk)
        assert device.key == made["totp_key"]
        # The second factor still works (a code as the app shows it: 6 digits, with its leading zeros).
        assert device.verify_token(f"{device.totp().token():06d}")

    [event] = AuditEvent.objects.filter(pk__gt=since)
    assert (event.chain, event.actor, event.action, event.outcome) == (
        "system",
        "system",
        AuditAction.CONFIG_CHANGE,
        "ok",
    )
    assert event.detail["command"] == "rotate_field_keys"
    assert event.detail["rotated"] == len(before)
    by_field = {item["field"]: item for item in event.detail["fields"]}
    # Counts of `webhook_secret` and `key` are counts, not masked as if they were secrets.
    assert by_field["tracking.Clinic.webhook_secret"] == {
        "field": "tracking.Clinic.webhook_secret",
        "rotated": 1,
        "current": 0,
    }
    assert by_field["tracking.AuthenticatorDevice.key"]["rotated"] == 1
    assert by_field["tracking.Patient.display_name"]["rotated"] == 5
    for text in values.values():
        assert text not in str(event.detail) or text in ("", "0")

    # The triggers were ignored by the command only: a change after it is history again.
    with override_settings(FIELD_ENCRYPTION_KEYS=[NEW]):
        Patient.objects.filter(pk=made["patient"].pk).update(display_name="after the rotation")
    assert history_counts()["tracking.PatientEvent"] == counted["tracking.PatientEvent"] + 1


@postgres_only
def test_a_second_rotation_writes_nothing_and_a_dry_run_writes_nothing(db):
    with override_settings(FIELD_ENCRYPTION_KEYS=[OLD]):
        make_everything()
    with override_settings(FIELD_ENCRYPTION_KEYS=[NEW, OLD]):
        call_command("rotate_field_keys", stdout=io.StringIO())
        rotated = every_token()
        again = io.StringIO()
        call_command("rotate_field_keys", stdout=again)
    assert every_token() == rotated
    assert "tracking.Patient.display_name: 0 rotated, 5 already under the newest key" in again.getvalue()
    assert "re-encrypted 0 values" in again.getvalue()

    events = AuditEvent.objects.count()
    dry = io.StringIO()
    with override_settings(FIELD_ENCRYPTION_KEYS=[NEWER, NEW]):
        call_command("rotate_field_keys", dry_run=True, stdout=dry)
    assert "tracking.Patient.display_name: 5 to rotate, 0 already under the newest key" in dry.getvalue()
    assert "nothing was written" in dry.getvalue()
    assert every_token() == rotated
    assert AuditEvent.objects.count() == events  # a dry run changes nothing, so it records nothing


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_rows_of_a_batch_are_locked_while_they_are_rotated(monkeypatch):
    """A write to a row between the read of its token and the write of the rotated one would be lost
    (overwritten by the rotated old value): the batch's rows are locked, so such a write waits."""
    with override_settings(FIELD_ENCRYPTION_KEYS=[OLD]):
        clinic = Clinic.objects.create(slug="rot", name="Rotation")
        patient = Patient.objects.create(clinic=clinic, player_id="p-1", display_name="Ann")
    outcome = {}
    rotated = RotateCommand._rotated

    def rotated_while_someone_writes(self, table, rows, newest):
        if table.model is Patient:

            def write():
                try:
                    # This thread's own connection; SET LOCAL, so the timeout ends with the transaction and
                    # does not go back to the pool with the connection (a later request would inherit it).
                    with transaction.atomic(), connection.cursor() as cursor:
                        cursor.execute("SET LOCAL lock_timeout = '300ms'")
                        cursor.execute("UPDATE tracking_patient SET timezone = 'UTC' WHERE id = %s", [patient.pk])
                    outcome["write"] = "done"
                except OperationalError:
                    outcome["write"] = "waited"
                finally:
                    connection.close()

            thread = threading.Thread(target=write)
            thread.start()
            thread.join()
        return rotated(self, table, rows, newest)

    monkeypatch.setattr(RotateCommand, "_rotated", rotated_while_someone_writes)
    with override_settings(FIELD_ENCRYPTION_KEYS=[NEW, OLD]):
        call_command("rotate_field_keys", stdout=io.StringIO())
        assert Patient.objects.get(pk=patient.pk).display_name == "Ann"
    assert outcome == {"write": "waited"}
    assert opens(NEW, raw(Patient, "display_name", patient.pk)) == "Ann"


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param(lambda: Fernet(Fernet.generate_key()).encrypt(b"Canary-lost-Mm4").decode(), id="lost-key"),
        pytest.param(lambda: "Canary-plain-Mm4", id="plain-text"),
        pytest.param(lambda: "Canary-plain-Zoë-Mm4", id="plain-non-ascii"),
    ],
)
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_a_value_no_key_opens_stops_with_an_error_naming_the_row_not_the_value(db, stored, dry_run):
    with override_settings(FIELD_ENCRYPTION_KEYS=[NEW]):
        clinic = Clinic.objects.create(slug="rot", name="Rotation")
        patients = [Patient.objects.create(clinic=clinic, player_id=f"p-{n}", display_name="fine") for n in range(3)]
        value = stored()
        set_raw(Patient, "display_name", patients[1].pk, value)
        events = AuditEvent.objects.count()
        with pytest.raises(CommandError) as caught:
            call_command("rotate_field_keys", dry_run=dry_run, stdout=io.StringIO())
    message = str(caught.value)
    assert f"tracking.Patient.display_name, pk {patients[1].pk}" in message
    assert "no key in FIELD_ENCRYPTION_KEYS decrypts" in message
    assert "Canary" not in message and value not in message
    assert raw(Patient, "display_name", patients[1].pk) == value  # left as it was
    if dry_run:
        assert AuditEvent.objects.count() == events
    else:
        event = AuditEvent.objects.order_by("-pk").first()
        assert (event.action, event.outcome) == (AuditAction.CONFIG_CHANGE, "failed")
        assert event.detail["stopped_at"] == f"tracking.Patient.display_name pk {patients[1].pk}"
        assert "Canary" not in str(event.detail)


def test_reading_a_value_after_its_key_was_removed_is_a_clear_error(db):
    with override_settings(FIELD_ENCRYPTION_KEYS=[OLD]):
        patient = PatientFactory(display_name="Ann")
    with override_settings(FIELD_ENCRYPTION_KEYS=[NEW]), pytest.raises(fields.UndecryptableValue) as caught:
        Patient.objects.get(pk=patient.pk)
    assert "Patient.display_name" in str(caught.value) and "Ann" not in str(caught.value)


def test_a_batch_size_below_one_is_refused(db):
    with pytest.raises(CommandError, match="--batch-size"):
        call_command("rotate_field_keys", batch_size=0, stdout=io.StringIO())


# ----- the migration helper -----------------------------------------------------------------------


@postgres_only
@override_settings(FIELD_ENCRYPTION_KEYS=[KEY])
def test_encrypt_existing_encrypts_plain_text_and_backwards_restores_it(db):
    clinic = ClinicFactory()
    patients = [PatientFactory(clinic=clinic) for _ in range(3)]
    plain = {patients[0].pk: NON_ASCII, patients[1].pk: "", patients[2].pk: LONG}
    for pk, text in plain.items():
        set_raw(Patient, "risk_flag_clear_note", pk, text)  # as a column was before the migration
    with connection.cursor() as cursor:
        # The test's inserts leave deferred foreign-key checks pending in its transaction, and PostgreSQL
        # refuses to ALTER (DISABLE TRIGGER) a table with pending trigger events: run them now.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    history = history_counts()
    forwards, backwards = fields.encrypt_existing(("tracking.Patient", "risk_flag_clear_note"))

    with connection.schema_editor() as editor:
        forwards(apps, editor)
    for pk, text in plain.items():
        assert_token_of(KEY, raw(Patient, "risk_flag_clear_note", pk), text)
        assert Patient.objects.get(pk=pk).risk_flag_clear_note == text
    assert history_counts() == history  # a change of representation is no row history

    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with connection.schema_editor() as editor:
        backwards(apps, editor)
    for pk, text in plain.items():
        assert raw(Patient, "risk_flag_clear_note", pk) == text
    assert history_counts() == history

    # The triggers are on again afterwards.
    set_raw(Patient, "risk_flag", patients[0].pk, True)
    assert history_counts()["tracking.PatientEvent"] == history["tracking.PatientEvent"] + 1


# ----- keys and settings --------------------------------------------------------------------------


PRODUCTION = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": "x" * 60,
    "ALLOWED_HOSTS": "progress.example.org",
    "AUDIT_HEAD_DIR": "/tmp/audit-heads-encryption-test",  # noqa: S108 (never written: settings only)
    "AUDIT_SIGNING_KEY": "k" * 40,
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
}
ENCRYPT_ONCE = (
    "import django; django.setup(); from tracking.fields import encrypt, decrypt; "
    "print(decrypt(encrypt('Zoë')) == 'Zoë')"
)


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(  # noqa: S603
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "progress_site.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_without_field_encryption_keys():
    result = run_python(ENCRYPT_ONCE, PRODUCTION)
    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS must be set when DJANGO_ENV=production" in result.stderr


def test_production_encrypts_with_its_keys():
    result = run_python(ENCRYPT_ONCE, {**PRODUCTION, "FIELD_ENCRYPTION_KEYS": f"{NEW}, {OLD}"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


@pytest.mark.parametrize("keys", ["not-a-fernet-key", f"{NEW},short"], ids=["one-bad", "second-bad"])
def test_a_malformed_key_is_improperly_configured_with_a_clear_message_without_the_key(keys):
    result = run_python(ENCRYPT_ONCE, {**PRODUCTION, "FIELD_ENCRYPTION_KEYS": keys})
    assert result.returncode != 0
    assert "ImproperlyConfigured: FIELD_ENCRYPTION_KEYS: each key must be 32 url-safe base64-encoded bytes" in (
        result.stderr
    )
    bad = keys.split(",")[-1]
    assert bad not in result.stderr
    assert NEW not in result.stderr


@pytest.mark.parametrize("keys", [["not-a-fernet-key"], [KEY, "short"], [KEY[:-2]]])
def test_a_malformed_key_in_process_is_improperly_configured(db, keys):
    with override_settings(FIELD_ENCRYPTION_KEYS=keys), pytest.raises(ImproperlyConfigured) as caught:
        PatientFactory(display_name="Ann")
    assert "FIELD_ENCRYPTION_KEYS" in str(caught.value) and "32 url-safe base64-encoded bytes" in str(caught.value)
    assert all(key not in str(caught.value) for key in keys)


def test_without_keys_outside_production_one_key_is_generated_into_the_key_file(tmp_path):
    path = tmp_path / "field-encryption.key"
    with override_settings(FIELD_ENCRYPTION_KEYS=[], FIELD_ENCRYPTION_KEY_FILE=str(path), PRODUCTION=False):
        token = fields.encrypt("Ann")
        assert path.stat().st_mode & 0o777 == 0o600
        key = path.read_text().strip()
        assert opens(key, token) == "Ann"
        assert fields.decrypt(fields.encrypt("Bob")) == "Bob"
        assert path.read_text().strip() == key  # made once, then kept
    with override_settings(FIELD_ENCRYPTION_KEYS=[], PRODUCTION=True), pytest.raises(ImproperlyConfigured):
        fields.encrypt("Ann")


def test_keys_are_not_derived_from_the_secret_key(db):
    with override_settings(FIELD_ENCRYPTION_KEYS=[KEY]):
        token = fields.encrypt("Ann")
    with override_settings(FIELD_ENCRYPTION_KEYS=[KEY], SECRET_KEY="another-" + "s" * 50):
        assert fields.decrypt(token) == "Ann"


def test_a_malformed_key_fails_the_start_up_check_not_the_first_page():
    with override_settings(FIELD_ENCRYPTION_KEYS=["not-a-fernet-key"]):
        [error] = fields.check_keys()
    assert error.id == "tracking.E001" and "FIELD_ENCRYPTION_KEYS" in error.msg and "not-a-fernet-key" not in error.msg
    assert fields.check_keys() == []
