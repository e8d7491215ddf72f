"""Expected recovery (DESIGN §8): reference trajectories and the not-on-track signal. Pure: no database."""

import json
import statistics
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from reports.instruments import GAD7, PHQ9
from reports.outcomes import Score
from reports.trajectories import (
    BASIS_CLINIC_REFERENCE,
    BASIS_NO_RELIABLE_IMPROVEMENT,
    PatientScores,
    Reference,
    band_series,
    build_reference,
    not_on_track,
    patient_scores,
    week_of,
)

D0 = date(2025, 1, 6)


def day(n):
    return D0 + timedelta(days=n)


def patient(key, *scores):
    """scores: (day offset, total) pairs."""
    return PatientScores(key, [(day(d), total) for d, total in scores])


def group(n, first=12, week_scores=None, prefix="p"):
    """n patients with first score `first` on day 0 and, per patient, the (day, total) pairs given."""
    week_scores = week_scores or (lambda i: [(21, 12)])
    return [patient(f"{prefix}{i}", (0, first), *week_scores(i)) for i in range(n)]


EMPTY = Reference(instrument=PHQ9.code)


# --- weeks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("days", "week"), [(0, 0), (6, 0), (7, 1), (20, 2), (21, 3), (41, 5), (42, 6)])
def test_week_is_floor_of_days_over_seven(days, week):
    assert week_of(day(days), D0) == week


def test_week_counts_from_the_first_score_whatever_the_input_order():
    result = not_on_track(patient("x", (21, 16), (0, 16)), EMPTY, PHQ9)
    assert result.week == 3
    assert result.latest == 16


# --- when the result is null ---------------------------------------------------------------------------


def test_no_score_is_null():
    result = not_on_track(PatientScores("x", []), EMPTY, PHQ9)
    assert (result.not_on_track, result.basis) == (None, None)
    assert set(result.inputs().values()) == {None}


def test_first_score_below_caseness_is_null():
    result = not_on_track(patient("x", (0, 9), (60, 20)), EMPTY, PHQ9)
    assert (result.not_on_track, result.basis) == (None, None)


def test_latest_at_week_2_is_null_and_week_3_is_judged():
    at_week_2 = not_on_track(patient("x", (0, 16), (20, 16)), EMPTY, PHQ9)
    assert (at_week_2.not_on_track, at_week_2.basis, at_week_2.week) == (None, None, 2)
    at_week_3 = not_on_track(patient("x", (0, 16), (21, 16)), EMPTY, PHQ9)
    assert (at_week_3.not_on_track, at_week_3.basis, at_week_3.week) == (False, BASIS_NO_RELIABLE_IMPROVEMENT, 3)


def test_a_single_score_is_week_0_and_null():
    result = not_on_track(patient("x", (0, 20)), EMPTY, PHQ9)
    assert (result.not_on_track, result.week) == (None, 0)


# --- without a reference: the no-reliable-improvement rule ---------------------------------------------


def test_flat_score_is_on_track_at_week_5_and_not_on_track_at_week_6():
    at_5 = not_on_track(patient("x", (0, 16), (41, 16)), EMPTY, PHQ9)
    assert (at_5.not_on_track, at_5.basis, at_5.week) == (False, BASIS_NO_RELIABLE_IMPROVEMENT, 5)
    at_6 = not_on_track(patient("x", (0, 16), (42, 16)), EMPTY, PHQ9)
    assert (at_6.not_on_track, at_6.basis, at_6.week) == (True, BASIS_NO_RELIABLE_IMPROVEMENT, 6)
    assert at_6.inputs() == {
        "week": 6,
        "latest": 16,
        "n_patients": None,
        "n_scores": None,
        "p25": None,
        "p50": None,
        "p75": None,
    }


def test_nine_flat_phq9_administrations_are_not_on_track():
    scores = [(7 * w, 16) for w in range(9)]
    result = not_on_track(patient("x", *scores), EMPTY, PHQ9)
    assert (result.not_on_track, result.week) == (True, 8)


