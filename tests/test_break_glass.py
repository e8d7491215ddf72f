"""Break-glass (DESIGN §7): a therapist's emergency access to an unassigned patient of their own clinic.

Granted with a reason of at least 20 characters, refused without one; an unknown and a foreign id get the
same answer; the grant is audited with its reason and e-mailed to the clinic admins (without it); the
patient page carries a banner while it lasts, and after the window the patient is a 404 again."""

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from tests.conftest import logged_in
from tracking import services
from tracking.models import AuditAction, AuditEvent, AuditOutcome, BreakGlassGrant

REASON = "Crisis call from the patient, assigned therapist on leave"


@pytest.fixture(autouse=True)
def _audit_heads(settings, tmp_path):
    settings.AUDIT_HEAD_DIR = str(tmp_path / "heads")
    settings.AUDIT_SIGNING_KEY = "test-signing-key-not-secret-key"


@pytest.fixture
def client_a(therapist_a, patient_a):
    return logged_in(therapist_a)


def ask(client, player_id: str, reason: str = REASON):
    return client.post("/break-glass/", {"player_id": player_id, "reason": reason})


def form_errors(response) -> list[str]:
    return re.findall(r'<p class="form-error"[^>]*>(.*?)</p>', response.content.decode())


def test_the_form_asks_for_the_player_id_and_a_reason(client_a):
    response = client_a.get("/break-glass/")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'name="player_id"' in html and 'name="reason"' in html and 'method="post"' in html
    assert "60 minutes" in html


def test_granted_with_a_reason_opens_the_patient_with_a_banner(client_a, therapist_a, patient_b, clinic_admin):
    clinic_admin.email = "admin@example.org"
    clinic_admin.save()
    assert client_a.get(f"/patients/{patient_b.player_id}/").status_code == 404  # not assigned

    response = ask(client_a, patient_b.player_id)
    assert response.status_code == 302 and response["Location"] == f"/patients/{patient_b.player_id}/"
    assert "?" not in response["Location"]
    grant = BreakGlassGrant.objects.get(user=therapist_a, patient=patient_b)
    assert grant.reason == REASON
    assert grant.expires_at - grant.granted_at == timedelta(minutes=60)

    page = client_a.get(f"/patients/{patient_b.player_id}/")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="break-glass-banner"' in html
    until = grant.expires_at.astimezone(ZoneInfo(patient_b.tz_name))
    assert f"Emergency access until {until:%H:%M}" in html
    assert f"granted to you for: “{REASON}”" in html


def test_an_assigned_patient_page_has_no_banner(client_a, patient_a):
    html = client_a.get(f"/patients/{patient_a.player_id}/").content.decode()
    assert "break-glass-banner" not in html


def test_the_grant_is_audited_with_its_reason_in_the_clinics_chain(client_a, therapist_a, patient_b):
    ask(client_a, patient_b.player_id)
    grant = BreakGlassGrant.objects.get()
    event = AuditEvent.objects.get(action=AuditAction.BREAK_GLASS)
    assert event.chain == "northside" and event.actor == therapist_a.username and event.role == "therapist"
    assert event.patients == [patient_b.player_id]
    assert event.object == f"break_glass:{grant.pk}"
    assert event.detail["reason"] == REASON and event.detail["minutes"] == 60
    assert event.detail["expires_at"].startswith(grant.expires_at.strftime("%Y-%m-%dT%H:%M"))
    assert event.outcome == AuditOutcome.OK and event.ip == "127.0.0.1"


def test_the_clinic_admins_are_emailed_after_commit_with_ids_and_a_link_but_not_the_reason(
    therapist_a, patient_b, clinic_admin, mailoutbox, django_capture_on_commit_callbacks
):
    clinic_admin.email = "admin@example.org"
    clinic_admin.save()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.break_glass_grant(user=therapist_a, patient=patient_b, reason=REASON)
    assert mailoutbox == []  # not before the commit
    for callback in callbacks:
        callback()
    [mail] = mailoutbox
    assert mail.to == ["admin@example.org"]
    assert therapist_a.username in mail.subject and patient_b.player_id in mail.subject
    assert therapist_a.username in mail.body and patient_b.player_id in mail.body and "http" in mail.body
    assert REASON not in mail.body and REASON not in mail.subject
    assert "Crisis" not in mail.body


