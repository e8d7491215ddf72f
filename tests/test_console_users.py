"""The console's users and tokens (issue 12): invitations with a one-time link, roles, deactivation and
reactivation with their guards, ingest tokens shown once and revoked, the operator commands, and the
audit events with before and after. On PostgreSQL, with a controlled clock where time matters."""

import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from tests.conftest import logged_in
from tests.factories import PASSWORD, MembershipFactory, UserFactory
from tests.test_ingest import make_batch, post
from tracking.models import AuditEvent, IngestToken, Membership, Role, UserSession

pytestmark = pytest.mark.django_db

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
NEW_PASSWORD = "a-long-enough-passphrase-2026"
LINK = re.compile(r"https?://[^/\s]+(/welcome/[^/\s]+/[^/\s]+/)")


def user_events(**filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="user.change", **filters).order_by("chain", "seq"))


def invite(client: Client, **overrides):
    data = {
        "username": "nina.new",
        "email": "nina@example.org",
        "first_name": "Nina",
        "last_name": "Novak",
        "role": Role.THERAPIST,
        **overrides,
    }
    return client.post("/clinic/users/invite", data)


def login(client: Client, username: str, password: str):
    return client.post("/login/", {"username": username, "password": password})


@pytest.fixture
def admin_client(clinic_admin):
    return logged_in(clinic_admin)


@pytest.fixture
def invited(admin_client, clinic, mailoutbox, django_capture_on_commit_callbacks):
    """An invitation sent: (the user, the path of the link in the e-mail)."""
    with django_capture_on_commit_callbacks(execute=True):
        response = invite(admin_client)
    assert response.status_code == 302
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["nina@example.org"] and "Northside" in mail.subject
    assert "72 hours" in mail.body
    match = LINK.search(mail.body)
    assert match, mail.body
    return get_user_model().objects.get(username="nina.new"), match.group(1)


# ----- invitations --------------------------------------------------------------------------------


