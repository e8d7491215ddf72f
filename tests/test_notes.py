"""Clinical notes (issue 13 item 3): a therapist writes dated notes on a patient, encrypted at rest,
audited without their text, edited only by their author with every earlier version kept, and read only
by the patient's therapists (not clinic admins, not auditors, not another clinic)."""

from datetime import date, timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection

from reports import notes
from reports.models import ClinicalNote, ClinicalNoteRevision
from tests.conftest import logged_in
from tracking.history import local_today
from tracking.models import AuditEvent, BreakGlassGrant

TEXT = "Canary-note-Rz4 talked about her sister's visit; sleep better; Zoë 情绪"
EDITED = "Canary-edit-Mq8 revised after supervision"


def last_id() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def new_events(since: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(pk__gt=since).order_by("pk"))


def today(patient) -> date:
    return local_today(patient.clinic.timezone)


@pytest.fixture
def note(patient_a, therapist_a):
    return notes.note_create(patient=patient_a, author=therapist_a, written_on=today(patient_a), body=TEXT)


def assert_no_text_in_audit():
    for secret in (TEXT, EDITED, "Canary-note-Rz4", "Canary-edit-Mq8"):
        assert not AuditEvent.objects.filter(detail__icontains=secret).exists()
        assert not AuditEvent.objects.filter(object__icontains=secret).exists()


# ----- the service --------------------------------------------------------------------------------


def test_a_note_is_created_and_audited_in_the_same_transaction_without_its_text(patient_a, therapist_a):
    since = last_id()
    note = notes.note_create(patient=patient_a, author=therapist_a, written_on=today(patient_a), body=f"  {TEXT}\n")
    stored = ClinicalNote.objects.get(pk=note.pk)
    assert (stored.body, stored.written_on, stored.author_id) == (TEXT, today(patient_a), therapist_a.pk)
    [event] = new_events(since)
    assert (event.action, event.chain, event.actor, event.role) == (
        "note.write",
        "northside",
        "therapist.a",
        "therapist",
    )
    assert (event.patients, event.object) == (["p-a1"], f"note:{note.pk}")
    assert event.detail == {"op": "create", "model": "clinical_note", "changed": ["written_on", "body"]}
    assert_no_text_in_audit()


@pytest.mark.parametrize(
    "written_on, body, field, words",
    [
        ("today", "", "body", "Write the note"),
        ("today", "   \n ", "body", "Write the note"),
        ("today", None, "body", "Write the note"),
        ("today", "x" * 10_001, "body", "at most 10,000 characters (this one has 10,001)"),
        ("today", "bad\x00text", "body", "NUL"),
        ("tomorrow", TEXT, "written_on", "cannot be in the future"),
        (date(1999, 12, 31), TEXT, "written_on", "before 2000-01-01"),
        (None, TEXT, "written_on", "Give the date"),
        ("2026-01-01", TEXT, "written_on", "Give the date"),  # a string is not a date
    ],
)
def test_an_invalid_note_is_refused_naming_the_field_and_never_quoting_the_text(
    patient_a, therapist_a, written_on, body, field, words
):
    day = {"today": today(patient_a), "tomorrow": today(patient_a) + timedelta(days=1)}.get(written_on, written_on)
    since = last_id()
    with pytest.raises(ValidationError) as caught:
        notes.note_create(patient=patient_a, author=therapist_a, written_on=day, body=body)
    assert list(caught.value.message_dict) == [field]
    assert words in " ".join(caught.value.message_dict[field])
    assert "Canary" not in str(caught.value)
    assert not ClinicalNote.objects.exists() and new_events(since) == []


def test_the_limits_themselves_are_accepted(patient_a, therapist_a):
    notes.note_create(patient=patient_a, author=therapist_a, written_on=date(2000, 1, 1), body="x" * 10_000)
    notes.note_create(patient=patient_a, author=therapist_a, written_on=today(patient_a), body="0")
    assert sorted(len(n.body) for n in ClinicalNote.objects.all()) == [1, 10_000]