@pytest.mark.parametrize(
    ("first", "latest", "expected"),
    [
        (16, 11, True),  # −5: not reliable, still at caseness
        (16, 10, False),  # −6: reliable improvement (at caseness, but improved reliably)
        (16, 22, True),  # reliable deterioration is not an improvement
        (12, 9, False),  # −3, but below caseness at the latest
        (12, 10, True),  # at caseness exactly
    ],
)
def test_no_reference_rule_at_week_6(first, latest, expected):
    result = not_on_track(patient("x", (0, first), (42, latest)), EMPTY, PHQ9)
    assert (result.not_on_track, result.basis) == (expected, BASIS_NO_RELIABLE_IMPROVEMENT)


def test_no_reference_rule_uses_the_instruments_thresholds_gad7():
    gad_empty = Reference(instrument=GAD7.code)
    assert not_on_track(patient("x", (0, 12), (42, 9)), gad_empty, GAD7).not_on_track is True  # −3
    assert not_on_track(patient("x", (0, 12), (42, 8)), gad_empty, GAD7).not_on_track is False  # −4
    assert not_on_track(patient("x", (0, 8), (42, 7)), gad_empty, GAD7).not_on_track is False  # below 8


# --- the reference -------------------------------------------------------------------------------------


def test_reference_needs_10_distinct_patients_9_is_not_enough():
    nine = build_reference(group(9), PHQ9)
    assert nine.at("moderate", 3) is None
    assert nine.bands == {}
    ten = build_reference(group(10), PHQ9)
    ref = ten.at("moderate", 3)
    assert ref is not None
    assert (ref.n_patients, ref.n_scores) == (10, 10)


def test_judged_patient_with_9_others_has_a_reference_with_8_others_not():
    judged = patient("judged", (0, 12), (21, 13))
    with_nine_others = build_reference([judged, *group(9)], PHQ9)
    result = not_on_track(judged, with_nine_others, PHQ9)
    assert (result.basis, result.n_patients) == (BASIS_CLINIC_REFERENCE, 10)
    with_eight_others = build_reference([judged, *group(8)], PHQ9)
    result = not_on_track(judged, with_eight_others, PHQ9)
    assert (result.basis, result.n_patients) == (BASIS_NO_RELIABLE_IMPROVEMENT, None)


def test_patients_not_at_caseness_at_first_are_not_in_the_group():
    below = group(5, first=9, prefix="below")
    reference = build_reference([*group(9), *below], PHQ9)
    assert reference.bands == {}
    assert "mild" not in build_reference(group(10, first=9), PHQ9).bands


def test_intake_band_is_the_band_of_the_first_score():
    reference = build_reference([*group(5, first=12, prefix="a"), *group(5, first=16, prefix="b")], PHQ9)
    assert reference.bands == {}  # 5 moderate + 5 moderately severe: neither band has 10
    reference = build_reference(group(10, first=16), PHQ9)
    assert set(reference.bands) == {"moderately_severe"}


def quartile_group():
    """13 moderate patients whose week-3 scores are 3..15: inclusive quartiles 6, 9, 12 exactly."""
    return group(13, week_scores=lambda i: [(21, 3 + i)])


def test_reference_percentiles_are_inclusive_quartiles():
    ref = build_reference(quartile_group(), PHQ9).at("moderate", 3)
    assert ref is not None
    assert (ref.p25, ref.p50, ref.p75) == (6, 9, 12)
    assert [ref.p25, ref.p50, ref.p75] == statistics.quantiles(range(3, 16), n=4, method="inclusive")


def test_latest_equal_to_p75_is_on_track_and_above_is_not():
    patients = quartile_group()
    reference = build_reference(patients, PHQ9)
    equal = not_on_track(patients[9], reference, PHQ9)  # week-3 score 12 = p75
    assert (equal.not_on_track, equal.basis, equal.latest) == (False, BASIS_CLINIC_REFERENCE, 12)
    above = not_on_track(patients[10], reference, PHQ9)  # 13 > 12
    assert (above.not_on_track, above.basis, above.latest) == (True, BASIS_CLINIC_REFERENCE, 13)
    assert above.inputs() == {
        "week": 3,
        "latest": 13,
        "n_patients": 13,
        "n_scores": 13,
        "p25": 6,
        "p50": 9,
        "p75": 12,
    }


def test_reference_beats_the_fallback_at_week_6():
    # Flat at 16 from week 6 would be not on track without a reference; the clinic's patients are flat at 16
    # too, so with the reference it is on track.
    patients = group(10, first=16, week_scores=lambda i: [(42, 16)])
    result = not_on_track(patients[0], build_reference(patients, PHQ9), PHQ9)
    assert (result.not_on_track, result.basis) == (False, BASIS_CLINIC_REFERENCE)