def test_invite_sets_a_password_through_the_link_and_logs_in(invited, clinic):
    user, link = invited
    assert not user.has_usable_password() and user.is_active
    assert Membership.objects.get(user=user, clinic=clinic).role == Role.THERAPIST
    assert (user.first_name, user.last_name) == ("Nina", "Novak")
    assert login(Client(), "nina.new", NEW_PASSWORD).status_code == 200  # no password yet

    page = Client().get(link)
    assert page.status_code == 200 and b"Set the password for" in page.content
    response = Client().post(link, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/login/"
    client = Client()
    assert login(client, "nina.new", NEW_PASSWORD).status_code == 302
    assert client.get("/").status_code == 200  # a therapist's caseload

    created, invite_event, accepted = user_events(object="user:nina.new")
    assert created.detail["op"] == "create" and created.detail["role"] == Role.THERAPIST  # services.user_create
    assert invite_event.actor == "admin.north" and invite_event.chain == "northside"
    assert invite_event.detail["op"] == "invite" and invite_event.detail["before"] is None
    assert invite_event.detail["after"]["role"] == Role.THERAPIST
    assert invite_event.detail["after"]["email"] == "nina@example.org"
    assert accepted.actor == "nina.new" and accepted.detail == {"op": "invitation_accepted", "changed": ["password"]}
    assert NEW_PASSWORD not in json.dumps([e.detail for e in AuditEvent.objects.all()])


def test_the_link_works_once(invited):
    _, link = invited
    body = {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    assert Client().post(link, body).status_code == 302
    again = Client().post(
        link, {"new_password1": "another-long-passphrase", "new_password2": "another-long-passphrase"}
    )
    assert again.status_code == 410 and b"This link no longer works" in again.content
    assert Client().get(link).status_code == 410
    assert login(Client(), "nina.new", NEW_PASSWORD).status_code == 302  # the first password stands


def test_the_link_expires_after_72_hours(admin_client, mailoutbox, django_capture_on_commit_callbacks):
    with time_machine.travel(START, tick=False) as clock:
        with django_capture_on_commit_callbacks(execute=True):
            assert invite(admin_client).status_code == 302
        link = LINK.search(mailoutbox[0].body).group(1)
        clock.move_to(START + timedelta(hours=71, minutes=59))
        assert Client().get(link).status_code == 200
        clock.move_to(START + timedelta(hours=72, minutes=1))
        response = Client().post(link, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
        assert response.status_code == 410
    assert not get_user_model().objects.get(username="nina.new").has_usable_password()


def test_a_new_link_after_the_first_expired(clinic_admin, mailoutbox, django_capture_on_commit_callbacks):
    with time_machine.travel(START, tick=False) as clock:
        with django_capture_on_commit_callbacks(execute=True):
            assert invite(logged_in(clinic_admin)).status_code == 302
        first = LINK.search(mailoutbox[0].body).group(1)
        clock.move_to(START + timedelta(hours=80))
        admin_client = logged_in(clinic_admin)  # the first session ended long ago
        user = get_user_model().objects.get(username="nina.new")
        assert Client().get(first).status_code == 410
        page = admin_client.get("/clinic/users/").content.decode()
        assert f"/clinic/users/{user.pk}/resend-invitation" in page
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(f"/clinic/users/{user.pk}/resend-invitation", follow=True)
        assert b"A new link is on its way to nina@example.org" in response.content
        second = LINK.search(mailoutbox[1].body).group(1)
        body = {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
        assert Client().post(second, body).status_code == 302
        refused = admin_client.post(f"/clinic/users/{user.pk}/resend-invitation", follow=True)
        assert b"has set a password already" in refused.content
    assert [e.detail["op"] for e in user_events(object="user:nina.new")] == [
        "create",
        "invite",
        "invite_resent",
        "invitation_accepted",
    ]


def test_an_altered_link_fails(invited):
    user, link = invited
    assert Client().get(link[:-3] + "xx/").status_code == 410
    assert Client().get("/welcome/Zm9v/1-abc/").status_code == 410


def test_the_password_is_checked_by_the_validators(invited):
    user, link = invited
    response = Client().post(link, {"new_password1": "short", "new_password2": "short"})
    assert response.status_code == 400 and b"at least 12 characters" in response.content
    mismatch = Client().post(link, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD + "x"})
    assert mismatch.status_code == 400 and b"didn" in mismatch.content
    user.refresh_from_db()
    assert not user.has_usable_password()


def test_a_deactivated_invitee_cannot_use_the_link(invited, admin_client):
    user, link = invited
    assert admin_client.post(f"/clinic/users/{user.pk}/deactivate").status_code == 302
    assert Client().get(link).status_code == 410


@pytest.mark.parametrize(
    "overrides, field, message",
    [
        ({"username": ""}, "Username", "This field is required"),
        ({"username": "has space"}, "Username", "letters, digits"),
        ({"username": "therapist.a"}, "Username", "is taken"),
        ({"email": "not-an-email"}, "E-mail", "valid email"),
        ({"role": "superuser"}, "Role", "Select a valid choice"),
    ],
)
def test_the_invitation_form_names_the_field(admin_client, therapist_a, mailoutbox, overrides, field, message):
    response = invite(admin_client, **overrides)
    assert response.status_code == 400
    html = response.content.decode()
    assert f"{field}: " in html and message in html
    assert not get_user_model().objects.filter(username="nina.new").exists() and not mailoutbox


def test_invitation_goes_to_the_admins_clinic_only(clinic_admin, other_clinic, clinic):
    response = invite(logged_in(clinic_admin), clinic=other_clinic.pk)
    assert response.status_code == 400 and b"Select a valid choice" in response.content
    assert not Membership.objects.filter(clinic=other_clinic, user__username="nina.new").exists()


# ----- roles ----------------------------------------------------------------------------------------


def test_role_change_is_audited_with_before_and_after(admin_client, therapist_a, clinic):
    response = admin_client.post(f"/clinic/users/{therapist_a.pk}/role", {"role": Role.AUDITOR}, follow=True)
    assert b"Therapist \xe2\x86\x92 Compliance auditor" in response.content
    assert Membership.objects.get(user=therapist_a, clinic=clinic).role == Role.AUDITOR
    (event,) = user_events(object="user:therapist.a")
    assert event.actor == "admin.north" and event.role == Role.CLINIC_ADMIN and event.chain == "northside"
    assert event.detail == {
        "op": "role",
        "before": {"role": "therapist", "active": True},
        "after": {"role": "auditor", "active": True},
    }


def test_an_admin_cannot_change_their_own_role(admin_client, clinic_admin, clinic):
    MembershipFactory(clinic=clinic, role=Role.CLINIC_ADMIN, user__username="admin.two")
    response = admin_client.post(f"/clinic/users/{clinic_admin.pk}/role", {"role": Role.THERAPIST}, follow=True)
    assert b"You cannot change your own role" in response.content
    assert Membership.objects.get(user=clinic_admin).role == Role.CLINIC_ADMIN
    assert not user_events()


def test_the_last_admin_keeps_the_role(clinic, clinic_admin):
    other = MembershipFactory(clinic=clinic, role=Role.CLINIC_ADMIN, user__username="admin.two").user
    second = logged_in(other)
    # Two admins: one may demote the other ...
    assert second.post(f"/clinic/users/{clinic_admin.pk}/role", {"role": Role.THERAPIST}).status_code == 302
    assert Membership.objects.get(user=clinic_admin).role == Role.THERAPIST
    # ... but the one left is the last: an operator's command cannot demote them either.
    with pytest.raises(CommandError, match="last active clinic admin of Northside"):
        call_command("set_role", "admin.two", clinic="northside", role="therapist", stdout=io.StringIO())
    assert Membership.objects.get(user=other).role == Role.CLINIC_ADMIN


def test_a_deactivated_admin_does_not_count_as_an_admin(clinic, clinic_admin):
    other = MembershipFactory(clinic=clinic, role=Role.CLINIC_ADMIN, user__username="admin.two").user
    assert logged_in(clinic_admin).post(f"/clinic/users/{other.pk}/deactivate").status_code == 302
    other.refresh_from_db()
    assert not other.is_active  # admin.north remains the clinic's admin
    with pytest.raises(CommandError, match="last active clinic admin"):
        call_command("set_role", "admin.north", clinic="northside", role="therapist", stdout=io.StringIO())
    response = logged_in(other).get("/clinic/users/")
    assert response.status_code == 302  # a deactivated admin is logged out


def test_a_bad_role_names_the_field(admin_client, therapist_a):
    response = admin_client.post(f"/clinic/users/{therapist_a.pk}/role", {"role": "root"}, follow=True)
    assert b"Role: Select a valid choice" in response.content
    assert Membership.objects.get(user=therapist_a).role == Role.THERAPIST


# ----- deactivation -----------------------------------------------------------------------------------


def test_deactivation_ends_sessions_and_blocks_login_and_reactivation_restores_it(admin_client, therapist_a):
    therapist = Client()
    assert login(therapist, "therapist.a", PASSWORD).status_code == 302
    assert UserSession.objects.filter(user=therapist_a).exists()
    response = admin_client.post(f"/clinic/users/{therapist_a.pk}/deactivate", follow=True)
    assert b"therapist.a is deactivated" in response.content and b"1 session(s) ended" in response.content
    assert not UserSession.objects.filter(user=therapist_a).exists()
    assert therapist.get("/").status_code == 302  # logged out
    assert login(Client(), "therapist.a", PASSWORD).status_code == 200  # refused
    deactivated = user_events(object="user:therapist.a")[-1]
    assert deactivated.detail["op"] == "deactivate" and deactivated.detail["sessions_ended"] == 1
    assert deactivated.detail["before"]["active"] is True and deactivated.detail["after"]["active"] is False
    page = admin_client.get("/clinic/users/").content.decode()
    assert "Deactivated" in page and f"/clinic/users/{therapist_a.pk}/reactivate" in page

    assert admin_client.post(f"/clinic/users/{therapist_a.pk}/reactivate").status_code == 302
    assert login(Client(), "therapist.a", PASSWORD).status_code == 302
    reactivated = user_events(object="user:therapist.a")[-1]
    assert reactivated.detail["op"] == "reactivate" and reactivated.detail["after"]["active"] is True


def test_an_admin_cannot_deactivate_themselves(admin_client, clinic_admin):
    response = admin_client.post(f"/clinic/users/{clinic_admin.pk}/deactivate", follow=True)
    assert b"You cannot deactivate your own account" in response.content
    clinic_admin.refresh_from_db()
    assert clinic_admin.is_active


def test_another_clinics_admin_gets_404(other_clinic, therapist_a, clinic):
    foreign_admin = MembershipFactory(clinic=other_clinic, role=Role.CLINIC_ADMIN, user__username="admin.river").user
    client = logged_in(foreign_admin)
    for action, data in (
        ("role", {"role": "auditor"}),
        ("deactivate", {}),
        ("reactivate", {}),
        ("reset-second-factor", {}),
    ):
        assert client.post(f"/clinic/users/{therapist_a.pk}/{action}", data).status_code == 404
    assert "therapist.a" not in client.get("/clinic/users/").content.decode()
    token = IngestToken.objects.create(clinic=clinic, name="north-game", token_hash="x" * 64, prefix="pt_x")
    assert client.post(f"/clinic/tokens/{token.pk}/revoke").status_code == 404
    assert "north-game" not in client.get("/clinic/tokens/").content.decode()
    therapist_a.refresh_from_db()
    assert therapist_a.is_active and Membership.objects.get(user=therapist_a).role == Role.THERAPIST


def test_a_user_of_another_clinic_too_is_left_to_an_operator(admin_client, therapist_a, other_clinic):
    Membership.objects.create(user=therapist_a, clinic=other_clinic, role=Role.THERAPIST)
    response = admin_client.post(f"/clinic/users/{therapist_a.pk}/deactivate", follow=True)
    assert b"also works in a clinic you do not run" in response.content
    therapist_a.refresh_from_db()
    assert therapist_a.is_active and not user_events()


def test_therapists_and_auditors_get_403(therapist_a, auditor, patient_a):
    for user in (therapist_a, auditor):
        client = logged_in(user)
        assert client.get("/clinic/users/").status_code == 403
        assert client.get("/clinic/tokens/").status_code == 403
        assert invite(client).status_code == 403
        assert client.post(f"/clinic/users/{user.pk}/deactivate").status_code == 403
        assert client.post("/clinic/tokens/", {"name": "x"}).status_code == 403


def test_the_users_page_shows_no_clinical_detail(admin_client, patient_a, therapist_a):
    html = admin_client.get("/clinic/users/").content.decode()
    assert "therapist.a" in html and "Never" in html and "Not set up" in html
    assert patient_a.player_id not in html


# ----- tokens -----------------------------------------------------------------------------------------


def test_a_token_is_shown_once_and_revoking_it_makes_ingest_401(admin_client, clinic):
    response = admin_client.post("/clinic/tokens/", {"name": "game-server-prod"})
    assert response.status_code == 201
    raw = re.search(r'value="(pt_[^"]+)"', response.content.decode()).group(1)
    token = IngestToken.objects.get(name="game-server-prod")
    assert token.clinic == clinic and raw.startswith(token.prefix)
    later = admin_client.get("/clinic/tokens/").content.decode()
    assert raw not in later and token.prefix in later and "game-server-prod" in later
    created = AuditEvent.objects.get(action="token.change", detail__op="create")
    assert created.actor == "admin.north" and created.detail == {"op": "create", "name": "game-server-prod"}
    assert raw not in json.dumps(created.detail)

    game = Client(headers={"Authorization": f"Bearer {raw}"})
    assert post(game, make_batch()).status_code == 201
    assert "Never" not in admin_client.get("/clinic/tokens/").content.decode().split("game-server-prod")[1][:400]

    revoked = admin_client.post(f"/clinic/tokens/{token.pk}/revoke", follow=True)
    assert b"is revoked" in revoked.content and b"Revoked" in revoked.content
    response = post(game, make_batch(prefix="x-"))
    assert response.status_code == 401
    assert AuditEvent.objects.filter(action="token.change", detail__op="revoke", actor="admin.north").count() == 1
    again = admin_client.post(f"/clinic/tokens/{token.pk}/revoke", follow=True)
    assert b"already revoked" in again.content


@pytest.mark.parametrize("name, message", [("", "This field is required"), ("x" * 101, "at most 100")])
def test_the_token_form_names_the_field(admin_client, name, message):
    response = admin_client.post("/clinic/tokens/", {"name": name})
    assert response.status_code == 400 and "Name: " in response.content.decode()
    assert message in response.content.decode()
    assert not IngestToken.objects.exists()


def test_an_active_token_name_is_not_reused(admin_client):
    assert admin_client.post("/clinic/tokens/", {"name": "game"}).status_code == 201
    response = admin_client.post("/clinic/tokens/", {"name": "game"})
    assert response.status_code == 400 and b"An active token named" in response.content
    assert IngestToken.objects.count() == 1


# ----- commands ---------------------------------------------------------------------------------------


def run(*args, **kwargs) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **kwargs)
    return out.getvalue()


def test_set_role_changes_and_adds_roles_audited(therapist_a, clinic, other_clinic):
    assert "therapist.a: therapist → auditor in northside" in run(
        "set_role", "therapist.a", clinic="northside", role="auditor"
    )
    assert Membership.objects.get(user=therapist_a, clinic=clinic).role == Role.AUDITOR
    assert "no role → therapist in riverside" in run("set_role", "therapist.a", clinic="riverside", role="therapist")
    assert Membership.objects.get(user=therapist_a, clinic=other_clinic).role == Role.THERAPIST
    assert "nothing changed" in run("set_role", "therapist.a", clinic="riverside", role="therapist")
    north, river = user_events(object="user:therapist.a")
    assert north.actor == "system" and north.chain == "northside"
    assert north.detail["before"]["role"] == "therapist" and north.detail["after"]["role"] == "auditor"
    assert river.chain == "riverside" and river.detail["before"]["role"] is None


def test_deactivate_user_ends_sessions_and_is_audited(therapist_a):
    client = Client()
    assert login(client, "therapist.a", PASSWORD).status_code == 302
    assert "Deactivated therapist.a; 1 session(s) ended." in run("deactivate_user", "therapist.a")
    therapist_a.refresh_from_db()
    assert not therapist_a.is_active and client.get("/").status_code == 302
    (event,) = user_events(object="user:therapist.a")
    assert event.actor == "system" and event.detail["op"] == "deactivate"
    assert "already deactivated" in run("deactivate_user", "therapist.a")


def test_deactivate_user_of_no_clinic_is_audited_on_the_system_chain(db):
    UserFactory(username="operator.only")
    assert "Deactivated operator.only" in run("deactivate_user", "operator.only")
    (event,) = user_events(object="user:operator.only")
    assert event.chain == "system" and event.detail["before"] == {"active": True, "role": None}


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("set_role", "ghost"), {"clinic": "northside", "role": "therapist"}, "No user named 'ghost'"),
        (("set_role", "therapist.a"), {"clinic": "nowhere", "role": "therapist"}, "No clinic with slug 'nowhere'"),
        (("set_role", "therapist.a"), {"clinic": "northside", "role": "root"}, "Unknown role 'root'"),
        (("set_role", "admin.north"), {"clinic": "northside", "role": "auditor"}, "last active clinic admin"),
        (("deactivate_user", "ghost"), {}, "No user named 'ghost'"),
        (("deactivate_user", "admin.north"), {}, "last active clinic admin of Northside"),
    ],
)
def test_bad_input_is_a_clear_error(therapist_a, clinic_admin, args, kwargs, message):
    with pytest.raises(CommandError, match=message):
        call_command(*args, **kwargs, stdout=io.StringIO(), stderr=io.StringIO())
    assert not user_events()