def test_the_author_edits_and_the_previous_version_is_kept(note, therapist_a, patient_a):
    before = ClinicalNote.objects.get(pk=note.pk)
    yesterday = today(patient_a) - timedelta(days=1)
    since = last_id()
    notes.note_edit(note=note, user=therapist_a, written_on=yesterday, body=EDITED)
    stored = ClinicalNote.objects.get(pk=note.pk)
    assert (stored.body, stored.written_on) == (EDITED, yesterday)
    assert stored.updated_at > before.updated_at
    [revision] = ClinicalNoteRevision.objects.filter(note=note)
    assert (revision.body, revision.written_on) == (TEXT, before.written_on)
    [event] = new_events(since)
    assert (event.action, event.object) == ("note.write", f"note:{note.pk}")
    assert event.detail == {"op": "update", "model": "clinical_note", "changed": ["written_on", "body"]}
    # Only what changed is named; an edit that changes nothing writes nothing.
    since = last_id()
    notes.note_edit(note=stored, user=therapist_a, written_on=yesterday, body=TEXT)
    [event] = new_events(since)
    assert event.detail["changed"] == ["body"]
    since = last_id()
    notes.note_edit(note=stored, user=therapist_a, written_on=yesterday, body=TEXT)
    assert new_events(since) == [] and ClinicalNoteRevision.objects.filter(note=note).count() == 2
    assert [r.body for r in ClinicalNoteRevision.objects.filter(note=note)] == [EDITED, TEXT]  # newest first
    assert_no_text_in_audit()


def test_only_the_author_may_edit(note, therapist_b):
    with pytest.raises(PermissionDenied):
        notes.note_edit(note=note, user=therapist_b, written_on=note.written_on, body=EDITED)
    assert ClinicalNote.objects.get(pk=note.pk).body == TEXT
    assert not ClinicalNoteRevision.objects.exists()


def test_an_invalid_edit_changes_nothing(note, therapist_a):
    since = last_id()
    with pytest.raises(ValidationError) as caught:
        notes.note_edit(note=note, user=therapist_a, written_on=note.written_on, body="")
    assert list(caught.value.message_dict) == ["body"]
    assert ClinicalNote.objects.get(pk=note.pk).body == TEXT
    assert not ClinicalNoteRevision.objects.exists() and new_events(since) == []


@pytest.mark.django_db(transaction=True)
def test_the_stored_body_and_its_revision_are_ciphertext_in_the_database(clinic, therapist_a, patient_a):
    note = notes.note_create(patient=patient_a, author=therapist_a, written_on=today(patient_a), body=TEXT)
    notes.note_edit(note=note, user=therapist_a, written_on=note.written_on, body=EDITED)
    with connection.cursor() as cursor:
        cursor.execute("SELECT body FROM reports_clinicalnote WHERE id = %s", [note.pk])
        [(raw_note,)] = cursor.fetchall()
        cursor.execute("SELECT body FROM reports_clinicalnoterevision WHERE note_id = %s", [note.pk])
        [(raw_revision,)] = cursor.fetchall()
        # The row history (pghistory) keeps copies too: ciphertext as well.
        cursor.execute("SELECT body FROM reports_clinicalnoteevent WHERE pgh_obj_id = %s", [note.pk])
        history = [row[0] for row in cursor.fetchall()]
    for raw in (raw_note, raw_revision, *history):
        assert raw.startswith("gAAAAA")  # a Fernet token
        assert "Canary" not in raw and "sister" not in raw and "supervision" not in raw
    assert history  # the edit left a row-history copy
    assert ClinicalNote.objects.get(pk=note.pk).body == EDITED


# ----- the pages ----------------------------------------------------------------------------------


def test_a_therapist_adds_a_note_from_the_patient_page_and_sees_it_there(patient_a, therapist_a):
    client = logged_in(therapist_a)
    page = client.get("/patients/p-a1/").content.decode()
    assert 'id="notes"' in page and "No notes yet." in page
    assert f'value="{today(patient_a).isoformat()}"' in page  # the date defaults to the clinic's today
    response = client.post("/patients/p-a1/notes/", {"written_on": today(patient_a).isoformat(), "body": TEXT})
    assert response.status_code == 302 and response["Location"] == "/patients/p-a1/#notes"
    assert "Canary" not in response["Location"]
    page = client.get("/patients/p-a1/").content.decode()
    assert "sister&#x27;s visit" in page and "Zoë 情绪" in page
    note = ClinicalNote.objects.get()
    assert f'href="/patients/p-a1/notes/{note.pk}/"' in page  # the author's Edit link
    assert "Note saved." in page


