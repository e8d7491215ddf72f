"""The console's settings page (issue 12, item 1): each form's validation at and around its limits, the
audit's before and after, milestone rules used by the next recompute, escalation by the clinic's minutes,
crisis resources on every alert, the webhook's test delivery and the secret shown once."""

import re
import socket
from datetime import timedelta

import pytest
import time_machine
from cryptography.fernet import Fernet
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from reports import alerts
from reports.models import Alert, AlertKind, AlertSeverity
from tests.conftest import _member, logged_in
from tests.test_progress import sessions_on
from tracking import clinic_settings, fields, history, recompute
from tracking.models import AuditAction, AuditEvent, Clinic, ClinicMilestoneRule, Milestone, Role

pytestmark = pytest.mark.django_db

PAGE = "/clinic/settings/"


def save(client, form, **data):
    return client.post(f"/clinic/settings/northside/{form}", data)


@pytest.fixture
def admin(clinic_admin):
    return logged_in(clinic_admin)


def config_events(clinic):
    return list(AuditEvent.objects.filter(chain=clinic.slug, action=AuditAction.CONFIG_CHANGE).order_by("seq"))


def field_error(response, field_id):
    """The error shown next to the field with this id."""
    html = response.content.decode()
    match = re.search(rf'<p class="form-error" id="{field_id}-error">([^<]*)</p>', html)
    return match.group(1) if match else None


# ----- access -------------------------------------------------------------------------------------------


def test_the_page_shows_the_admins_clinic_and_the_defaults(admin, clinic):
    response = admin.get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Settings of Northside" in html and "This clinic uses the defaults" in html
    assert "7 One Week Streak" in html and "100 100 Sessions Completed" in html


def test_an_admin_of_another_clinic_gets_404_and_changes_nothing(clinic, other_clinic):
    other_admin = logged_in(_member(other_clinic, Role.CLINIC_ADMIN, "admin.river"))
    assert other_admin.get("/clinic/settings/northside/").status_code == 404
    assert (
        other_admin.post("/clinic/settings/northside/escalation", {"alert_escalation_minutes": 60}).status_code == 404
    )
    assert other_admin.post("/clinic/settings/northside/secret").status_code == 404
    clinic.refresh_from_db()
    assert clinic.alert_escalation_minutes == 30 and not clinic.webhook_secret
    assert other_admin.get("/clinic/settings/").content.decode().count("Settings of Riverside") == 1


def test_therapists_and_auditors_are_refused(therapist_a, auditor, clinic):
    for user in (therapist_a, auditor):
        client = logged_in(user)
        assert client.get(PAGE).status_code == 403
        assert client.post("/clinic/settings/northside/interval", {"measure_interval_days": 7}).status_code == 403
    clinic.refresh_from_db()
    assert clinic.measure_interval_days == 14


def test_an_unknown_form_is_404(admin):
    assert save(admin, "nonsense").status_code == 404


# ----- the numbers at and around their limits -----------------------------------------------------------


@pytest.mark.parametrize(
    "value, accepted", [("4", False), ("5", True), ("240", True), ("241", False), ("", False), ("ten", False)]
)
def test_escalation_minutes_limits(admin, clinic, value, accepted):
    response = save(admin, "escalation", alert_escalation_minutes=value)
    clinic.refresh_from_db()
    if accepted:
        assert response.status_code == 302
        assert clinic.alert_escalation_minutes == int(value)
    else:
        assert response.status_code == 400
        assert clinic.alert_escalation_minutes == 30
        assert field_error(response, "set-escalation")
        assert 'aria-invalid="true"' in response.content.decode()


@pytest.mark.parametrize("value, accepted", [("0", False), ("1", True), ("365", True), ("366", False), ("-3", False)])
def test_measure_interval_limits(admin, clinic, value, accepted):
    response = save(admin, "interval", measure_interval_days=value)
    clinic.refresh_from_db()
    if accepted:
        assert response.status_code == 302 and clinic.measure_interval_days == int(value)
    else:
        assert response.status_code == 400 and clinic.measure_interval_days == 14
        assert "between 1 and 365 days" in field_error(response, "set-interval") or "whole number" in field_error(
            response, "set-interval"
        )


