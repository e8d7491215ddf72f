"""Reliable deterioration alerts (DESIGN §5, §7), raised by outcome ingest: one open high alert per patient
naming every measure that deteriorated reliably from its first score; a measure deteriorating later
updates that alert (and e-mails again); after acknowledgement a new deterioration raises a new alert."""

from datetime import timedelta

import pytest
from django.utils import timezone

from reports import alerts
from reports.models import Alert, AlertKind, OutcomeResponse
from tests.conftest import logged_in
from tracking.models import Patient

NOW = timezone.now()


def outcome(player_id: str, response_id: str, instrument: str, total: int, days_ago: int) -> dict:
    return {
        "response_id": response_id,
        "player_id": player_id,
        "instrument": instrument,
        "total": total,
        "administered_at": (NOW - timedelta(days=days_ago)).isoformat(),
    }


def post(api, *outcomes: dict) -> None:
    response = api.post("/api/v1/ingest", {"outcomes": list(outcomes)}, content_type="application/json")
    assert response.status_code == 201, response.content


def deterioration_alerts(patient) -> list[Alert]:
    return list(Alert.objects.filter(patient=patient, kind=AlertKind.RELIABLE_DETERIORATION).order_by("pk"))


def administered_at(response_id: str):
    return OutcomeResponse.objects.get(response_id=response_id).administered_at


@pytest.fixture
def emailed(therapist_a):
    therapist_a.email = "a@clinic.test"
    therapist_a.save()
    return therapist_a


def test_phq9_and_gad7_deteriorating_together_raise_one_high_alert_naming_both(api, patient_a):
    p = patient_a.player_id
    post(
        api,
        outcome(p, "p1", "phq9", 8, 30),
        outcome(p, "g1", "gad7", 5, 30),
        outcome(p, "p2", "phq9", 14, 2),
        outcome(p, "g2", "gad7", 9, 2),
    )
    [alert] = deterioration_alerts(patient_a)
    assert (alert.severity, alert.acknowledged_at) == ("high", None)
    assert alert.measures == ["phq9", "gad7"]
    assert "PHQ-9 rose from 8 to 14" in alert.reason and "GAD-7 rose from 5 to 9" in alert.reason
    assert Patient.objects.get(pk=patient_a.pk).risk_flag is True


@pytest.mark.parametrize(
    ("phq9_rise", "gad7_rise", "measures"),
    [
        (6, 4, ["phq9", "gad7"]),  # both at the threshold
        (7, 5, ["phq9", "gad7"]),  # both one above
        (5, 3, None),  # both one point short: no alert
        (6, 3, ["phq9"]),
        (5, 4, ["gad7"]),
    ],
)
def test_deterioration_alert_at_and_one_point_short_of_the_thresholds(api, patient_a, phq9_rise, gad7_rise, measures):
    p = patient_a.player_id
    post(api, outcome(p, "p1", "phq9", 8, 30), outcome(p, "g1", "gad7", 5, 30))
    post(api, outcome(p, "p2", "phq9", 8 + phq9_rise, 2), outcome(p, "g2", "gad7", 5 + gad7_rise, 2))
    alerts = deterioration_alerts(patient_a)
    if measures is None:
        assert alerts == []
        assert Patient.objects.get(pk=patient_a.pk).risk_flag is False
    else:
        [alert] = alerts
        assert alert.measures == measures
        assert ("PHQ-9" in alert.reason, "GAD-7" in alert.reason) == ("phq9" in measures, "gad7" in measures)


def test_a_later_gad7_deterioration_updates_the_open_phq9_alert_and_emails_again(api, emailed, patient_a, mailoutbox):
    p = patient_a.player_id
    post(api, outcome(p, "p1", "phq9", 8, 30), outcome(p, "g1", "gad7", 5, 30))
    post(api, outcome(p, "p2", "phq9", 14, 20))
    [alert] = deterioration_alerts(patient_a)
    assert alert.measures == ["phq9"] and "GAD-7" not in alert.reason
    assert alerts.notify_pending() == 1
    alert.refresh_from_db()
    assert alert.notified_at is not None

    post(api, outcome(p, "g2", "gad7", 9, 10))
    [updated] = deterioration_alerts(patient_a)  # no second alert
    assert updated.pk == alert.pk
    assert updated.measures == ["phq9", "gad7"]
    assert "PHQ-9 rose from 8 to 14" in updated.reason and "GAD-7 rose from 5 to 9" in updated.reason
    assert updated.notified_at is None
    assert updated.occurred_at == administered_at("p2")  # still the first crossing
    assert alerts.notify_pending() == 1  # e-mailed again
    assert alerts.notify_pending() == 0
    assert len(mailoutbox) == 2 and all(m.to == ["a@clinic.test"] for m in mailoutbox)
    assert "GAD-7" not in mailoutbox[1].body  # no clinical detail in the e-mail