@pytest.mark.parametrize(
    "data, field_words",
    [
        ({"written_on": "", "body": TEXT}, "Date: Give the date."),
        ({"written_on": "not-a-date", "body": TEXT}, "Date: Enter a valid date."),
        ({"written_on": "2999-01-01", "body": TEXT}, "Date: The date cannot be in the future"),
        ({"written_on": "1990-01-01", "body": TEXT}, "Date: The date cannot be before 2000-01-01."),
        ({"written_on": "TODAY", "body": ""}, "Note: Write the note before saving it."),
        ({"written_on": "TODAY", "body": "y" * 10_001}, "Note: Keep the note to at most 10,000 characters"),
        ({"written_on": "TODAY", "body": "a\x00b"}, "Note: Null characters are not allowed."),
        ({}, "Date: Give the date."),
    ],
)
def test_an_invalid_note_from_the_page_is_a_400_naming_the_field(patient_a, therapist_a, data, field_words):
    data = {k: (today(patient_a).isoformat() if v == "TODAY" else v) for k, v in data.items()}
    response = logged_in(therapist_a).post("/patients/p-a1/notes/", data)
    assert response.status_code == 400
    body = response.content.decode()
    assert field_words in body
    assert "The note was not saved" in body
    assert not ClinicalNote.objects.exists()


def test_the_author_edits_from_the_page_and_the_history_shows_the_earlier_version(note, patient_a, therapist_a):
    client = logged_in(therapist_a)
    form = client.get(f"/patients/p-a1/notes/{note.pk}/")
    assert form.status_code == 200 and "sister&#x27;s visit" in form.content.decode()
    response = client.post(
        f"/patients/p-a1/notes/{note.pk}/", {"written_on": note.written_on.isoformat(), "body": EDITED}
    )
    assert response.status_code == 302
    page = client.get("/patients/p-a1/").content.decode()
    assert EDITED in page and "edited" in page and f"/patients/p-a1/notes/{note.pk}/history/" in page
    history = client.get(f"/patients/p-a1/notes/{note.pk}/history/").content.decode()
    assert EDITED in history and "sister&#x27;s visit" in history and "Earlier versions (1)" in history
    invalid = client.post(f"/patients/p-a1/notes/{note.pk}/", {"written_on": "2999-01-01", "body": "z"})
    assert invalid.status_code == 400 and "Date: The date cannot be in the future" in invalid.content.decode()
    assert ClinicalNote.objects.get(pk=note.pk).body == EDITED


def test_another_therapist_of_the_patient_reads_but_may_not_edit(note, patient_a, therapist_b):
    """Therapist B, also assigned to the patient: sees the note and its history, gets 403 (audited) on
    its edit form, and no Edit link."""
    from tests.factories import CareAssignmentFactory

    CareAssignmentFactory(patient=patient_a, therapist=therapist_b)
    client = logged_in(therapist_b)
    page = client.get("/patients/p-a1/").content.decode()
    assert "sister&#x27;s visit" in page
    assert f'href="/patients/p-a1/notes/{note.pk}/"' not in page
    assert client.get(f"/patients/p-a1/notes/{note.pk}/history/").status_code == 200
    since = last_id()
    assert client.get(f"/patients/p-a1/notes/{note.pk}/").status_code == 403
    response = client.post(f"/patients/p-a1/notes/{note.pk}/", {"written_on": note.written_on, "body": EDITED})
    assert response.status_code == 403
    events = new_events(since)
    assert [(e.action, e.outcome, e.object, e.actor) for e in events] == [
        ("access.denied", "denied", f"note:{note.pk}", "therapist.b")
    ] * 2
    assert ClinicalNote.objects.get(pk=note.pk).body == TEXT