def test_a_change_is_audited_with_before_and_after(admin, clinic):
    assert save(admin, "escalation", alert_escalation_minutes="45").status_code == 302
    assert save(admin, "escalation", alert_escalation_minutes="45").status_code == 302  # unchanged: no event
    [event] = config_events(clinic)
    assert event.object == "clinic:northside" and event.actor == "admin.north" and event.role == "clinic_admin"
    assert event.detail == {"before": {"alert_escalation_minutes": 30}, "after": {"alert_escalation_minutes": 45}}


# ----- crisis resources ---------------------------------------------------------------------------------


def test_crisis_resources_limits_and_control_characters(admin, clinic):
    assert save(admin, "crisis", crisis_resources="x" * 2001).status_code == 400
    response = save(admin, "crisis", crisis_resources="Call \x07 now")
    assert response.status_code == 400 and "control character" in field_error(response, "set-crisis")
    assert save(admin, "crisis", crisis_resources="bad \x00").status_code == 400
    assert save(admin, "crisis", crisis_resources="x" * 2000).status_code == 302
    clinic.refresh_from_db()
    assert clinic.crisis_resources == "x" * 2000
    [event] = config_events(clinic)
    assert event.detail["before"] == {"crisis_resources": ""}


def test_crisis_resources_show_on_the_patient_page_alerts_card_and_the_alerts_page(
    admin, clinic, therapist_a, patient_a
):
    text = "Crisis line: 0800 123 456, duty psychiatrist ext. 12"
    assert save(admin, "crisis", crisis_resources=text).status_code == 302
    alerts.alert_raise(
        patient=patient_a,
        kind=AlertKind.CRISIS_SIGNAL,
        severity=AlertSeverity.URGENT,
        reason="a signal",
        occurred_at=timezone.now(),
        alert_id="c1",
    )
    therapist = logged_in(therapist_a)
    page = therapist.get(f"/patients/{patient_a.player_id}/").content.decode()
    card = page[page.index('id="alerts"') :]
    assert text in card[: card.index("</section>")]
    assert text in therapist.get("/alerts/").content.decode()
    assert text in therapist.get(f"/patients/{patient_a.player_id}/live.json").json()["alerts_html"]


# ----- milestone rules ----------------------------------------------------------------------------------


def milestone_form(**families):
    defaults = clinic_settings.default_milestone_rules()
    data = {f: "\n".join(f"{t} {title}" for t, title in rules) for f, rules in defaults.items()}
    data.update(families)
    return data


def test_thresholds_that_do_not_increase_are_refused_naming_the_family(admin, clinic):
    response = admin.post(
        "/clinic/settings/northside/milestones", milestone_form(skills="5 Level 1\n5 Level 1 again", streak="3 Three")
    )
    assert response.status_code == 400
    error = field_error(response, "ms-skills")
    assert "Skills acquired" in error and "strictly increase" in error
    assert field_error(response, "ms-streak") is None
    assert "5 Level 1 again" in response.content.decode()  # what was typed is kept
    response = admin.post("/clinic/settings/northside/milestones", milestone_form(sessions="10 Ten\n4 Four"))
    assert "Sessions" in field_error(response, "ms-sessions")
    assert not ClinicMilestoneRule.objects.exists() and not config_events(clinic)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("7", "needs a title"),
        ("7 " + "t" * 201, "longer than 200"),
        ("0 Zero", "between 1 and 100000"),
        ("99999999999 Huge", "between 1 and 100000"),
        ("x One", "whole number"),
        ("\n".join(f"{n} N{n}" for n in range(1, 22)), "at most 20"),
    ],
)
def test_titles_and_thresholds_are_validated(admin, text, problem):
    response = admin.post("/clinic/settings/northside/milestones", milestone_form(streak=text))
    assert response.status_code == 400 and problem in field_error(response, "ms-streak")


