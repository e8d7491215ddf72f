"""Expected recovery stored and shown (DESIGN §8): the clinic's references, each patient's not-on-track
result in the API, the report and the chart, and the moderate alert once while it holds. The rule's
thresholds are pinned in tests/unit/test_trajectories.py; here the wiring is."""

import statistics
from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from reports import expected_recovery, selectors
from reports.models import Alert, AlertKind, MeasureStatus, TrajectoryReference
from reports.tasks import REFERENCE_DEBOUNCE_KEY, on_outcomes_changed
from tests.factories import OutcomeResponseFactory, PatientFactory
from tracking import recompute

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)  # a Monday, midday in London
pytestmark = pytest.mark.django_db


def score(patient, week: int, total: int, instrument: str = "phq9", day: int = 0):
    return OutcomeResponseFactory(
        patient=patient, instrument=instrument, total=total, administered_at=T0 + timedelta(weeks=week, days=day)
    )


def reference_total(i: int, week: int) -> int:
    return 16 if week == 0 else max(0, 16 - 2 * week + i % 4)


def reference_group(clinic, n: int = 10):
    """n patients who started moderately severe (16) and improved week by week (weeks 0–6)."""
    patients = [PatientFactory(clinic=clinic, player_id=f"ref-{i}") for i in range(n)]
    for i, patient in enumerate(patients):
        for week in range(7):
            score(patient, week, reference_total(i, week))
    return patients


def p75_at_week_4(judged_latest: int, n: int = 10) -> tuple[float, int]:
    """The reference at week 4 by hand: weeks 3, 4 and 5 of the group, and the judged patient's week-4 score
    (the patient judged is in the group)."""
    scores = [reference_total(i, w) for i in range(n) for w in (3, 4, 5)] + [judged_latest]
    return statistics.quantiles(scores, n=4, method="inclusive")[2], len(scores)


def status(patient, instrument="phq9") -> MeasureStatus:
    return MeasureStatus.objects.get(patient=patient, instrument=instrument)


def test_a_clinic_reference_judges_the_latest_score_against_its_75th_percentile(clinic, api, patient_a):
    reference_group(clinic)
    score(patient_a, 0, 16)
    score(patient_a, 4, 15)
    p75, n_scores = p75_at_week_4(15)
    assert p75 < 15  # the data is built so that 15 is above the expected range at week 4
    expected_recovery.clinic_refresh(clinic.pk)

    stored = TrajectoryReference.objects.get(clinic=clinic, instrument="phq9")
    assert stored.group_size == 11
    measure = api.get(f"/api/v1/patients/{patient_a.player_id}/effectiveness").json()["phq9"]
    assert measure["not_on_track"] is True
    assert measure["not_on_track_basis"] == "clinic_reference"
    assert measure["trajectory"] == {
        "week": 4,
        "latest": 15,
        "n_patients": 11,
        "n_scores": n_scores,
        "p25": measure["trajectory"]["p25"],
        "p50": measure["trajectory"]["p50"],
        "p75": p75,
    }
    assert status(patient_a).not_on_track is True
    assert status(patient_a).basis == "clinic_reference"
    # The reference patients themselves are within their own range.
    ref = PatientFactory._meta.model.objects.get(clinic=clinic, player_id="ref-0")
    assert status(ref).not_on_track is False


def test_a_score_within_the_expected_range_is_on_track(clinic, patient_a):
    reference_group(clinic)
    score(patient_a, 0, 16)
    score(patient_a, 4, 9)
    p75, _ = p75_at_week_4(9)
    assert p75 >= 9
    expected_recovery.clinic_refresh(clinic.pk)
    result = selectors.patient_effectiveness(patient_a)["phq9"]
    assert (result["not_on_track"], result["not_on_track_basis"]) == (False, "clinic_reference")
    assert not Alert.objects.filter(patient=patient_a, kind=AlertKind.NOT_ON_TRACK).exists()


def test_nine_reference_patients_fall_back_to_the_rule_without_a_reference(clinic, patient_a):
    reference_group(clinic, n=8)  # 8 + the judged patient = 9 < 10
    score(patient_a, 0, 16)
    score(patient_a, 4, 15)
    expected_recovery.clinic_refresh(clinic.pk)
    result = selectors.patient_effectiveness(patient_a)["phq9"]
    assert result["not_on_track_basis"] == "no_reliable_improvement"
    assert result["not_on_track"] is False  # week 4 < 6
    assert result["trajectory"]["p75"] is None and result["trajectory"]["n_patients"] is None


def test_without_a_reference_week_6_at_caseness_without_reliable_improvement_is_not_on_track(clinic, patient_a):
    score(patient_a, 0, 16)
    score(patient_a, 5, 14)
    expected_recovery.clinic_refresh(clinic.pk)
    assert selectors.patient_effectiveness(patient_a)["phq9"]["not_on_track"] is False  # week 5
    score(patient_a, 6, 14)
    expected_recovery.clinic_refresh(clinic.pk)
    measure = selectors.patient_effectiveness(patient_a)["phq9"]
    assert (measure["not_on_track"], measure["not_on_track_basis"]) == (True, "no_reliable_improvement")
    assert measure["trajectory"]["week"] == 6


