"""The console's patients section (issue 12): the clinic's patient list with search and the no-therapist
filter, a patient's display name and time zone, assignment (assign, reassign, unassign; several
therapists per patient) and the `unassign_patient` command. Every change is audited with before and after,
and nothing of it is reachable from another clinic or another role."""

import io
import json
import re
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import _member, logged_in
from tests.factories import CareAssignmentFactory, OutcomeResponseFactory, PatientFactory, TherapySessionFactory
from tracking.models import AuditEvent, CareAssignment, Patient, Role

CANARY = "Zelda-canary-name"


def new_events(since: int, action: str | None = None) -> list[AuditEvent]:
    events = AuditEvent.objects.filter(pk__gt=since).order_by("pk")
    return list(events.filter(action=action) if action else events)


def last_id() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def url(patient: Patient, action: str = "") -> str:
    return f"/clinic/patients/{patient.pk}/{action}"


@pytest.fixture
def admin(personas):
    return personas["clinic_admin"]


@pytest.fixture
def foreign_admin(other_clinic):
    return logged_in(_member(other_clinic, Role.CLINIC_ADMIN, "admin.river"))


@pytest.fixture
def unassigned(clinic):
    return PatientFactory(clinic=clinic, player_id="p-new1")


# ----- the list ---------------------------------------------------------------------------------------


def test_list_shows_identifiers_assignment_and_dates_and_records_the_read(
    admin, patient_a, patient_b, foreign_patient, unassigned, therapist_a
):
    patient_a.display_name = CANARY
    patient_a.save()
    CareAssignmentFactory(patient=patient_a, therapist=_member(patient_a.clinic, Role.THERAPIST, "therapist.c"))
    TherapySessionFactory(patient=patient_a, started_at=datetime(2026, 3, 2, 10, tzinfo=UTC))
    OutcomeResponseFactory(patient=patient_a, administered_at=datetime(2026, 5, 9, 10, tzinfo=UTC), total=23)
    before = last_id()
    response = admin.get("/clinic/patients/")
    assert response.status_code == 200
    html = response.content.decode()
    row = re.search(r'<tr data-player-id="p-a1">(.*?)</tr>', html, re.S).group(1)
    assert CANARY in row and "therapist.a, therapist.c" in row
    assert "2026-03-02" in row  # first seen: the first session (the patient's time zone, Europe/London)
    assert "2026-05-09" in row  # last activity: the latest questionnaire
    assert 'data-player-id="p-b1"' in html and 'data-player-id="p-new1"' in html
    assert "p-r1" not in html  # another clinic's patient
    assert "23" not in row  # no score, no clinical detail
    (event,) = new_events(before)
    assert event.action == "caseload.read" and event.chain == "northside" and event.actor == "admin.north"
    assert sorted(event.patients) == ["p-a1", "p-b1", "p-new1"]
    assert event.detail == {"view": "clinic-patients"}


def test_search_is_posted_and_kept_in_the_session_never_in_a_query_string(admin, patient_a, patient_b):
    response = admin.post("/clinic/patients/search", {"q": "p-b"})
    assert response.status_code == 302 and response["Location"] == "/clinic/patients/"
    html = admin.get("/clinic/patients/").content.decode()
    assert 'data-player-id="p-b1"' in html and 'data-player-id="p-a1"' not in html
    assert 'value="p-b"' in html  # the term is shown back in the search field
    links = re.findall(r'(?:href|action)="([^"]*)"', html)
    assert not [link for link in links if "?" in link and "p-" in link.split("?", 1)[1]]
    admin.post("/clinic/patients/search", {"q": "p-b", "clear": "1"})
    html = admin.get("/clinic/patients/").content.decode()
    assert 'data-player-id="p-a1"' in html and 'data-player-id="p-b1"' in html


def test_a_search_term_that_is_not_text_is_refused_with_its_field_named(admin, patient_a):
    response = admin.post("/clinic/patients/search", {"q": "p-a\x00"}, follow=True)
    assert "Search (player id): Contains a NUL character" in response.content.decode()
    assert 'data-player-id="p-a1"' in response.content.decode()


def test_filter_keeps_the_patients_with_no_therapist(admin, patient_a, unassigned):
    html = admin.get("/clinic/patients/?filter=unassigned").content.decode()
    assert 'data-player-id="p-new1"' in html and 'data-player-id="p-a1"' not in html
    assert "No therapist" in html