def test_intake_band_without_a_reference_falls_back_to_the_no_reliable_improvement_rule():
    reference = build_reference(group(10, week_scores=lambda i: [(42, 12)]), PHQ9)
    assert reference.at("moderate", 6) is not None
    severe = patient("severe", (0, 22), (42, 22))
    result = not_on_track(severe, build_reference([severe, *group(10, week_scores=lambda i: [(42, 12)])], PHQ9), PHQ9)
    assert (result.not_on_track, result.basis, result.intake_band) == (True, BASIS_NO_RELIABLE_IMPROVEMENT, "severe")
    assert result.p75 is None


def test_week_without_a_reference_in_a_band_that_has_some_falls_back():
    patients = group(10)  # scores at week 3 only: references at weeks 0–1 (the first scores) and 2–4
    reference = build_reference(patients, PHQ9)
    assert sorted(reference.bands["moderate"]) == [0, 1, 2, 3, 4]
    late = patient("late", (0, 12), (42, 12))  # week 6 not covered
    result = not_on_track(late, reference, PHQ9)
    assert (result.not_on_track, result.basis) == (True, BASIS_NO_RELIABLE_IMPROVEMENT)


def test_several_scores_in_one_week_keep_only_the_latest():
    # Each patient scores 27 on day 21 and 5 on day 27 (both week 3): only the 5 counts.
    patients = group(10, week_scores=lambda i: [(27, 5), (21, 27)])
    ref = build_reference(patients, PHQ9).at("moderate", 3)
    assert ref is not None
    assert (ref.n_patients, ref.n_scores, ref.p25, ref.p50, ref.p75) == (10, 10, 5, 5, 5)
    result = not_on_track(patients[0], build_reference(patients, PHQ9), PHQ9)
    assert (result.latest, result.not_on_track) == (5, False)


def test_same_day_scores_keep_the_last_given():
    patients = group(10, week_scores=lambda i: [(21, 20), (21, 6)])
    ref = build_reference(patients, PHQ9).at("moderate", 3)
    assert ref is not None
    assert (ref.n_scores, ref.p75) == (10, 6)
    assert not_on_track(patients[0], build_reference(patients, PHQ9), PHQ9).latest == 6


def test_a_patient_contributes_up_to_three_scores_to_a_weeks_reference():
    # Scores in weeks 2, 3, 4: the week-3 reference has all three of each patient.
    patients = group(10, week_scores=lambda i: [(14, 10), (21, 11), (28, 12)])
    reference = build_reference(patients, PHQ9)
    at_3 = reference.at("moderate", 3)
    assert at_3 is not None
    assert (at_3.n_patients, at_3.n_scores) == (10, 30)
    at_5 = reference.at("moderate", 5)  # weeks 4, 5, 6: one score each
    assert at_5 is not None
    assert (at_5.n_patients, at_5.n_scores, at_5.p50) == (10, 10, 12)
    assert reference.at("moderate", 6) is None  # weeks 5, 6, 7: none
    at_1 = reference.at("moderate", 1)  # weeks 0, 1, 2: the first score and week 2
    assert at_1 is not None
    assert (at_1.n_patients, at_1.n_scores) == (10, 20)


def test_window_counts_distinct_patients_not_scores():
    # 5 patients with 3 scores each around week 3 and 4 with one: 19 scores from 9 patients → none.
    many = group(5, week_scores=lambda i: [(14, 10), (21, 11), (28, 12)], prefix="m")
    few = group(4, prefix="f")
    assert build_reference([*many, *few], PHQ9).at("moderate", 3) is None


def test_duplicate_patient_and_out_of_range_totals_are_rejected():
    with pytest.raises(ValueError, match="twice"):
        build_reference([patient("a", (0, 12)), patient("a", (0, 12))], PHQ9)
    with pytest.raises(ValueError):
        build_reference([patient("a", (0, 28))], PHQ9)
    with pytest.raises(ValueError):
        not_on_track(patient("a", (0, 22)), Reference(instrument=GAD7.code), GAD7)
    with pytest.raises(ValueError, match="reference"):
        not_on_track(patient("a", (0, 12)), EMPTY, GAD7)