def test_a_further_score_of_a_measure_the_open_alert_already_names_changes_nothing(api, emailed, patient_a, mailoutbox):
    p = patient_a.player_id
    post(api, outcome(p, "p1", "phq9", 8, 30), outcome(p, "p2", "phq9", 14, 20))
    assert alerts.notify_pending() == 1
    [alert] = deterioration_alerts(patient_a)
    reason, notified_at = alert.reason, alert.notified_at
    post(api, outcome(p, "p3", "phq9", 16, 10))
    [same] = deterioration_alerts(patient_a)
    assert (same.pk, same.reason, same.notified_at) == (alert.pk, reason, notified_at)
    assert alerts.notify_pending() == 0 and len(mailoutbox) == 1


def test_a_named_measure_that_recovered_stays_named_when_another_deteriorates(api, patient_a):
    p = patient_a.player_id
    post(api, outcome(p, "p1", "phq9", 8, 40), outcome(p, "g1", "gad7", 5, 40), outcome(p, "p2", "phq9", 14, 30))
    post(api, outcome(p, "p3", "phq9", 10, 20))  # PHQ-9 is no longer reliably worse
    post(api, outcome(p, "g2", "gad7", 9, 10))
    [alert] = deterioration_alerts(patient_a)
    assert alert.measures == ["phq9", "gad7"]
    assert "GAD-7 rose from 5 to 9" in alert.reason and "PHQ-9 earlier in this alert" in alert.reason


@pytest.mark.parametrize("one_batch", [False, True], ids=["one-by-one", "one-batch"])
def test_occurred_at_is_the_administration_that_crossed_the_threshold(api, patient_a, one_batch):
    p = patient_a.player_id
    scores = [outcome(p, "p1", "phq9", 8, 30), outcome(p, "p2", "phq9", 14, 20), outcome(p, "p3", "phq9", 15, 10)]
    if one_batch:
        post(api, *scores)
    else:
        for score in scores:
            post(api, score)
    [alert] = deterioration_alerts(patient_a)
    assert alert.occurred_at == administered_at("p2")


def test_with_two_measures_occurred_at_is_the_earlier_crossing(api, patient_a):
    p = patient_a.player_id
    post(
        api,
        outcome(p, "p1", "phq9", 8, 40),
        outcome(p, "g1", "gad7", 5, 40),
        outcome(p, "g2", "gad7", 10, 25),  # GAD-7 crossed first
        outcome(p, "p2", "phq9", 15, 10),
    )
    [alert] = deterioration_alerts(patient_a)
    assert alert.measures == ["phq9", "gad7"] and alert.occurred_at == administered_at("g2")


def test_after_acknowledgement_a_new_deterioration_raises_a_new_alert(api, therapist_a, patient_a):
    p = patient_a.player_id
    post(api, outcome(p, "p1", "phq9", 8, 30), outcome(p, "g1", "gad7", 5, 30), outcome(p, "p2", "phq9", 14, 20))
    [first] = deterioration_alerts(patient_a)
    response = logged_in(therapist_a).post(f"/patients/{p}/alerts/{first.pk}/acknowledge", {"note": "Discussed"})
    assert response.status_code == 302
    post(api, outcome(p, "g2", "gad7", 9, 10))
    first_again, second = deterioration_alerts(patient_a)
    assert first_again.pk == first.pk and first_again.measures == ["phq9"]  # the acknowledged one is untouched
    assert first_again.acknowledged_at is not None and first_again.note == "Discussed"
    assert second.acknowledged_at is None and "gad7" in second.measures and "GAD-7 rose from 5 to 9" in second.reason
    assert second.notified_at is None


def test_one_score_per_measure_raises_nothing(api, patient_a):
    p = patient_a.player_id
    post(api, outcome(p, "p1", "phq9", 27, 10), outcome(p, "g1", "gad7", 21, 10))
    assert deterioration_alerts(patient_a) == []


def test_an_improvement_raises_nothing(api, patient_a):
    p = patient_a.player_id
    post(api, outcome(p, "p1", "phq9", 20, 30), outcome(p, "p2", "phq9", 8, 10))
    post(api, outcome(p, "g1", "gad7", 15, 30), outcome(p, "g2", "gad7", 4, 10))
    assert deterioration_alerts(patient_a) == []