def test_the_list_is_paginated(admin, clinic):
    for n in range(55):
        PatientFactory(clinic=clinic, player_id=f"bulk-{n:03d}")
    first = admin.get("/clinic/patients/").content.decode()
    second = admin.get("/clinic/patients/?page=2").content.decode()
    assert first.count("<tr data-player-id=") == 50 and second.count("<tr data-player-id=") == 7  # with p-a1 and p-b1
    assert "Page 1 of 2" in first and 'data-player-id="bulk-054"' in second


def test_the_list_costs_the_same_number_of_queries_for_more_patients(admin, clinic, therapist_a, therapist_b):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin.get("/clinic/patients/").status_code == 200
        return len(captured)

    few = queries()
    for n in range(20):
        patient = PatientFactory(clinic=clinic, player_id=f"more-{n:02d}")
        CareAssignmentFactory(patient=patient, therapist=therapist_a if n % 2 else therapist_b)
        TherapySessionFactory(patient=patient)
    assert queries() == few


# ----- a patient's page: display name and time zone ---------------------------------------------------


def test_patient_page_shows_the_record_and_records_the_read(admin, patient_a):
    before = last_id()
    response = admin.get(url(patient_a))
    assert response.status_code == 200
    html = response.content.decode()
    assert "p-a1" in html and "therapist.a" in html and "Europe/London" in html
    (event,) = new_events(before)
    assert (event.action, event.patients, event.object) == ("patient.read", ["p-a1"], "patient:p-a1")


def test_saving_the_display_name_and_time_zone_is_audited_without_the_name(admin, patient_a):
    before = last_id()
    response = admin.post(url(patient_a), {"display_name": f"  {CANARY}  ", "timezone": "Asia/Tokyo"})
    assert response.status_code == 302 and response["Location"] == url(patient_a)
    patient_a.refresh_from_db()
    assert (patient_a.display_name, patient_a.timezone) == (CANARY, "Asia/Tokyo")
    (event,) = new_events(before, "config.change")
    assert event.chain == "northside" and event.patients == ["p-a1"] and event.object == "patient:p-a1"
    assert event.detail["fields"] == ["display_name", "timezone"]
    assert event.detail["before"] == {"timezone": ""} and event.detail["after"] == {"timezone": "Asia/Tokyo"}
    assert CANARY not in json.dumps([e.detail for e in AuditEvent.objects.all()])
    # Saving the same values again changes nothing and records no change.
    before = last_id()
    admin.post(url(patient_a), {"display_name": CANARY, "timezone": "Asia/Tokyo"})
    assert new_events(before, "config.change") == []
    # Back to the clinic's time zone.
    admin.post(url(patient_a), {"display_name": CANARY, "timezone": ""})
    patient_a.refresh_from_db()
    assert patient_a.timezone == "" and patient_a.tz_name == "Europe/London"


@pytest.mark.parametrize(
    "values, field, message",
    [
        ({"display_name": "x" * 101, "timezone": ""}, "display-name", "At most 100 characters"),
        ({"display_name": "Ann\tBee", "timezone": ""}, "display-name", "control character"),
        ({"display_name": "Ann\x00", "timezone": ""}, "display-name", "NUL character"),
        ({"display_name": "Ann", "timezone": "Mars/Olympus"}, "timezone", "Unknown time zone"),
    ],
)
def test_invalid_details_are_refused_naming_the_field(admin, patient_a, values, field, message):
    before = last_id()
    response = admin.post(url(patient_a), values)
    assert response.status_code == 400
    html = response.content.decode()
    assert f'id="patient-{field}-error">' in html and message in html
    patient_a.refresh_from_db()
    assert (patient_a.display_name, patient_a.timezone) == ("", "")
    assert new_events(before, "config.change") == []


# ----- assignment -------------------------------------------------------------------------------------


def test_assigning_a_second_therapist_puts_the_patient_on_their_caseload(admin, personas, patient_a, therapist_b):
    assert 'data-player-id="p-a1"' not in personas["therapist_b"].get("/").content.decode()
    before = last_id()
    response = admin.post(url(patient_a, "assign"), {"therapist": therapist_b.pk})
    assert response.status_code == 302
    assert set(CareAssignment.objects.filter(patient=patient_a).values_list("therapist__username", flat=True)) == {
        "therapist.a",
        "therapist.b",
    }
    assert 'data-player-id="p-a1"' in personas["therapist_b"].get("/").content.decode()
    assert personas["therapist_b"].get("/patients/p-a1/").status_code == 200
    (event,) = new_events(before, "assignment.change")
    assert event.chain == "northside" and event.actor == "admin.north" and event.patients == ["p-a1"]
    assert event.detail == {"op": "assign", "therapist": "therapist.b"}
    # Assigning again changes nothing.
    before = last_id()
    admin.post(url(patient_a, "assign"), {"therapist": therapist_b.pk})
    assert new_events(before, "assignment.change") == []