def test_a_break_glass_therapist_reads_the_notes(note, patient_a, therapist_b):
    from django.utils import timezone

    client = logged_in(therapist_b)
    assert client.get("/patients/p-a1/").status_code == 404
    BreakGlassGrant.objects.create(
        clinic=patient_a.clinic,
        user=therapist_b,
        patient=patient_a,
        reason="Urgent call from the crisis team tonight",
        granted_at=timezone.now(),
        expires_at=timezone.now() + timedelta(minutes=60),
    )
    assert "sister&#x27;s visit" in client.get("/patients/p-a1/").content.decode()
    assert client.get(f"/patients/p-a1/notes/{note.pk}/history/").status_code == 200


@pytest.mark.parametrize("persona, status", [("clinic_admin", 403), ("auditor", 403), ("foreign_therapist", 404)])
def test_admins_auditors_and_another_clinic_cannot_read_or_write_notes(personas, note, persona, status):
    client = personas[persona]
    for path in ("/patients/p-a1/", f"/patients/p-a1/notes/{note.pk}/", f"/patients/p-a1/notes/{note.pk}/history/"):
        response = client.get(path)
        assert response.status_code == status
        assert b"Canary" not in response.content
    response = client.post("/patients/p-a1/notes/", {"written_on": "2026-01-01", "body": "intrusion"})
    assert response.status_code == status
    assert ClinicalNote.objects.count() == 1


def test_a_note_of_another_patient_is_404_under_this_patient(note, patients_a, therapist_a):
    client = logged_in(therapist_a)
    assert client.get(f"/patients/p-a2/notes/{note.pk}/").status_code == 404
    assert client.get(f"/patients/p-a2/notes/{note.pk}/history/").status_code == 404
    assert client.get("/patients/p-a1/notes/999999/").status_code == 404
    assert client.get("/patients/p-a1/notes/99999999999999999999/").status_code == 404  # beyond a bigint
    assert client.post("/patients/p-a1/notes/999999/", {"written_on": "2026-01-01", "body": "x"}).status_code == 404


def test_reading_a_note_page_is_one_patient_read_event(note, therapist_a):
    client = logged_in(therapist_a)
    for path in (f"/patients/p-a1/notes/{note.pk}/", f"/patients/p-a1/notes/{note.pk}/history/"):
        since = last_id()
        assert client.get(path).status_code == 200
        [event] = new_events(since)
        assert (event.action, event.patients, event.object) == ("patient.read", ["p-a1"], "patient:p-a1")
        assert event.detail["note"] == note.pk
    assert_no_text_in_audit()


def test_notes_are_listed_newest_first(patient_a, therapist_a):
    for days, text in ((3, "Oldest entry"), (0, "Newest entry"), (1, "Middle entry")):
        notes.note_create(
            patient=patient_a, author=therapist_a, written_on=today(patient_a) - timedelta(days=days), body=text
        )
    page = logged_in(therapist_a).get("/patients/p-a1/").content.decode()
    assert page.index("Newest entry") < page.index("Middle entry") < page.index("Oldest entry")


def test_the_notes_cost_the_same_queries_for_1_and_15_notes(patient_a, therapist_a, therapist_b):
    """The patient page and the report read the notes (authors and revision counts included) in one
    query, whatever their number."""
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    from tests.factories import CareAssignmentFactory

    CareAssignmentFactory(patient=patient_a, therapist=therapist_b)
    client = logged_in(therapist_a)
    first = notes.note_create(patient=patient_a, author=therapist_a, written_on=today(patient_a), body="one")
    client.get("/patients/p-a1/")  # warm: the analytics are computed once
    client.get("/patients/p-a1/report/")

    def queries(path: str) -> int:
        with CaptureQueriesContext(db) as captured:
            assert client.get(path).status_code == 200
        return len(captured.captured_queries)

    few = {path: queries(path) for path in ("/patients/p-a1/", "/patients/p-a1/report/")}
    notes.note_edit(note=first, user=therapist_a, written_on=first.written_on, body="one, edited")
    for n in range(14):
        author = therapist_a if n % 2 else therapist_b
        note = notes.note_create(patient=patient_a, author=author, written_on=today(patient_a), body=f"note {n}")
        notes.note_edit(note=note, user=author, written_on=note.written_on, body=f"note {n}, edited")
    many = {path: queries(path) for path in few}
    assert many == few
    assert logged_in(therapist_a).get("/patients/p-a1/").content.decode().count('class="note-item"') == 15