def test_a_title_of_200_characters_is_accepted(admin, clinic):
    assert (
        admin.post("/clinic/settings/northside/milestones", milestone_form(streak="7 " + "t" * 200)).status_code == 302
    )
    assert ClinicMilestoneRule.objects.get(clinic=clinic, family="streak").title == "t" * 200


def test_a_changed_threshold_is_used_by_the_next_recompute_and_audited(admin, clinic, patient_a):
    sessions_on(patient_a, [2, 1, 0])  # a 3-day streak, 3 sessions
    recompute.patient_recompute(patient_a.pk)
    assert not Milestone.objects.filter(patient=patient_a, family="streak").exists()
    history.milestone_rules_for(clinic)  # the rules are cached now
    response = admin.post(
        "/clinic/settings/northside/milestones",
        milestone_form(streak="3 Three Day Streak\n7 One Week Streak", sessions="3 Three Sessions\n10 Ten"),
    )
    assert response.status_code == 302
    assert cache.get(ClinicMilestoneRule.cache_key(clinic.pk)) is None
    recompute.patient_recompute(patient_a.pk)
    titles = set(Milestone.objects.filter(patient=patient_a).values_list("title", flat=True))
    assert titles == {"Three Day Streak", "Three Sessions"}
    [event] = config_events(clinic)
    assert event.object == "clinic:northside:milestones"
    assert event.detail["before"] == {"milestone_rules": "defaults"}
    assert event.detail["after"]["milestone_rules"]["streak"] == [[3, "Three Day Streak"], [7, "One Week Streak"]]
    assert event.detail["after"]["milestone_rules"]["skills"][0] == [5, "Skill Builder Level 1"]
    page = admin.get(PAGE).content.decode()
    assert "This clinic has its own rules" in page and "3 Three Day Streak" in page


def test_an_empty_set_or_the_defaults_button_means_the_defaults(admin, clinic):
    admin.post("/clinic/settings/northside/milestones", milestone_form(streak="3 Three"))
    assert ClinicMilestoneRule.objects.filter(clinic=clinic).count() == 12  # 14 defaults, streak 3 → 1
    assert save(admin, "milestones-defaults").status_code == 302
    assert not ClinicMilestoneRule.objects.filter(clinic=clinic).exists()
    assert history.milestone_rules_for(clinic) == history.analytics.DEFAULT_MILESTONE_RULES
    admin.post("/clinic/settings/northside/milestones", milestone_form(streak="3 Three"))
    empty = dict.fromkeys(clinic_settings.FAMILY_LABELS, "")
    assert admin.post("/clinic/settings/northside/milestones", empty).status_code == 302
    assert not ClinicMilestoneRule.objects.filter(clinic=clinic).exists()
    assert config_events(clinic)[-1].detail["after"] == {"milestone_rules": "defaults"}


# ----- escalation by the clinic's minutes ---------------------------------------------------------------


def test_escalation_uses_each_clinics_minutes(admin, clinic, clinic_admin, patient_a, foreign_patient, mailoutbox):
    clinic_admin.email = "admin@clinic.test"
    clinic_admin.save()
    assert save(admin, "escalation", alert_escalation_minutes="10").status_code == 302
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        alert = alerts.alert_raise(
            patient=patient_a,
            kind=AlertKind.CRISIS_SIGNAL,
            severity=AlertSeverity.URGENT,
            reason="a signal",
            occurred_at=start,
            alert_id="c1",
        )
        other = alerts.alert_raise(  # another clinic, still on the default 30 minutes
            patient=foreign_patient,
            kind=AlertKind.CRISIS_SIGNAL,
            severity=AlertSeverity.URGENT,
            reason="a signal",
            occurred_at=start,
            alert_id="c2",
        )
        clock.shift(timedelta(minutes=9, seconds=59))
        assert alerts.escalate_unacknowledged() == 0
        clock.shift(timedelta(seconds=2))
        assert alerts.escalate_unacknowledged() == 1
        assert Alert.objects.get(pk=other.pk).escalated_at is None
        clock.shift(timedelta(minutes=20))
        assert alerts.escalate_unacknowledged() == 1
        assert Alert.objects.get(pk=other.pk).escalated_at is not None
    message = mailoutbox[0]
    assert "within 10 minutes" in message.body
    assert Alert.objects.get(pk=alert.pk).escalated_at is not None


