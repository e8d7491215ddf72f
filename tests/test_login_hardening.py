"""Login hardening (DESIGN §7), with a controlled clock (time-machine): the lockout on username + IP,
the idle and absolute session limits, the second factor (REQUIRE_MFA, TOTP, backup codes, Django admin),
Argon2, the password change, logout ending every session, and the security headers."""

import base64
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.test import Client, override_settings
from django_otp.oath import totp

from tests.conftest import logged_in
from tests.factories import PASSWORD, UserFactory
from tracking.models import AuditEvent, AuthenticatorDevice, BackupCode, UserSession

pytestmark = pytest.mark.django_db

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
IP_A, IP_B = "203.0.113.10", "203.0.113.20"


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def attempt(client: Client, username: str, password: str, ip: str = IP_A, path: str = "/login/"):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=ip)


def is_locked(response) -> bool:
    return response.status_code == 429 and b"Too many attempts" in response.content


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("chain", "seq"))


# ----- lockout ---------------------------------------------------------------------------------------


def test_five_failures_lock_that_username_and_ip_only_and_the_sixth_attempt_is_refused(clock, therapist_a):
    client = Client()
    for _ in range(4):
        response = attempt(client, therapist_a.username, "wrong-password-123")
        assert response.status_code == 200 and b"did not match" in response.content
    assert is_locked(attempt(client, therapist_a.username, "wrong-password-123"))  # the fifth locks
    sixth = attempt(client, therapist_a.username, PASSWORD)  # even the right password
    assert is_locked(sixth)
    assert b"Try again in 15 minutes" in sixth.content and b"09:15 UTC" in sixth.content
    assert "_auth_user_id" not in client.session
    # Another address is not locked (a whole clinic behind one router is never shut out) ...
    assert attempt(Client(), therapist_a.username, PASSWORD, ip=IP_B).status_code == 302
    # ... and another user from the locked address is not either.
    colleague = UserFactory(username="therapist.c")
    assert attempt(Client(), colleague.username, PASSWORD).status_code == 302
    [lockout] = events("auth.lockout")
    assert (lockout.actor, lockout.ip, lockout.outcome) == (therapist_a.username, IP_A, "denied")
    assert lockout.detail == {"failures": 5, "minutes": 15}


def test_a_lockout_lifts_after_15_minutes_and_attempts_meanwhile_do_not_extend_it(clock, therapist_a):
    client = Client()
    for _ in range(5):
        attempt(client, therapist_a.username, "wrong-password-123")
    clock.shift(timedelta(minutes=10))
    assert is_locked(attempt(client, therapist_a.username, "wrong-password-123"))
    clock.shift(timedelta(minutes=4, seconds=59))
    assert is_locked(attempt(client, therapist_a.username, PASSWORD))
    clock.shift(timedelta(seconds=2))  # 15 minutes and 1 second after the fifth failure
    assert attempt(client, therapist_a.username, PASSWORD).status_code == 302
    assert len(events("auth.lockout")) == 1  # once per lockout, not per refused attempt


def test_a_success_resets_the_count(clock, therapist_a):
    client = Client()
    for _ in range(4):
        attempt(client, therapist_a.username, "wrong-password-123")
    assert attempt(client, therapist_a.username, PASSWORD).status_code == 302
    client.post("/logout/")
    for _ in range(4):
        assert attempt(client, therapist_a.username, "wrong-password-123").status_code == 200
    assert attempt(client, therapist_a.username, PASSWORD).status_code == 302
    assert events("auth.lockout") == []


def test_failures_more_than_15_minutes_apart_never_lock(clock, therapist_a):
    client = Client()
    for _ in range(7):
        assert attempt(client, therapist_a.username, "wrong-password-123").status_code == 200
        clock.shift(timedelta(minutes=16))
    assert attempt(client, therapist_a.username, PASSWORD).status_code == 302


