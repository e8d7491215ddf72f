"""Periodic sweeps that one bad row cannot stop (DESIGN §7 "Alerts", FINDINGS "Celery and Redis").

Each sweep here meets one failing item among good ones: the good ones complete, the bad one is marked
with its error's class (never its message) and a retry time, is skipped until then, and is tried again
afterwards. Logs name the row by id only. No sleeping: the sweeps take `now`, or a retry time is moved
into the past as time passing would."""

import smtplib
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.mail.backends.locmem import EmailBackend
from django.utils import timezone

from progress_site.celery import app as celery_app
from reports import alerts
from reports.models import Alert, AlertKind, AlertSeverity
from reports.tasks import notify_alert
from tests.factories import CareAssignmentFactory, MembershipFactory, PatientFactory, TherapySessionFactory
from tests.test_celery_worker import Receiver
from tracking import history, recompute, tasks, webhooks
from tracking.models import Patient, ProgressSummary, Role, WebhookDelivery

REFUSED = "bounces@clinic.test"
SECRET_ID = "secret-player-7"  # a player id that must never reach a log line


class RefusingBackend(EmailBackend):
    """The in-memory test outbox, but a mail server that refuses one address (as SMTP would)."""

    calls: list[list[str]] = []

    def send_messages(self, messages):
        for message in messages:
            RefusingBackend.calls.append(list(message.to))
            if REFUSED in message.to:
                raise smtplib.SMTPRecipientsRefused({REFUSED: (550, b"5.1.1 no such user " + SECRET_ID.encode())})
        return super().send_messages(messages)


@pytest.fixture
def refusing_mail(settings, mailoutbox):
    settings.EMAIL_BACKEND = "tests.test_sweeps.RefusingBackend"
    RefusingBackend.calls = []
    return mailoutbox


