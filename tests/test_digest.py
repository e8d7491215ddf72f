"""The daily measures-due digest (DESIGN §8), sent through a real SMTP server on a local port.

The server is aiosmtpd (tests/smtp.py): Django's SMTP backend talks the real protocol to it over TCP, and
it can refuse one address with a 550 as a real mail server would. The clock is moved with time_machine, as
the hourly beat would find it."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from reports import digest
from reports.models import MeasureDigest
from reports.tasks import send_measure_digests
from tests.factories import (
    CareAssignmentFactory,
    MembershipFactory,
    OutcomeResponseFactory,
    PatientFactory,
    TherapySessionFactory,
)
from tests.smtp import SMTPServer, use_smtp
from tracking import selectors
from tracking.models import Role
from tracking.selectors import CaseloadQuery

pytestmark = pytest.mark.django_db

REFUSED = "bounces@northside.test"
# Mid-June: London is UTC+1, New York UTC−4. DIGEST_HOUR is 7 (the default).
DAY = datetime(2026, 6, 15, tzinfo=UTC)
LONDON_7 = DAY + timedelta(hours=6, minutes=5)  # 07:05 in London
NEW_YORK_7 = DAY + timedelta(hours=11, minutes=5)  # 07:05 in New York


@pytest.fixture
def smtp(settings):
    server = SMTPServer().start()
    use_smtp(settings, server)
    settings.SITE_URL = "https://progress.example.org"
    settings.DIGEST_HOUR = 7
    yield server
    server.stop()


def _therapist(clinic, username, address, **fields):
    user = MembershipFactory(clinic=clinic, role=Role.THERAPIST, user__username=username).user
    user.email = address
    for name, value in fields.items():
        setattr(user, name, value)
    user.save()
    return user


def _patient(clinic, therapist, player_id, *, last_session_days, phq9=None, gad7=None):
    """`phq9` / `gad7`: (days before DAY, total) of the one administration, or None: never given."""
    patient = PatientFactory(clinic=clinic, player_id=player_id)
    CareAssignmentFactory(patient=patient, therapist=therapist)
    TherapySessionFactory(patient=patient, started_at=DAY - timedelta(days=last_session_days, hours=-12))
    for instrument, given in (("phq9", phq9), ("gad7", gad7)):
        if given is not None:
            days, total = given
            OutcomeResponseFactory(
                patient=patient,
                instrument=instrument,
                total=total,
                administered_at=DAY - timedelta(days=days, hours=-9),
            )
    return patient


@pytest.fixture
def caseloads(clinic, other_clinic):
    """Therapist A (London) has three patients due and two not; B has nothing due; a therapist with no
    e-mail address and a deactivated one are never written to; C is in New York."""
    a = _therapist(clinic, "therapist.a", "a@northside.test")
    _patient(clinic, a, "due-never", last_session_days=1, gad7=(2, 19))  # PHQ-9 never given
    _patient(clinic, a, "due-both", last_session_days=3, phq9=(14, 26), gad7=(20, 19))
    _patient(clinic, a, "due-window", last_session_days=29, phq9=(2, 23))  # GAD-7 never; active, just
    _patient(clinic, a, "not-yet", last_session_days=1, phq9=(13, 26), gad7=(13, 19))  # a day early
    _patient(clinic, a, "inactive", last_session_days=30, phq9=(40, 26))  # nothing due when inactive
    b = _therapist(clinic, "therapist.b", "b@northside.test")
    _patient(clinic, b, "b-recent", last_session_days=1, phq9=(2, 23), gad7=(2, 19))
    silent = _therapist(clinic, "therapist.silent", "")
    _patient(clinic, silent, "silent-due", last_session_days=1)
    gone = _therapist(clinic, "therapist.gone", "gone@northside.test", is_active=False)
    _patient(clinic, gone, "gone-due", last_session_days=1)
    c = _therapist(other_clinic, "therapist.c", "c@riverside.test")
    _patient(other_clinic, c, "river-due", last_session_days=1)
    return a, b, c


def _body(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")


def test_the_digest_goes_at_the_digest_hour_of_the_clinics_day_and_lists_exactly_the_due_patients(smtp, caseloads):
    a, b, c = caseloads
    with time_machine.travel(LONDON_7 - timedelta(hours=1), tick=False):  # 06:05 in London: not yet
        assert send_measure_digests() == 0
    assert smtp.received == [] and not MeasureDigest.objects.exists()

    with time_machine.travel(LONDON_7, tick=False):
        assert send_measure_digests() == 1  # A only: B has nothing due, New York is at 02:05
        # the caseload's own filters, at the same moment, list the same patients
        due = set()
        for name in ("phq9_due", "gad7_due"):
            query = CaseloadQuery(filters=frozenset({name}))
            due |= set(selectors.caseload_rows(a, query).values_list("player_id", flat=True))
    assert due == {"due-never", "due-both", "due-window"}

    [(sender, recipients, message)] = smtp.received
    assert recipients == ["a@northside.test"] and "alerts@" in sender
    assert message["Subject"] == "Questionnaires due: 3 patients (2026-06-15)"
    body = _body(message)
    listed = re.findall(r"^- (\S+):", body, flags=re.MULTILINE)
    assert sorted(listed) == sorted(due)
    assert "- due-never: PHQ-9 never given\n  https://progress.example.org/patients/due-never/\n" in body
    assert "- due-both: PHQ-9 due since 2026-06-15; GAD-7 due since 2026-06-09\n" in body
    assert "- due-window: GAD-7 never given\n  https://progress.example.org/patients/due-window/\n" in body
    assert "https://progress.example.org/\n" in body  # the caseload
    for absent in ("not-yet", "inactive", "b-recent", "silent-due", "gone-due", "river-due"):
        assert absent not in body
    # no score: the totals given (26, 23, 19) appear nowhere once the dates are taken out
    undated = re.sub(r"\d{4}-\d{2}-\d{2}", "", body + message["Subject"])
    assert not re.search(r"\b(26|23|19)\b", undated)
    assert not re.search(r"score|total|severe|band", body, flags=re.IGNORECASE)

    row = MeasureDigest.objects.get()
    assert (row.user, row.clinic_id, row.local_date, row.patients) == (a, a.memberships.get().clinic_id, DAY.date(), 3)
    assert row.sent_at == LONDON_7

    with time_machine.travel(NEW_YORK_7, tick=False):  # 07:05 in New York: C's turn, not A's again
        assert send_measure_digests() == 1
    assert [r for _, r, _ in smtp.received] == [["a@northside.test"], ["c@riverside.test"]]
    assert "- river-due: PHQ-9 never given; GAD-7 never given\n" in _body(smtp.received[1][2])


def test_not_twice_in_the_same_local_day_even_when_the_task_runs_twice(smtp, caseloads):
    a, _, _ = caseloads
    with time_machine.travel(LONDON_7, tick=False):
        assert digest.send_due_digests() == 1
        assert digest.send_due_digests() == 0  # the beat's run repeated (a retry, a second beat)
    with time_machine.travel(LONDON_7 + timedelta(minutes=50), tick=False):
        assert send_measure_digests() == 0
    with time_machine.travel(LONDON_7 + timedelta(hours=1), tick=False):  # 08:05: past the hour
        assert send_measure_digests() == 0
    assert len(smtp.messages_to("a@northside.test")) == 1
    with time_machine.travel(LONDON_7 + timedelta(days=1), tick=False):  # tomorrow at 07:05: again
        assert send_measure_digests() == 1
    assert len(smtp.messages_to("a@northside.test")) == 2
    assert list(MeasureDigest.objects.filter(user=a).values_list("local_date", flat=True).order_by("local_date")) == [
        DAY.date(),
        DAY.date() + timedelta(days=1),
    ]


def test_no_email_for_a_therapist_with_nothing_due(smtp, clinic):
    quiet = _therapist(clinic, "therapist.quiet", "quiet@northside.test")
    _patient(clinic, quiet, "q-recent", last_session_days=1, phq9=(13, 26), gad7=(13, 19))
    _patient(clinic, quiet, "q-inactive", last_session_days=30)
    with time_machine.travel(LONDON_7, tick=False):
        assert send_measure_digests() == 0
    assert smtp.received == [] and not MeasureDigest.objects.exists()


def test_a_refused_send_is_logged_by_its_class_and_retried_by_the_next_run_of_the_same_day(smtp, caseloads, caplog):
    a, _, _ = caseloads
    smtp.refused.add(REFUSED)
    a.email = REFUSED
    a.save()
    with time_machine.travel(LONDON_7, tick=False):
        assert send_measure_digests() == 0
    row = MeasureDigest.objects.get(user=a)
    assert row.sent_at is None  # claimed, not sent
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.name == "reports.digest")
    assert f"measure digest failed user_id={a.pk}" in warnings and "SMTPRecipientsRefused" in warnings
    for secret in (REFUSED, "no such user", "due-never", "due-both"):
        assert secret not in warnings

    a.email = "a@northside.test"  # the address is corrected
    a.save()
    with time_machine.travel(LONDON_7 + timedelta(hours=2), tick=False):  # 09:05, same local day: retried
        assert send_measure_digests() == 1
        assert send_measure_digests() == 0
    [message] = smtp.messages_to("a@northside.test")
    assert message["Subject"] == "Questionnaires due: 3 patients (2026-06-15)"
    row.refresh_from_db()
    assert row.sent_at == LONDON_7 + timedelta(hours=2) and row.patients == 3


def test_an_unsent_digest_is_not_carried_over_to_the_next_day(smtp, caseloads):
    a, _, _ = caseloads
    smtp.refused.add("a@northside.test")
    with time_machine.travel(LONDON_7, tick=False):
        assert send_measure_digests() == 0
    smtp.refused.clear()
    # after local midnight, yesterday's failure is not retried: today's digest waits for 07:00
    with time_machine.travel(DAY + timedelta(days=1, hours=0, minutes=5), tick=False):  # 01:05 London
        assert send_measure_digests() == 0
    with time_machine.travel(LONDON_7 + timedelta(days=1), tick=False):
        assert send_measure_digests() == 1
    assert len(smtp.messages_to("a@northside.test")) == 1
    assert MeasureDigest.objects.get(user=a, local_date=DAY.date()).sent_at is None


def test_the_celery_task_runs_the_digest(smtp, caseloads):
    with time_machine.travel(LONDON_7, tick=False):
        result = send_measure_digests.apply()
    assert result.successful() and result.get() == 1
    assert len(smtp.received) == 1
    assert timezone.now() > LONDON_7  # the real clock is back