def test_the_locked_out_page_does_not_reveal_whether_the_user_exists(clock, therapist_a):
    pages = []
    for username in (therapist_a.username, "nobody.at.all"):
        client = Client()
        for _ in range(5):
            attempt(client, username, "wrong-password-123")
        page = attempt(client, username, "wrong-password-123")
        assert is_locked(page)
        pages.append(re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", page.content))
    assert pages[0] == pages[1]
    assert therapist_a.username.encode() not in pages[0]


def test_django_admin_logs_in_through_the_same_locked_path(clock, therapist_a):
    superuser = UserFactory(username="operator", is_staff=True, is_superuser=True)
    client = Client()
    redirect = client.get("/admin/login/?next=/admin/")
    assert redirect.status_code == 302 and redirect["Location"] == "/login/?next=/admin/"
    for _ in range(5):
        attempt(client, superuser.username, "wrong-password-123")
    assert is_locked(attempt(client, superuser.username, PASSWORD))
    # A POST straight at Django admin's own login form does not get around it.
    assert client.post("/admin/login/", {"username": superuser.username, "password": PASSWORD}).status_code == 302
    assert "_auth_user_id" not in client.session


# ----- sessions --------------------------------------------------------------------------------------


def test_a_session_ends_after_15_idle_minutes(clock, therapist_a):
    client = Client()
    assert attempt(client, therapist_a.username, PASSWORD).status_code == 302
    for _ in range(3):  # activity keeps it alive
        clock.shift(timedelta(minutes=14))
        assert client.get("/").status_code == 200
    clock.shift(timedelta(minutes=15, seconds=1))
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/login/"


def test_a_session_ends_after_12_hours_whatever_the_activity(clock, therapist_a):
    client = Client()
    assert attempt(client, therapist_a.username, PASSWORD).status_code == 302
    logouts_before = len(events("auth.logout"))
    for _ in range(12 * 6 - 1):  # a request every 10 minutes for 11 h 50 min
        clock.shift(timedelta(minutes=10))
        assert client.get("/").status_code == 200
    clock.shift(timedelta(minutes=10))
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert len(events("auth.logout")) == logouts_before + 1
    assert not UserSession.objects.filter(user=therapist_a).exists()


def test_the_page_asked_for_is_kept_in_the_session_not_the_query_string(therapist_a, patient_a):
    client = Client()
    response = client.get(f"/patients/{patient_a.player_id}/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert attempt(client, therapist_a.username, PASSWORD)["Location"] == f"/patients/{patient_a.player_id}/"


def test_logout_ends_every_session_of_that_user(therapist_a, therapist_b):
    laptop, phone, colleague = Client(), Client(), Client()
    for client, user in ((laptop, therapist_a), (phone, therapist_a), (colleague, therapist_b)):
        assert attempt(client, user.username, PASSWORD).status_code == 302
    laptop.post("/logout/")
    assert phone.get("/").status_code == 302
    assert colleague.get("/").status_code == 200


# ----- passwords -------------------------------------------------------------------------------------


@override_settings(
    PASSWORD_HASHERS=[
        "django.contrib.auth.hashers.Argon2PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]
)
def test_passwords_are_argon2_and_an_older_hash_upgrades_at_login(therapist_a):
    get_user_model().objects.filter(pk=therapist_a.pk).update(password=make_password(PASSWORD, hasher="pbkdf2_sha256"))
    assert attempt(Client(), therapist_a.username, PASSWORD).status_code == 302
    therapist_a.refresh_from_db()
    assert therapist_a.password.startswith("argon2$argon2id$")
    newcomer = UserFactory(username="newcomer")
    assert newcomer.password.startswith("argon2$")


def test_the_password_change_checks_12_characters_and_ends_the_other_sessions(therapist_a):
    here, elsewhere = Client(), Client()
    for client in (here, elsewhere):
        attempt(client, therapist_a.username, PASSWORD)
    short = here.post(
        "/account/password/",
        {"old_password": PASSWORD, "new_password1": "Sh0rt-pass!", "new_password2": "Sh0rt-pass!"},
    )
    assert short.status_code == 200
    assert b"This password is too short. It must contain at least 12 characters." in short.content
    new = "a-much-longer-passphrase-2026"
    changed = here.post("/account/password/", {"old_password": PASSWORD, "new_password1": new, "new_password2": new})
    assert changed.status_code == 302 and changed["Location"] == "/account/"
    assert here.get("/").status_code == 200
    assert elsewhere.get("/").status_code == 302
    [event] = [e for e in events("user.change") if e.object == f"user:{therapist_a.username}"]
    assert event.detail == {"changed": ["password"], "other_sessions_ended": 1}
    assert attempt(Client(), therapist_a.username, new).status_code == 302


# ----- the second factor -----------------------------------------------------------------------------


def code_for(device: AuthenticatorDevice, steps_ahead: int = 0) -> str:
    device.refresh_from_db()
    return f"{totp(bytes.fromhex(device.key), step=30, t0=steps_ahead * -30, digits=6):06d}"


def enrol(client: Client) -> tuple[AuthenticatorDevice, list[str]]:
    page = client.get("/account/second-factor/")
    assert page.status_code == 200 and b"<svg" in page.content
    secret = re.search(rb'id="totp-secret">([A-Z2-7 ]+)<', page.content).group(1).decode().replace(" ", "")
    device = AuthenticatorDevice.objects.get(confirmed=False)
    assert base64.b32decode(secret + "=" * (-len(secret) % 8)).hex() == device.key
    done = client.post("/account/second-factor/", {"code": code_for(device)})
    assert done.status_code == 200
    codes = re.findall(rb"<li><code>([a-z0-9-]+)</code></li>", done.content)
    return device, [c.decode() for c in codes]


@override_settings(REQUIRE_MFA=True)
def test_with_require_mfa_a_password_alone_reaches_nothing_but_enrolment(clock, therapist_a, patient_a):
    client = Client()
    assert attempt(client, therapist_a.username, PASSWORD)["Location"] == "/"
    for path in ("/", f"/patients/{patient_a.player_id}/", "/alerts/", "/account/", "/admin/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"] == "/account/second-factor/", path
    api = client.get(f"/api/v1/patients/{patient_a.player_id}/progress")
    assert api.status_code == 403 and api.json() == {"detail": "Set up a second factor first."}
    device, codes = enrol(client)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert BackupCode.objects.filter(device__user=therapist_a).count() == 10
    assert not any(BackupCode.objects.filter(digest=code) for code in codes)  # digests only
    assert client.get("/").status_code == 200  # the enrolling session is verified
    assert [e.detail for e in events("auth.mfa")] == [{"event": "enrolled", "backups": 10, "other_sessions_ended": 0}]


def test_enrolling_ends_the_sessions_that_logged_in_without_the_device(therapist_a):
    other, here = logged_in(therapist_a), logged_in(therapist_a)
    enrol(here)
    assert here.get("/").status_code == 200
    assert other.get("/").status_code == 302


@override_settings(REQUIRE_MFA=True)
def test_with_a_device_the_login_asks_for_a_code_and_a_used_code_fails(clock, therapist_a):
    client = Client()
    attempt(client, therapist_a.username, PASSWORD)
    device, codes = enrol(client)
    client.post("/logout/")

    client = Client()
    assert attempt(client, therapist_a.username, PASSWORD)["Location"] == "/"
    assert client.get("/")["Location"] == "/login/code/"
    wrong = client.post("/login/code/", {"code": "000000"})
    assert wrong.status_code == 200 and b"That code was not accepted" in wrong.content
    clock.shift(timedelta(seconds=31))
    used = code_for(device)
    assert client.post("/login/code/", {"code": used})["Location"] == "/"
    assert client.get("/").status_code == 200
    client.post("/logout/")

    # The same code cannot log in twice (django-otp keeps the last step used).
    client = Client()
    attempt(client, therapist_a.username, PASSWORD)
    assert client.post("/login/code/", {"code": used}).status_code == 200
    assert client.get("/")["Location"] == "/login/code/"


@override_settings(REQUIRE_MFA=True)
def test_a_backup_code_works_once(clock, therapist_a):
    client = Client()
    attempt(client, therapist_a.username, PASSWORD)
    _, codes = enrol(client)
    client.post("/logout/")
    for expected in (302, 200):  # once in, then refused
        client = Client()
        attempt(client, therapist_a.username, PASSWORD)
        clock.shift(timedelta(minutes=1))  # clear of django-otp's throttle after a failure
        assert client.post("/login/code/", {"code": codes[0].upper().replace("-", " ")}).status_code == expected
    assert BackupCode.objects.filter(device__user=therapist_a).count() == 9
    verified = [e.detail for e in events("auth.mfa") if e.detail.get("event") == "verified"]
    assert verified == [{"event": "verified", "method": "backup_code", "backups_left": 9}]


def test_a_user_with_a_device_gives_a_code_even_without_require_mfa(clock, therapist_a):
    client = logged_in(therapist_a)
    device, _ = enrol(client)
    client.post("/logout/")
    client = Client()
    attempt(client, therapist_a.username, PASSWORD)
    assert client.get("/alerts/")["Location"] == "/login/code/"
    clock.shift(timedelta(seconds=31))
    assert client.post("/login/code/", {"code": code_for(device)})["Location"] == "/alerts/"


@override_settings(REQUIRE_MFA=True)
def test_django_admin_needs_the_second_factor_too(clock):
    operator = UserFactory(username="operator", is_staff=True, is_superuser=True)
    client = Client()
    attempt(client, operator.username, PASSWORD, path="/login/")
    assert client.get("/admin/")["Location"] == "/account/second-factor/"
    device, _ = enrol(client)
    assert client.get("/admin/").status_code == 200
    client.post("/logout/")
    client = Client()
    client.post("/login/", {"username": operator.username, "password": PASSWORD, "next": "/admin/"}, REMOTE_ADDR=IP_A)
    assert client.get("/admin/")["Location"] == "/login/code/"
    assert client.get("/admin/tracking/patient/")["Location"] == "/login/code/"
    clock.shift(timedelta(seconds=31))
    assert client.post("/login/code/", {"code": code_for(device)})["Location"] == "/admin/tracking/patient/"
    assert client.get("/admin/").status_code == 200


def test_a_clinic_admin_resets_a_users_second_factor_and_their_sessions_end(
    clock, clinic_admin, therapist_a, foreign_therapist
):
    victim = logged_in(therapist_a)
    enrol(victim)
    admin = logged_in(clinic_admin)
    page = admin.get("/clinic/users/")
    assert page.status_code == 200
    row = re.search(rf'<tr data-username="{therapist_a.username}">.*?</tr>'.encode(), page.content, re.S).group(0)
    assert b"Set up" in row and b"Reset second factor" in row
    # Someone of another clinic is not theirs to reset: 404, as for an unknown id.
    assert admin.post(f"/clinic/users/{foreign_therapist.pk}/reset-second-factor").status_code == 404
    response = admin.post(f"/clinic/users/{therapist_a.pk}/reset-second-factor")
    assert response.status_code == 302 and response["Location"] == "/clinic/users/"
    assert not AuthenticatorDevice.objects.filter(user=therapist_a).exists()
    assert not BackupCode.objects.filter(device__user=therapist_a).exists()
    assert victim.get("/").status_code == 302  # their sessions ended
    [reset] = [e for e in events("auth.mfa") if e.detail.get("event") == "reset"]
    assert (reset.chain, reset.actor, reset.role, reset.object) == (
        therapist_a.memberships.get().clinic.slug,
        clinic_admin.username,
        "clinic_admin",
        f"user:{therapist_a.username}",
    )
    assert reset.detail == {"event": "reset", "devices_removed": 1, "sessions_ended": 1}


def test_a_superuser_resets_a_second_factor_from_django_admin(clock, therapist_a):
    enrol(logged_in(therapist_a))
    operator = UserFactory(username="operator", is_staff=True, is_superuser=True)
    admin = logged_in(operator)
    response = admin.post("/admin/auth/user/", {"action": "reset_second_factor", "_selected_action": [therapist_a.pk]})
    assert response.status_code == 302
    assert not AuthenticatorDevice.objects.filter(user=therapist_a).exists()
    [reset] = [e for e in events("auth.mfa") if e.detail.get("event") == "reset"]
    assert reset.actor == operator.username and reset.object == f"user:{therapist_a.username}"


# ----- headers ---------------------------------------------------------------------------------------


def test_pages_and_the_api_are_never_stored_and_carry_the_security_headers(therapist_a, patient_a):
    client = logged_in(therapist_a)
    pages = ("/", f"/patients/{patient_a.player_id}/", f"/api/v1/patients/{patient_a.player_id}/progress", "/login/")
    for path in pages:
        response = (Client() if path == "/login/" else client).get(path)
        assert response.status_code == 200, path
        assert "no-store" in response["Cache-Control"], path
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Frame-Options"] == "DENY"
        assert "camera=()" in response["Permissions-Policy"] and "geolocation=()" in response["Permissions-Policy"]
        csp = response["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        assert "unsafe-eval" not in csp