@pytest.fixture
def eager_celery():
    """Tasks sent by a sweep run at once, in this process and transaction (no worker needed); an
    exception in them would reach the sweep (CELERY_TASK_EAGER_PROPAGATES)."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


def _therapist(clinic, username, email):
    user = MembershipFactory(clinic=clinic, role=Role.THERAPIST, user__username=username).user
    user.email = email
    user.save()
    return user


def _patient(clinic, player_id, therapist=None, **fields):
    patient = PatientFactory(clinic=clinic, player_id=player_id, **fields)
    if therapist is not None:
        CareAssignmentFactory(patient=patient, therapist=therapist)
    return patient


def _alert(patient, severity=AlertSeverity.URGENT) -> Alert:
    return Alert.objects.create(
        clinic_id=patient.clinic_id,
        patient=patient,
        kind=AlertKind.CRISIS_SIGNAL,
        severity=severity,
        reason="The game's own words, never e-mailed",
        occurred_at=timezone.now(),
    )


def _warnings(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_backoffs_start_at_a_minute_double_and_stop_at_an_hour():
    assert [alerts.retry_seconds(n) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert alerts.retry_seconds(7) == alerts.retry_seconds(10_000) == 3600
    assert [recompute.analytics_retry_seconds(n) for n in (1, 2, 3)] == [60, 120, 240]
    assert recompute.analytics_retry_seconds(10_000) == 3600


# ----- alert e-mail ---------------------------------------------------------------------------------------


@pytest.fixture
def two_clinics_of_alerts(clinic, other_clinic):
    """The oldest alert goes to an address the mail server refuses; four more, in two clinics, do not."""
    refused = _therapist(clinic, "therapist.bounce", REFUSED)
    north = _therapist(clinic, "therapist.north", "north@clinic.test")
    river = _therapist(other_clinic, "therapist.river", "river@clinic.test")
    bad = _alert(_patient(clinic, SECRET_ID, refused))
    good = [
        _alert(_patient(clinic, "n-1", north)),
        _alert(_patient(other_clinic, "r-1", river)),
        _alert(_patient(other_clinic, "r-2", river), severity=AlertSeverity.MODERATE),
        _alert(_patient(clinic, "n-2", north), severity=AlertSeverity.HIGH),
    ]
    return bad, good


def test_one_failing_alert_email_does_not_stop_the_sweep_and_is_retried_after_its_time(
    two_clinics_of_alerts, refusing_mail, caplog
):
    bad, good = two_clinics_of_alerts
    now = timezone.now()
    assert alerts.notify_pending(now=now) == 4  # the bad one came first; the others still went
    assert sorted(m.to[0] for m in refusing_mail) == ["north@clinic.test"] * 2 + ["river@clinic.test"] * 2
    assert all(Alert.objects.get(pk=a.pk).notified_at for a in good)

    bad.refresh_from_db()
    assert bad.notified_at is None
    assert (bad.notify_attempts, bad.notify_error) == (1, "SMTPRecipientsRefused")  # the class, not the message
    assert bad.notify_retry_at == now + timedelta(seconds=60)
    log = _warnings(caplog)
    assert f"alert_id={bad.pk}" in log and "SMTPRecipientsRefused" in log
    assert SECRET_ID not in log and "no such user" not in log

    calls = len(RefusingBackend.calls)
    assert alerts.notify_pending(now=now + timedelta(seconds=59)) == 0  # not due yet: not tried
    assert len(RefusingBackend.calls) == calls

    assert alerts.notify_pending(now=now + timedelta(seconds=60)) == 0  # due: tried, refused again
    assert RefusingBackend.calls[calls:] == [[REFUSED]]
    bad.refresh_from_db()
    assert bad.notify_attempts == 2 and bad.notify_retry_at == now + timedelta(seconds=60 + 120)

    get_user_model().objects.filter(email=REFUSED).update(email="fixed@clinic.test")  # the address is corrected
    assert alerts.notify_pending(now=now + timedelta(seconds=180)) == 1
    bad.refresh_from_db()
    assert bad.notified_at is not None and (bad.notify_error, bad.notify_retry_at) == ("", None)
    assert refusing_mail[-1].to == ["fixed@clinic.test"]


def test_the_alert_task_records_a_failed_send_for_the_sweep_instead_of_raising(two_clinics_of_alerts, refusing_mail):
    bad, _ = two_clinics_of_alerts

    assert notify_alert(bad.pk) is False
    bad.refresh_from_db()
    assert (bad.notified_at, bad.notify_attempts, bad.notify_error) == (None, 1, "SMTPRecipientsRefused")
    assert bad.notify_retry_at is not None


@pytest.mark.parametrize(
    ("player_id", "link"),
    [
        ("odd/one", "http://127.0.0.1:8000/alerts/"),  # no patient URL can carry it: the alerts page
        ("line\nbreak\r\t", "http://127.0.0.1:8000/patients/line%0Abreak%0D%09/#alerts"),
    ],
)
def test_an_odd_stored_player_id_cannot_break_its_alert_email(clinic, player_id, link, refusing_mail, settings, caplog):
    settings.SITE_URL = "http://127.0.0.1:8000"
    therapist = _therapist(clinic, "therapist.odd", "odd@clinic.test")
    alert = _alert(_patient(clinic, player_id, therapist))
    assert alerts.notify_pending() == 1
    [message] = refusing_mail
    shown = player_id.replace("\n", "\ufffd").replace("\r", "\ufffd").replace("\t", "\ufffd")
    assert message.subject == f"[URGENT] Crisis signal from the game: patient {shown}"
    assert link in message.body and f"for patient {shown} " in message.body
    MembershipFactory(clinic=clinic, role=Role.CLINIC_ADMIN, user__email="admin@clinic.test")
    assert alerts.escalate_unacknowledged(now=timezone.now() + timedelta(minutes=31)) == 1
    assert refusing_mail[-1].subject == f"[ESCALATED] Urgent alert for patient {shown} not acknowledged in 30 minutes"
    assert Alert.objects.get(pk=alert.pk).escalated_at is not None
    assert "failed" not in _warnings(caplog)


# ----- escalation --------------------------------------------------------------------------------------


def test_one_failing_escalation_does_not_stop_the_others_and_is_retried_after_its_time(
    clinic, other_clinic, refusing_mail, caplog
):
    MembershipFactory(clinic=clinic, role=Role.CLINIC_ADMIN, user__email="admin@north.test")
    MembershipFactory(clinic=other_clinic, role=Role.CLINIC_ADMIN, user__email=REFUSED)  # its server refuses
    bad = _alert(_patient(other_clinic, SECRET_ID))
    good = [_alert(_patient(clinic, f"n-{n}")) for n in range(3)]
    later = timezone.now() + timedelta(minutes=31)

    assert alerts.escalate_unacknowledged(now=later) == 3
    assert [m.to for m in refusing_mail] == [["admin@north.test"]] * 3
    assert all(Alert.objects.get(pk=a.pk).escalated_at for a in good)
    bad.refresh_from_db()
    assert bad.escalated_at is None
    assert (bad.escalation_attempts, bad.escalation_error) == (1, "SMTPRecipientsRefused")
    assert bad.escalation_retry_at == later + timedelta(seconds=60)
    log = _warnings(caplog)
    assert f"alert escalation failed alert_id={bad.pk}" in log and SECRET_ID not in log

    assert alerts.escalate_unacknowledged(now=later + timedelta(seconds=30)) == 0  # waits for its time
    assert len(refusing_mail) == 3 and RefusingBackend.calls.count([REFUSED]) == 1
    get_user_model().objects.filter(email=REFUSED).update(email="admin@river.test")  # the address is corrected
    assert alerts.escalate_unacknowledged(now=later + timedelta(seconds=60)) == 1
    bad.refresh_from_db()
    assert bad.escalated_at is not None and (bad.escalation_error, bad.escalation_retry_at) == ("", None)
    assert refusing_mail[-1].to == ["admin@river.test"]


# ----- webhook deliveries ------------------------------------------------------------------------------


@pytest.fixture
def receiver():
    receiver = Receiver(status=204)
    yield receiver
    receiver.server.shutdown()


def _five_sessions(patient):
    start = timezone.now() - timedelta(days=1)
    for n in range(5):
        TherapySessionFactory(patient=patient, started_at=start + timedelta(minutes=n))


def test_a_delivery_that_raises_something_unusual_is_a_failed_attempt_and_the_sweep_goes_on(
    clinic, other_clinic, receiver, eager_celery, caplog
):
    other_clinic.webhook_url = "http://127.0.0.1:not-a-port/celebrate"  # http.client raises InvalidURL
    other_clinic.save()
    clinic.webhook_url, clinic.webhook_secret = receiver.url, "k"
    clinic.save()
    bad_patient = _patient(other_clinic, SECRET_ID)
    good_patients = [_patient(clinic, f"n-{n}") for n in range(3)]
    for patient in [bad_patient, *good_patients]:
        _five_sessions(patient)
        recompute.patient_recompute(patient.pk)  # "5 Sessions Completed": one delivery each
    bad = WebhookDelivery.objects.get(clinic=other_clinic)
    WebhookDelivery.objects.update(created_at=timezone.now() - timedelta(minutes=2))  # their tasks were lost
    WebhookDelivery.objects.filter(pk=bad.pk).update(created_at=timezone.now() - timedelta(minutes=3))  # oldest

    assert tasks.retry_pending_webhooks() == 4
    assert len(receiver.requests) == 3
    assert set(WebhookDelivery.objects.exclude(pk=bad.pk).values_list("status", flat=True)) == {"delivered"}
    bad.refresh_from_db()
    assert (bad.status, bad.attempts, bad.last_error) == ("pending", 1, "InvalidURL")
    assert timedelta(seconds=25) < bad.next_attempt_at - timezone.now() <= timedelta(seconds=30)
    assert f"webhook delivery_id={bad.pk} attempt=1 failed: InvalidURL" in _warnings(caplog)

    assert tasks.retry_pending_webhooks() == 0  # its backoff has not passed
    WebhookDelivery.objects.filter(pk=bad.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    other_clinic.webhook_url = ""  # the admin removed the URL: urllib's ValueError, a failed attempt too
    other_clinic.save()
    assert tasks.retry_pending_webhooks() == 1
    bad.refresh_from_db()
    assert (bad.status, bad.attempts, bad.last_error) == ("pending", 2, "ValueError")
    assert webhooks.deliver(bad.pk) == "pending"  # called directly: never raises either


# ----- analytics: the reconciler and the group recompute ----------------------------------------------


def _poison(patient):
    """A stored session in year 1: in a time zone west of UTC its local day is in 1 BC, which PostgreSQL
    computes and psycopg refuses to read (DataError), so this patient's recompute always fails."""
    TherapySessionFactory(patient=patient, started_at=datetime(1, 1, 1, 2, tzinfo=UTC))