def test_not_judged_before_week_3_or_below_caseness_at_intake(clinic, patient_a, patient_b):
    score(patient_a, 0, 16)
    score(patient_a, 2, 16, day=6)  # day 20: week 2
    score(patient_b, 0, 7)  # below caseness at intake
    score(patient_b, 8, 15)
    expected_recovery.clinic_refresh(clinic.pk)
    for patient in (patient_a, patient_b):
        measure = selectors.patient_effectiveness(patient)["phq9"]
        assert (measure["not_on_track"], measure["not_on_track_basis"]) == (None, None)
    assert status(patient_a).trajectory["week"] == 2
    assert selectors.patient_effectiveness(patient_a)["gad7"]["not_on_track"] is None  # no GAD-7 score


def test_the_alert_is_raised_once_while_it_holds_and_again_after_it_stopped(clinic, patient_a, therapist_a):
    score(patient_a, 0, 16)
    score(patient_a, 6, 15)
    assert expected_recovery.clinic_refresh(clinic.pk) == 1
    (alert,) = Alert.objects.filter(patient=patient_a, kind=AlertKind.NOT_ON_TRACK)
    assert (alert.severity, alert.measures) == ("moderate", ["phq9"])
    assert "PHQ-9 15 at week 6" in alert.reason and "not a prediction" in alert.reason
    assert alert.occurred_at == T0 + timedelta(weeks=6)
    patient_a.refresh_from_db()
    assert patient_a.risk_flag is False  # a moderate alert does not raise the risk flag

    # Still not on track: nothing more, even with a second measure going off track and the alert acknowledged.
    score(patient_a, 0, 15, instrument="gad7")
    score(patient_a, 7, 15, instrument="gad7")
    Alert.objects.filter(pk=alert.pk).update(acknowledged_at=timezone.now(), acknowledged_by=therapist_a)
    assert expected_recovery.clinic_refresh(clinic.pk) == 0
    assert status(patient_a, "gad7").not_on_track is True

    # Back on track on both, then off track again: a new alert.
    score(patient_a, 8, 4)
    score(patient_a, 8, 3, instrument="gad7")
    assert expected_recovery.clinic_refresh(clinic.pk) == 0
    assert not MeasureStatus.objects.filter(patient=patient_a, not_on_track=True).exists()
    score(patient_a, 9, 17)
    assert expected_recovery.clinic_refresh(clinic.pk) == 1
    assert Alert.objects.filter(patient=patient_a, kind=AlertKind.NOT_ON_TRACK).count() == 2
    assert status(patient_a).since is not None


def test_the_analytics_recompute_refreshes_a_patients_result(clinic, patient_a):
    score(patient_a, 0, 16)
    score(patient_a, 3, 15)
    recompute.patient_recompute(patient_a.pk)
    assert status(patient_a).not_on_track is False  # week 3, no reference, before week 6
    score(patient_a, 6, 15)
    recompute.patient_recompute(patient_a.pk)
    assert status(patient_a).not_on_track is True
    assert Alert.objects.filter(patient=patient_a, kind=AlertKind.NOT_ON_TRACK).count() == 1


def test_new_responses_queue_one_rebuild_per_clinic_until_it_starts(clinic, settings):
    cache.delete(REFERENCE_DEBOUNCE_KEY.format(clinic.pk))
    on_outcomes_changed(None, clinic_ids=[clinic.pk])
    assert cache.get(REFERENCE_DEBOUNCE_KEY.format(clinic.pk)) == 1
    # a second burst while one is queued sends nothing more: the key stays, no error
    on_outcomes_changed(None, clinic_ids=[clinic.pk])
    assert cache.get(REFERENCE_DEBOUNCE_KEY.format(clinic.pk)) == 1


def test_the_outcome_series_carries_the_band_of_the_patients_reference(clinic, patient_a):
    reference_group(clinic)
    score(patient_a, 0, 16)
    score(patient_a, 4, 15)
    expected_recovery.clinic_refresh(clinic.pk)
    phq9 = selectors.patient_outcome_series(patient_a)["instruments"][0]
    expected = phq9["expected"]
    assert expected["intake_band"] == "moderately_severe" and expected["not_on_track"] is True
    weeks = [b["week"] for b in expected["band"]]
    assert weeks == list(range(0, 7))  # weeks 0–6 have ≥ 10 patients; the latest is week 4, drawn to week 6
    week4 = next(b for b in expected["band"] if b["week"] == 4)
    assert week4["x"] == "2026-02-02" and week4["p75"] == p75_at_week_4(15)[0]
    gad7 = selectors.patient_outcome_series(patient_a)["instruments"][1]
    assert gad7["expected"] is None


def test_the_recompute_judges_only_patients_with_new_responses_and_drops_results_without_any(clinic, patient_a):
    score(patient_a, 0, 16)
    score(patient_a, 6, 15)
    recompute.patient_recompute(patient_a.pk)
    checked = status(patient_a).computed_at
    recompute.patient_recompute(patient_a.pk)  # nothing new: the result is not looked at again
    assert status(patient_a).computed_at == checked
    score(patient_a, 7, 4)
    recompute.patient_recompute(patient_a.pk)
    assert status(patient_a).not_on_track is False and status(patient_a).computed_at > checked
    patient_a.outcome_responses.all().delete()  # as retention removes them
    recompute.patient_recompute(patient_a.pk)
    assert not MeasureStatus.objects.filter(patient=patient_a).exists()