# ----- the webhook --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, accepted",
    [
        ("https://game.example.org/hooks", True),
        ("http://game.example.org/hooks", True),
        ("", True),
        ("ftp://game.example.org/", False),
        ("javascript:alert(1)", False),
        ("not a url", False),
        ("https://" + "a" * 200 + ".org/", False),
    ],
)
def test_webhook_url_validation(admin, clinic, url, accepted):
    response = save(admin, "webhook", webhook_url=url)
    clinic.refresh_from_db()
    if accepted:
        assert response.status_code == 302 and clinic.webhook_url == url
    else:
        assert response.status_code == 400 and clinic.webhook_url == ""
        assert field_error(response, "set-webhook-url")


def test_production_requires_https(settings, clinic):
    settings.PRODUCTION = True
    assert "https" in clinic_settings.webhook_url_error("http://game.example.org/")
    assert clinic_settings.webhook_url_error("https://game.example.org/") is None


def dead_url() -> str:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_a_test_delivery_to_an_unreachable_url_is_logged_as_failed(admin, clinic):
    response = save(admin, "webhook-test")
    assert response.status_code == 400 and "Set a webhook URL" in field_error(response, "set-webhook-url")
    save(admin, "webhook", webhook_url=dead_url())
    response = save(admin, "webhook-test")
    assert response.status_code == 302
    page = admin.get(response["Location"]).content.decode()
    assert "Test delivery failed" in page
    log = page[page.index('id="delivery-log"') :]
    assert '<tr data-status="failed">' in log and "<td>test</td>" in log and "Connection refused" in log
    [row] = clinic_settings.delivery_log(clinic)
    assert (row.event, row.status, row.attempts, row.http_status) == ("test", "failed", 1, None)


def test_the_secret_is_shown_once_then_only_whether_it_is_set_and_is_a_fernet_token(admin, clinic):
    assert 'id="secret-status">Not set' in admin.get(PAGE).content.decode()
    response = save(admin, "secret")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    secret = re.search(r'<code class="secret-value" id="new-secret-value">([^<]+)</code>', response.content.decode())[1]
    clinic.refresh_from_db()
    assert clinic.webhook_secret == secret and len(secret) >= 40
    later = admin.get(PAGE).content.decode()
    assert secret not in later and 'id="secret-status">Set' in later
    with connection.cursor() as cursor:
        cursor.execute("SELECT webhook_secret FROM tracking_clinic WHERE id = %s", [clinic.pk])
        [stored] = cursor.fetchone()
    assert secret not in stored and stored.startswith("gAAAAA")
    keys = fields.configured_keys()
    assert any(_decrypts(key, stored) == secret for key in keys)
    # Rotating again: a different secret; the audit never holds either.
    second = re.search(r'id="new-secret-value">([^<]+)<', save(admin, "secret").content.decode())[1]
    assert second != secret
    events = config_events(clinic)
    assert len(events) == 2 and all(secret not in str(e.detail) and second not in str(e.detail) for e in events)
    assert events[0].detail["after"]["webhook_secret"] == "***"
    assert Clinic.objects.get(pk=clinic.pk).webhook_secret == second


def _decrypts(key: str, token: str) -> str | None:
    try:
        return Fernet(key.encode()).decrypt(token.encode()).decode()
    except Exception:  # noqa: BLE001 (another key)
        return None