@pytest.mark.parametrize("who", ["foreign_therapist", "auditor", "clinic_admin", "nobody"])
def test_only_a_therapist_of_the_same_clinic_can_be_assigned(admin, request, patient_a, who):
    user_id = 999999 if who == "nobody" else request.getfixturevalue(who).pk
    before = last_id()
    response = admin.post(url(patient_a, "assign"), {"therapist": user_id})
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="assign-therapist-error">Choose one of the therapists listed.' in html
    assert CareAssignment.objects.filter(patient=patient_a).count() == 1
    assert new_events(before, "assignment.change") == []


def test_the_assign_form_offers_only_the_clinics_therapists(admin, patient_a, therapist_b, foreign_therapist):
    html = admin.get(url(patient_a)).content.decode()
    form = re.search(r'<form[^>]*id="assign-form".*?</form>', html, re.S).group(0)
    assert "therapist.b" in form
    assert "therapist.river" not in form and "auditor.north" not in form and "admin.north" not in form
    assert ">therapist.a<" not in form  # already assigned


def test_unassigning_makes_the_patient_a_404_for_that_therapist(admin, personas, patient_a, therapist_a):
    assert personas["therapist_a"].get("/patients/p-a1/").status_code == 200
    before = last_id()
    response = admin.post(url(patient_a, "unassign"), {"therapist": therapist_a.pk})
    assert response.status_code == 302
    assert not CareAssignment.objects.filter(patient=patient_a).exists()
    assert personas["therapist_a"].get("/patients/p-a1/").status_code == 404
    assert 'data-player-id="p-a1"' not in personas["therapist_a"].get("/").content.decode()
    (event,) = new_events(before, "assignment.change")
    assert event.patients == ["p-a1"] and event.object == "patient:p-a1"
    assert event.detail == {"op": "unassign", "therapist": "therapist.a", "before": ["therapist.a"], "after": []}
    # The patient now shows under the no-therapist filter.
    assert 'data-player-id="p-a1"' in admin.get("/clinic/patients/?filter=unassigned").content.decode()


def test_unassigning_someone_not_assigned_is_refused_naming_the_field(admin, patient_a, therapist_b):
    response = admin.post(url(patient_a, "unassign"), {"therapist": therapist_b.pk})
    assert response.status_code == 400
    assert "Unassign: Choose one of the therapists listed." in response.content.decode()
    assert CareAssignment.objects.filter(patient=patient_a).count() == 1


def test_reassigning_moves_the_patient_in_one_audited_change(admin, personas, patient_a, therapist_a, therapist_b):
    before = last_id()
    response = admin.post(
        url(patient_a, "reassign"), {"from_therapist": therapist_a.pk, "to_therapist": therapist_b.pk}
    )
    assert response.status_code == 302
    assert list(CareAssignment.objects.filter(patient=patient_a).values_list("therapist__username", flat=True)) == [
        "therapist.b"
    ]
    assert personas["therapist_a"].get("/patients/p-a1/").status_code == 404
    assert personas["therapist_b"].get("/patients/p-a1/").status_code == 200
    (event,) = new_events(before, "assignment.change")
    assert event.detail == {
        "op": "reassign",
        "from": "therapist.a",
        "to": "therapist.b",
        "before": ["therapist.a"],
        "after": ["therapist.b"],
    }


def test_reassign_form_errors_name_the_field(admin, patient_a, therapist_a, foreign_therapist):
    response = admin.post(url(patient_a, "reassign"), {"from_therapist": therapist_a.pk, "to_therapist": ""})
    assert response.status_code == 400 and 'id="reassign-to-error"' in response.content.decode()
    response = admin.post(
        url(patient_a, "reassign"), {"from_therapist": therapist_a.pk, "to_therapist": foreign_therapist.pk}
    )
    assert response.status_code == 400 and 'id="reassign-to-error"' in response.content.decode()
    response = admin.post(url(patient_a, "reassign"), {"from_therapist": "x", "to_therapist": therapist_a.pk})
    assert response.status_code == 400 and 'id="reassign-from-error"' in response.content.decode()
    assert list(CareAssignment.objects.filter(patient=patient_a).values_list("therapist_id", flat=True)) == [
        therapist_a.pk
    ]


