"""Alert e-mails: the assigned therapists at once, the clinic admins when an urgent alert waits too long;
each exactly once, with no clinical detail in the message."""

from datetime import timedelta

import pytest
from django.utils import timezone

from reports import alerts
from reports.models import Alert
from tests.conftest import logged_in
from tests.test_alerts import crisis as post_crisis


@pytest.fixture
def emails(therapist_a, therapist_b, clinic_admin):
    for user, address in (
        (therapist_a, "a@clinic.test"),
        (therapist_b, "b@clinic.test"),
        (clinic_admin, "admin@clinic.test"),
    ):
        user.email = address
        user.save()


def crisis(api, patient, alert_id="c1", level="urgent") -> Alert:
    return post_crisis(api, patient.player_id, alert_id, level=level, reason="Typed: I want to end it all")


def test_the_assigned_therapist_is_emailed_once_without_clinical_detail(api, emails, patient_a, mailoutbox):
    alert = crisis(api, patient_a)
    assert alerts.notify_pending() == 1  # the sweep finds it (its task went to a broker with no worker)
    assert alerts.notify_pending() == 0
    assert alerts.alert_notify(alert.pk) is False
    [message] = mailoutbox
    assert message.to == ["a@clinic.test"]
    assert message.subject == f"[URGENT] Crisis signal from the game: patient {patient_a.player_id}"
    assert f"/patients/{patient_a.player_id}/#alerts" in message.body
    assert "end it all" not in message.body + message.subject
    alert.refresh_from_db()
    assert alert.notified_at is not None


def test_an_unacknowledged_urgent_alert_escalates_to_the_clinic_admins_once(api, emails, patient_a, mailoutbox):
    alert = crisis(api, patient_a)
    alerts.notify_pending()
    mailoutbox.clear()
    assert alerts.escalate_unacknowledged() == 0  # not yet due
    later = timezone.now() + timedelta(minutes=30, seconds=1)
    assert alerts.escalate_unacknowledged(now=later) == 1
    assert alerts.escalate_unacknowledged(now=later) == 0
    [message] = mailoutbox
    assert message.to == ["admin@clinic.test"] and "not been acknowledged within 30 minutes" in message.body
    assert "therapist.a" in message.body and "end it all" not in message.body
    alert.refresh_from_db()
    assert alert.escalated_at is not None


def test_acknowledged_or_less_than_urgent_alerts_do_not_escalate(api, emails, therapist_a, patient_a, mailoutbox):
    acknowledged = crisis(api, patient_a, alert_id="c1")
    crisis(api, patient_a, level="high", alert_id="c2")
    logged_in(therapist_a).post(f"/patients/{patient_a.player_id}/alerts/{acknowledged.pk}/acknowledge")
    assert alerts.escalate_unacknowledged(now=timezone.now() + timedelta(hours=2)) == 0