def test_a_failing_mail_server_does_not_undo_the_grant(
    therapist_a, patient_b, clinic_admin, django_capture_on_commit_callbacks, monkeypatch
):
    clinic_admin.email = "admin@example.org"
    clinic_admin.save()

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("smtp down")

    monkeypatch.setattr(services, "send_mail", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        services.break_glass_grant(user=therapist_a, patient=patient_b, reason=REASON)
    assert BreakGlassGrant.objects.filter(patient=patient_b).exists()


@pytest.mark.parametrize(
    "reason, message",
    [
        ("", "at least 20 characters (this one has 0)"),
        ("x" * 19, "at least 20 characters (this one has 19)"),
        ("   Patient in crisis   ", "at least 20 characters (this one has 17)"),
        ("Patient in crisis now\x00!", "NUL"),
        ("y" * 501, "at most 500 characters"),
    ],
    ids=["empty", "19-characters", "padded", "nul", "too-long"],
)
def test_refused_without_a_reason_of_at_least_20_characters(client_a, patient_b, reason, message):
    response = ask(client_a, patient_b.player_id, reason)
    assert response.status_code == 200
    [error] = form_errors(response)
    assert message in error
    assert not BreakGlassGrant.objects.exists()
    assert client_a.get(f"/patients/{patient_b.player_id}/").status_code == 404


def test_twenty_characters_are_enough(client_a, patient_b):
    assert ask(client_a, patient_b.player_id, "z" * 20).status_code == 302
    assert BreakGlassGrant.objects.filter(patient=patient_b).exists()


def test_an_unknown_and_a_foreign_id_get_the_same_answer(client_a, patient_b, foreign_patient):
    foreign = ask(client_a, foreign_patient.player_id)
    unknown = ask(client_a, "p-zz9")
    assert foreign.status_code == unknown.status_code == 200
    assert (
        form_errors(foreign)
        == form_errors(unknown)
        == [
            "No patient with this id in your clinic. Check the id: emergency access reaches only patients of your "
            "own clinic."
        ]
    )
    same = foreign.content.decode().replace(foreign_patient.player_id, "ID")
    other = unknown.content.decode().replace("p-zz9", "ID")
    strip = re.compile(r'name="csrfmiddlewaretoken" value="[^"]*"')
    assert strip.sub("", same) == strip.sub("", other)
    assert not BreakGlassGrant.objects.exists()
    # Both are recorded alike, as refused attempts in the therapist's clinic chain; nothing in the other's.
    refused = list(AuditEvent.objects.filter(action=AuditAction.BREAK_GLASS).order_by("seq"))
    assert [(e.chain, e.outcome, e.patients, e.detail["tried"]) for e in refused] == [
        ("northside", "denied", [], foreign_patient.player_id),
        ("northside", "denied", [], "p-zz9"),
    ]
    assert not AuditEvent.objects.filter(chain="riverside", action=AuditAction.BREAK_GLASS).exists()


@pytest.mark.parametrize("player_id", ["", "bad id/../x", "p\x00b1", "é" * 3])
def test_an_impossible_id_is_refused_calmly(client_a, player_id):
    response = ask(client_a, player_id)
    assert response.status_code == 200 and form_errors(response)
    assert not BreakGlassGrant.objects.exists()


def test_the_player_id_never_goes_into_a_query_string(client_a, patient_b):
    """A GET with the fields in its query string grants nothing: the form is POSTed."""
    response = client_a.get("/break-glass/", {"player_id": patient_b.player_id, "reason": REASON})
    assert response.status_code == 200 and not BreakGlassGrant.objects.exists()
    assert patient_b.player_id not in response.content.decode()


def test_only_therapists_may_break_the_glass(personas, patient_b):
    for persona in ("clinic_admin", "auditor"):
        assert ask(personas[persona], patient_b.player_id).status_code == 403
    assert ask(personas["anonymous"], patient_b.player_id).status_code == 302
    assert not BreakGlassGrant.objects.exists()


def test_an_assigned_patient_needs_no_emergency_access(client_a, patient_a):
    response = ask(client_a, patient_a.player_id)
    assert response.status_code == 302 and response["Location"] == f"/patients/{patient_a.player_id}/"
    assert not BreakGlassGrant.objects.exists()


def test_the_grant_expires_by_itself_after_the_window(client_a, therapist_a, patient_b):
    """A controlled clock: grants made in the past, one still inside its 60 minutes and one past them."""
    now = timezone.now()
    services.break_glass_grant(user=therapist_a, patient=patient_b, reason=REASON, now=now - timedelta(minutes=59))
    assert client_a.get(f"/patients/{patient_b.player_id}/").status_code == 200
    assert client_a.get(f"/patients/{patient_b.player_id}/live.json").status_code == 200

    BreakGlassGrant.objects.all().delete()
    services.break_glass_grant(user=therapist_a, patient=patient_b, reason=REASON, now=now - timedelta(minutes=61))
    assert client_a.get(f"/patients/{patient_b.player_id}/").status_code == 404
    assert client_a.get(f"/patients/{patient_b.player_id}/live.json").status_code == 404


def test_the_window_is_break_glass_minutes(settings, client_a, therapist_a, patient_b):
    settings.BREAK_GLASS_MINUTES = 5
    grant = services.break_glass_grant(
        user=therapist_a, patient=patient_b, reason=REASON, now=timezone.now() - timedelta(minutes=6)
    )
    assert grant.expires_at - grant.granted_at == timedelta(minutes=5)
    assert client_a.get(f"/patients/{patient_b.player_id}/").status_code == 404


def test_a_grant_is_for_its_therapist_only(therapist_a, therapist_b, patient_a, patient_b, foreign_therapist):
    services.break_glass_grant(user=therapist_a, patient=patient_b, reason=REASON)
    # Therapist B's own patient: a grant to A changes nothing for anyone else.
    other = logged_in(foreign_therapist)
    assert other.get(f"/patients/{patient_b.player_id}/").status_code == 404
    assert logged_in(therapist_b).get(f"/patients/{patient_a.player_id}/").status_code == 404


def test_the_caseload_links_to_emergency_access(client_a):
    html = client_a.get("/").content.decode()
    assert 'href="/break-glass/"' in html and "Emergency access to a patient not assigned to you" in html


def test_the_grant_is_listed_for_the_auditors_review(client_a, patient_b, auditor):
    ask(client_a, patient_b.player_id)
    html = logged_in(auditor).get("/audit/").content.decode()
    reviews = html.split('id="reviews"', 1)[1].split('id="events"', 1)[0]
    assert "Break-glass" in reviews and "therapist.a" in reviews and patient_b.player_id in reviews
    assert REASON in reviews