# ----- who may reach it -------------------------------------------------------------------------------


def test_an_admin_of_another_clinic_gets_404_on_this_clinics_patients(
    foreign_admin, patient_a, therapist_a, foreign_patient
):
    html = foreign_admin.get("/clinic/patients/").content.decode()
    assert "p-a1" not in html and 'data-player-id="p-r1"' in html
    before = last_id()
    assert foreign_admin.get(url(patient_a)).status_code == 404
    assert foreign_admin.post(url(patient_a), {"display_name": "x", "timezone": ""}).status_code == 404
    assert foreign_admin.post(url(patient_a, "unassign"), {"therapist": therapist_a.pk}).status_code == 404
    assert foreign_admin.post(url(patient_a, "assign"), {"therapist": therapist_a.pk}).status_code == 404
    assert CareAssignment.objects.filter(patient=patient_a, therapist=therapist_a).exists()
    patient_a.refresh_from_db()
    assert patient_a.display_name == ""
    denied = new_events(before, "access.denied")
    assert len(denied) == 4 and all(e.chain == "riverside" and e.patients == [] for e in denied)
    assert new_events(before, "patient.read") == []


@pytest.mark.parametrize("persona", ["therapist_a", "therapist_b", "auditor", "foreign_therapist"])
def test_therapists_and_auditors_get_403(personas, patient_a, therapist_b, persona):
    client = personas[persona]
    assert client.get("/clinic/patients/").status_code == 403
    assert client.get(url(patient_a)).status_code == 403
    assert client.post(url(patient_a, "assign"), {"therapist": therapist_b.pk}).status_code == 403
    assert client.post("/clinic/patients/search", {"q": "p-a"}).status_code == 403
    assert CareAssignment.objects.filter(patient=patient_a).count() == 1


def test_a_refused_patient_record_is_recorded(personas, patient_a, therapist_b):
    before = last_id()
    assert personas["therapist_b"].post(url(patient_a, "assign"), {"therapist": therapist_b.pk}).status_code == 403
    assert personas["foreign_therapist"].get(url(patient_a)).status_code == 403
    own, foreign = new_events(before, "access.denied")
    assert (own.chain, own.actor, own.patients, own.object) == ("northside", "therapist.b", ["p-a1"], "patient:p-a1")
    assert own.detail == {"status": 403, "view": "clinic-patient"} and own.outcome == "denied"
    # Another clinic's therapist: their own chain, and the patient is not named.
    assert (foreign.chain, foreign.patients, foreign.object) == ("riverside", [], f"patient-record:{patient_a.pk}")


# ----- the command ------------------------------------------------------------------------------------


def run(*args, **kwargs) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **kwargs)
    return out.getvalue()


def test_unassign_patient_command(personas, patient_a, therapist_a):
    before = last_id()
    assert "Unassigned p-a1 from therapist.a." in run("unassign_patient", "p-a1", "therapist.a", clinic="northside")
    assert not CareAssignment.objects.filter(patient=patient_a).exists()
    assert personas["therapist_a"].get("/patients/p-a1/").status_code == 404
    (event,) = new_events(before, "assignment.change")
    assert event.actor == "system" and event.chain == "northside" and event.patients == ["p-a1"]
    assert event.detail["op"] == "unassign" and event.detail["before"] == ["therapist.a"]


@pytest.mark.parametrize(
    "args, clinic_slug, message",
    [
        (("p-a1", "therapist.a"), "nowhere", "No clinic with slug 'nowhere'"),
        (("p-zz", "therapist.a"), "northside", "No patient 'p-zz' in clinic northside"),
        (("p-a1", "therapist.river"), "northside", "'therapist.river' is not a member of clinic northside"),
        (("p-a1", "therapist.b"), "northside", "'therapist.b' is not assigned to p-a1"),
        (("p-r1", "therapist.river"), "northside", "No patient 'p-r1' in clinic northside"),
    ],
)
def test_unassign_patient_command_errors(personas, patient_a, foreign_patient, args, clinic_slug, message):
    before = last_id()
    with pytest.raises(CommandError, match=re.escape(message)):
        run("unassign_patient", *args, clinic=clinic_slug)
    assert CareAssignment.objects.count() == 3
    assert new_events(before, "assignment.change") == []