def _days_ago(patient, days):
    today = history.local_today(patient.tz_name)
    for d in days:
        start = history.local_midnight(today - timedelta(days=d), patient.tz_name) + timedelta(hours=12)
        TherapySessionFactory(patient=patient, started_at=min(start, timezone.now() - timedelta(minutes=1)))


@pytest.fixture
def group(clinic, other_clinic):
    """Four patients: the poisoned one shares its time zone (and so its query) with a good one; one good
    patient is disengaged (3 active days, none for 18)."""
    poisoned = _patient(other_clinic, SECRET_ID)  # America/New_York
    _poison(poisoned)
    _days_ago(poisoned, [1, 0])
    same_zone = _patient(other_clinic, "r-1")
    _days_ago(same_zone, [2, 1, 0])
    active = _patient(clinic, "n-1")
    _days_ago(active, [0])
    disengaged = _patient(clinic, "n-2")
    _days_ago(disengaged, [20, 19, 18])
    patients = {"poisoned": poisoned, "same_zone": same_zone, "active": active, "disengaged": disengaged}
    Patient.objects.update(data_changed_at=timezone.now())
    return patients


def _good(group):
    return [p for name, p in group.items() if name != "poisoned"]


def test_a_failing_patient_does_not_hold_back_its_group(group, caplog):
    poisoned = group["poisoned"]
    assert recompute.patients_recompute([p.pk for p in group.values()]) == 3
    for patient in _good(group):
        patient.refresh_from_db()
        assert patient.analytics_computed_at is not None and patient.analytics_retry_at is None
        assert ProgressSummary.objects.filter(patient=patient).exists()
    assert ProgressSummary.objects.get(patient=group["same_zone"]).current_streak_days == 3
    poisoned.refresh_from_db()
    assert poisoned.analytics_computed_at is None and not ProgressSummary.objects.filter(patient=poisoned).exists()
    assert (poisoned.analytics_failures, poisoned.analytics_error) == (1, "DataError")
    assert timedelta(seconds=55) < poisoned.analytics_retry_at - timezone.now() <= timedelta(seconds=60)
    log = _warnings(caplog)
    assert f"analytics recompute failed patient_id={poisoned.pk} error=DataError" in log
    assert SECRET_ID not in log and "0001-12-31" not in log  # neither the player id nor the message's value
    # Disengagement is raised for the good patient in the failing group.
    assert list(Alert.objects.filter(kind=AlertKind.DISENGAGEMENT).values_list("patient_id", flat=True)) == [
        group["disengaged"].pk
    ]