def test_reference_round_trips_through_json():
    reference = build_reference([*quartile_group(), *group(10, first=20, prefix="s")], PHQ9)
    data = json.loads(json.dumps(reference.to_json()))
    assert data["instrument"] == "phq9"
    assert data["bands"]["moderate"]["3"] == {"n_patients": 13, "n_scores": 13, "p25": 6, "p50": 9, "p75": 12}
    assert Reference.from_json(data) == reference
    assert Reference.from_json(data).to_json() == reference.to_json()


def test_band_series_lists_the_weeks_with_a_reference():
    patients = group(10, week_scores=lambda i: [(21, 10 + (i % 5))])
    reference = build_reference(patients, PHQ9)
    series = band_series(reference, "moderate", range(0, 8))
    assert [week for week, *_ in series] == [0, 1, 2, 3, 4]
    week, p25, p50, p75 = series[3]
    ref = reference.at("moderate", 3)
    assert ref is not None
    assert (week, p25, p50, p75) == (3, ref.p25, ref.p50, ref.p75)
    assert band_series(reference, "severe", range(0, 8)) == []


def test_patient_scores_from_outcome_scores_uses_local_dates_and_administration_order():
    tz = timezone(timedelta(hours=-5))
    late_evening = datetime(2025, 1, 6, 23, 30, tzinfo=tz)  # 04:30 UTC on 7 January
    scores = [
        Score("phq9", late_evening + timedelta(days=21), 18, response_id="b"),
        Score("phq9", late_evening, 16, response_id="a"),
    ]
    built = patient_scores("x", scores, lambda at: at.astimezone(tz).date())
    assert built.scores == ((date(2025, 1, 6), 16), (date(2025, 1, 27), 18))
    as_utc = patient_scores("x", scores, lambda at: at.astimezone(UTC).date())
    assert as_utc.scores[0][0] == date(2025, 1, 7)


# --- a synthetic clinic with known percentiles ---------------------------------------------------------


def synthetic_clinic(n=200, weeks=range(1, 11)):
    """n moderate-intake patients (first PHQ-9 12 on day 0). Patient i has rank u = i / (n − 1); at week w
    they score round(14 − w + 8u), so at every week the scores are uniform on [14 − w, 22 − w]: quartiles
    16 − w, 18 − w, 20 − w. Pooling weeks w−1, w, w+1 shifts the uniform by −1, 0, +1, which leaves the
    quartiles where they are (the mixture's CDF is linear between them). Scores are on a varying weekday."""
    patients = []
    for i in range(n):
        u = i / (n - 1)
        scores = [(0, 12)]
        for w in weeks:
            total = max(0, min(27, round(14 - w + 8 * u)))
            scores.append((7 * w + (i % 7), total))
        patients.append(patient(f"s{i}", *scores))
    return patients


def test_synthetic_clinic_gets_the_expected_band_back():
    patients = synthetic_clinic()
    reference = build_reference(patients, PHQ9)
    series = band_series(reference, "moderate", range(2, 10))
    assert [week for week, *_ in series] == list(range(2, 10))
    for week, p25, p50, p75 in series:
        assert p25 == pytest.approx(16 - week, abs=0.5)
        assert p50 == pytest.approx(18 - week, abs=0.5)
        assert p75 == pytest.approx(20 - week, abs=0.5)
        ref = reference.at("moderate", week)
        assert ref is not None
        assert (ref.n_patients, ref.n_scores) == (200, 600)


def test_synthetic_clinic_flags_those_above_the_band():
    reference = build_reference(synthetic_clinic(), PHQ9)
    # Judged at week 8 (their scores up to then), against the whole clinic's reference.
    judged = [PatientScores(p.key, [s for s in p.scores if week_of(s[0], D0) <= 8]) for p in synthetic_clinic()]
    results = [not_on_track(p, reference, PHQ9) for p in judged]
    assert {r.basis for r in results} == {BASIS_CLINIC_REFERENCE}
    assert {r.week for r in results} == {8}
    ref = reference.at("moderate", 8)
    assert ref is not None
    assert all(r.not_on_track == (r.latest is not None and r.latest > ref.p75) for r in results)
    # Integer scores tie at the 75th percentile, so somewhat under a quarter are above it.
    flagged = sum(1 for r in results if r.not_on_track)
    assert 0.1 * len(judged) <= flagged <= 0.25 * len(judged)
    assert results[-1].not_on_track is True
    assert results[0].not_on_track is False