def test_the_reconciler_skips_a_failing_patient_until_due_then_retries_it_alone(group, eager_celery, monkeypatch):
    sent = []
    real_enqueue = tasks.enqueue
    monkeypatch.setattr(
        tasks, "enqueue", lambda task, *args, **kw: sent.append(args) or real_enqueue(task, *args, **kw)
    )
    poisoned = group["poisoned"]

    assert tasks.reconcile_analytics() == 4  # one group of four (never failed before), run here at once
    assert [sorted(args[0]) for args in sent] == [sorted(p.pk for p in group.values())]
    assert all(Patient.objects.get(pk=p.pk).analytics_computed_at for p in _good(group))
    poisoned.refresh_from_db()
    assert poisoned.analytics_failures == 1 and poisoned.analytics_retry_at > timezone.now()

    sent.clear()
    assert tasks.reconcile_analytics() == 0  # the good are fresh, the failing one is not due
    assert sent == []

    Patient.objects.filter(pk=poisoned.pk).update(analytics_retry_at=timezone.now() - timedelta(seconds=1))
    Patient.objects.filter(pk=group["active"].pk).update(data_changed_at=timezone.now())  # new data
    assert tasks.reconcile_analytics() == 2
    assert sorted(args[0] for args in sent) == sorted([[poisoned.pk], [group["active"].pk]])  # alone, not with others
    poisoned.refresh_from_db()
    assert poisoned.analytics_failures == 2
    assert timedelta(seconds=115) < poisoned.analytics_retry_at - timezone.now() <= timedelta(seconds=120)

    # An outdated summary (yesterday's) of a failing patient waits for its retry time as well.
    ProgressSummary.objects.filter(patient=group["active"]).update(local_date=timezone.now().date() - timedelta(days=3))
    Patient.objects.filter(pk=group["same_zone"].pk).update(analytics_retry_at=timezone.now() + timedelta(hours=1))
    ProgressSummary.objects.filter(patient=group["same_zone"]).update(
        local_date=timezone.now().date() - timedelta(days=3)
    )
    sent.clear()
    assert tasks.reconcile_analytics() == 1
    assert sent == [([group["active"].pk],)]

    # The data is repaired: the next due retry succeeds and clears the failure.
    poisoned.sessions.filter(started_at__year=1).delete()
    Patient.objects.filter(pk=poisoned.pk).update(analytics_retry_at=timezone.now() - timedelta(seconds=1))
    sent.clear()
    assert tasks.reconcile_analytics() == 1
    poisoned.refresh_from_db()
    assert poisoned.analytics_computed_at is not None
    assert (poisoned.analytics_failures, poisoned.analytics_error, poisoned.analytics_retry_at) == (0, "", None)
    assert ProgressSummary.objects.get(patient=poisoned).current_streak_days == 2


def test_the_per_patient_task_records_a_failure_and_does_not_raise(group):
    poisoned = group["poisoned"]
    assert tasks.recompute_patient_analytics(poisoned.pk) is False
    assert tasks.recompute_patient_analytics(poisoned.pk) is False
    poisoned.refresh_from_db()
    assert (poisoned.analytics_failures, poisoned.analytics_error) == (2, "DataError")
    assert tasks.recompute_patient_analytics(group["active"].pk) is True
    assert tasks.recompute_patient_group([p.pk for p in group.values()]) == 3


def test_a_disengagement_alert_that_cannot_be_raised_for_one_patient_does_not_stop_the_others(clinic, monkeypatch):
    """Raising the alerts is inside each patient's own recompute: a failure there is that patient's."""
    patients = [_patient(clinic, f"d-{n}") for n in range(3)]
    for patient in patients:
        _days_ago(patient, [20, 19, 18])
    failing = patients[1]
    real = alerts.disengagement_alerts

    def alerts_failing_for_one(*, disengaged, patients):
        if failing.pk in disengaged:
            raise RuntimeError("cannot raise it")
        return real(disengaged=disengaged, patients=patients)

    monkeypatch.setattr(alerts, "disengagement_alerts", alerts_failing_for_one)
    assert recompute.patients_recompute([p.pk for p in patients]) == 2
    alerted = set(Alert.objects.filter(kind=AlertKind.DISENGAGEMENT).values_list("patient_id", flat=True))
    assert alerted == {patients[0].pk, patients[2].pk}
    failing.refresh_from_db()
    assert (failing.analytics_error, failing.analytics_computed_at) == ("RuntimeError", None)
    assert failing.analytics_retry_at is not None  # retried later, so its alert is not lost

    monkeypatch.setattr(alerts, "disengagement_alerts", real)
    assert recompute.patients_recompute([failing.pk]) == 1
    assert Alert.objects.filter(kind=AlertKind.DISENGAGEMENT, patient=failing).count() == 1
