"""Outcome classification (DESIGN.md §5) and the effectiveness report shape (§6). Pure: no database."""

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from reports.instruments import GAD7, PHQ9
from reports.outcomes import (
    MEASURE_KEYS,
    PATIENT_KEYS,
    RCIResult,
    Score,
    classify_measure,
    classify_patient,
    cohort_summary,
    effect_size_dz,
    reliable_change_index,
)

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "outcomes_cohort.json"
START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def phq(total, day=0, items=None, rid=""):
    return Score("phq9", START + timedelta(days=day), total, items, rid or f"phq-{day}")


def gad(total, day=0, items=None, rid=""):
    return Score("gad7", START + timedelta(days=day), total, items, rid or f"gad-{day}")


def pair(first, last, make):
    return [make(first, 0), make(last, 56)]


# classify_measure -------------------------------------------------------------------------------------


def test_measure_keys_are_exactly_the_report_keys():
    assert set(classify_measure(PHQ9, pair(12, 4, phq))) == set(MEASURE_KEYS)
    assert set(classify_measure(PHQ9, [])) == set(MEASURE_KEYS)


def test_measure_with_no_score_is_all_null_and_unpaired():
    assert classify_measure(GAD7, []) == {key: (False if key == "paired" else None) for key in MEASURE_KEYS}


def test_measure_with_one_score():
    assert classify_measure(PHQ9, [phq(12)]) == {
        "first": 12,
        "last": 12,
        "severity_first": "moderate",
        "severity_last": "moderate",
        "paired": False,
        "change": None,
        "reliable_improvement": None,
        "reliable_deterioration": None,
        "at_caseness_first": True,
        "at_caseness_last": True,
    }


def test_measure_first_and_last_chosen_by_date_not_input_order():
    scores = [phq(9, day=60), phq(22, day=30), phq(17, day=0), phq(3, day=45)]
    result = classify_measure(PHQ9, scores)
    assert (result["first"], result["last"], result["change"]) == (17, 9, -8)
    assert (result["severity_first"], result["severity_last"]) == ("moderately_severe", "mild")
    assert result["paired"] is True
    assert result["reliable_improvement"] is True


def test_measure_same_instant_tie_broken_by_response_id():
    a = Score("gad7", START, 12, None, "r-a")
    b = Score("gad7", START, 6, None, "r-b")
    for order in ([a, b], [b, a]):
        result = classify_measure(GAD7, order)
        assert (result["first"], result["last"]) == (12, 6)


def test_measure_compares_instants_across_offsets():
    earlier = Score("gad7", datetime(2025, 1, 11, 2, 0, tzinfo=UTC), 5, None, "x")
    later = Score("gad7", datetime(2025, 1, 10, 23, 30, tzinfo=timezone(timedelta(hours=-5))), 10, None, "y")
    assert classify_measure(GAD7, [later, earlier])["change"] == 5


@pytest.mark.parametrize(
    ("first", "last", "improved", "deteriorated"),
    [
        (16, 11, False, False),  # -5
        (16, 10, True, False),  # -6
        (16, 4, True, False),
        (4, 9, False, False),  # +5
        (4, 10, False, True),  # +6
        (4, 27, False, True),
        (10, 10, False, False),
    ],
)
def test_phq9_reliable_change_is_6_points(first, last, improved, deteriorated):
    result = classify_measure(PHQ9, pair(first, last, phq))
    assert result["reliable_improvement"] is improved
    assert result["reliable_deterioration"] is deteriorated


@pytest.mark.parametrize(
    ("first", "last", "improved", "deteriorated"),
    [
        (12, 9, False, False),  # -3
        (12, 8, True, False),  # -4
        (4, 7, False, False),  # +3
        (4, 8, False, True),  # +4
        (8, 8, False, False),
    ],
)
def test_gad7_reliable_change_is_4_points(first, last, improved, deteriorated):
    result = classify_measure(GAD7, pair(first, last, gad))
    assert result["reliable_improvement"] is improved
    assert result["reliable_deterioration"] is deteriorated


@pytest.mark.parametrize(("total", "at_caseness"), [(9, False), (10, True)])
def test_phq9_caseness_edge(total, at_caseness):
    result = classify_measure(PHQ9, pair(total, total, phq))
    assert result["at_caseness_first"] is at_caseness
    assert result["at_caseness_last"] is at_caseness


@pytest.mark.parametrize(("total", "at_caseness"), [(7, False), (8, True)])
def test_gad7_caseness_edge(total, at_caseness):
    assert classify_measure(GAD7, [gad(total)])["at_caseness_first"] is at_caseness


def test_measure_rejects_another_instrument():
    with pytest.raises(ValueError, match="not 'phq9'"):
        classify_measure(PHQ9, [gad(5)])


@pytest.mark.parametrize(
    "score",
    [
        Score("phq9", START, 28),
        Score("phq9", START, -1),
        Score("phq9", START, 9, (1,) * 8, "short"),
        Score("phq9", START, 10, (1,) * 9, "disagrees"),
        Score("phq9", START, 4, (4, 0, 0, 0, 0, 0, 0, 0, 0), "item-range"),
    ],
)
def test_measure_rejects_invalid_scores(score):
    with pytest.raises(ValueError):
        classify_measure(PHQ9, [phq(5, day=3), score])


def test_measure_rejects_naive_datetimes():
    with pytest.raises(ValueError, match="timezone-aware"):
        classify_measure(PHQ9, [Score("phq9", datetime(2025, 1, 1), 5)])


def test_score_accepts_a_list_of_items_and_stays_hashable():
    score = Score("gad7", START, 7, [1] * 7)
    assert score.items == (1,) * 7
    assert hash(score)


# classify_patient -------------------------------------------------------------------------------------


def test_patient_keys_are_exactly_the_report_keys():
    assert tuple(classify_patient("p", [])) == PATIENT_KEYS


def test_patient_without_scores():
    result = classify_patient("p", [])
    assert result["phq9"]["paired"] is False
    assert result["phq9"]["first"] is None
    assert {k: result[k] for k in PATIENT_KEYS[3:8]} == dict.fromkeys(PATIENT_KEYS[3:8])
    assert result["item9_alert"] is False


def test_caseness_at_start_null_when_a_measure_has_no_score():
    assert classify_patient("p", [phq(20), phq(5, day=30)])["caseness_at_start"] is None
    assert classify_patient("p", [gad(15)])["caseness_at_start"] is None


@pytest.mark.parametrize(
    ("phq_first", "gad_first", "expected"),
    [(9, 7, False), (10, 7, True), (9, 8, True), (20, 15, True), (0, 0, False)],
)
def test_caseness_at_start(phq_first, gad_first, expected):
    # Single scores are enough to know the start.
    assert classify_patient("p", [phq(phq_first), gad(gad_first)])["caseness_at_start"] is expected


def test_one_score_on_a_measure_makes_the_combined_outcomes_null():
    result = classify_patient("p", [*pair(20, 2, phq), gad(15)])
    assert result["phq9"]["reliable_improvement"] is True
    assert result["caseness_at_start"] is True
    for key in ("recovery", "reliable_improvement", "reliable_deterioration", "reliable_recovery"):
        assert result[key] is None, key


def test_mixed_change_gives_neither_improvement_nor_deterioration():
    result = classify_patient("p", [*pair(20, 12, phq), *pair(7, 13, gad)])
    assert result["phq9"]["reliable_improvement"] is True
    assert result["gad7"]["reliable_deterioration"] is True
    assert result["reliable_improvement"] is False
    assert result["reliable_deterioration"] is False
    assert result["reliable_recovery"] is False


def test_improvement_on_one_measure_without_deterioration_on_the_other():
    result = classify_patient("p", [*pair(20, 12, phq), *pair(12, 14, gad)])
    assert (result["reliable_improvement"], result["reliable_deterioration"]) == (True, False)


def test_deterioration_on_one_measure():
    result = classify_patient("p", [*pair(8, 14, phq), *pair(5, 6, gad)])
    assert (result["reliable_improvement"], result["reliable_deterioration"]) == (False, True)
    assert result["caseness_at_start"] is False
    assert result["recovery"] is None
    assert result["reliable_recovery"] is None


def test_reliable_recovery():
    result = classify_patient("p", [*pair(18, 6, phq), *pair(14, 5, gad)])
    assert result["recovery"] is True
    assert result["reliable_improvement"] is True
    assert result["reliable_recovery"] is True


def test_recovery_without_reliable_improvement_is_not_reliable_recovery():
    result = classify_patient("p", [*pair(11, 8, phq), *pair(9, 6, gad)])
    assert (result["recovery"], result["reliable_improvement"], result["reliable_recovery"]) == (True, False, False)


@pytest.mark.parametrize(
    ("phq_last", "gad_last", "recovered"),
    [(9, 7, True), (10, 7, False), (9, 8, False), (10, 8, False)],
)
def test_recovery_needs_both_measures_below_caseness_at_the_end(phq_last, gad_last, recovered):
    result = classify_patient("p", [*pair(16, phq_last, phq), *pair(12, gad_last, gad)])
    assert result["recovery"] is recovered


def test_recovery_null_when_not_at_caseness_at_start():
    result = classify_patient("p", [*pair(9, 2, phq), *pair(7, 1, gad)])
    assert result["caseness_at_start"] is False
    assert result["recovery"] is None
    assert result["reliable_recovery"] is None
    assert result["reliable_improvement"] is True  # PHQ-9 −7; improvement is still counted


def nine_items(item9, total):
    rest = total - item9
    items = [min(3, max(0, rest - 3 * i)) for i in range(8)]
    return [*items, item9]


def test_item9_in_a_middle_response_raises_the_alert():
    scores = [
        phq(14, day=0, items=nine_items(0, 14)),
        phq(11, day=28, items=nine_items(1, 11)),
        phq(5, day=56, items=nine_items(0, 5)),
        *pair(10, 6, gad),
    ]
    assert classify_patient("p", scores)["item9_alert"] is True
    assert classify_patient("p", [scores[0], scores[2]])["item9_alert"] is False


def test_item9_alert_whatever_the_total():
    assert classify_patient("p", [phq(1, items=nine_items(1, 1))])["item9_alert"] is True


def test_item9_alert_false_without_item_scores():
    # Totals alone say nothing about item 9: False here means "no such answer among what we have".
    assert classify_patient("p", [*pair(27, 27, phq)])["item9_alert"] is False


def test_patient_rejects_unknown_instrument():
    with pytest.raises(ValueError, match="unknown instrument"):
        classify_patient("p", [Score("bdi2", START, 10)])


def test_patient_input_order_irrelevant():
    scores = [*pair(20, 8, phq), *pair(15, 5, gad), phq(12, day=20)]
    assert classify_patient("p", scores) == classify_patient("p", list(reversed(scores)))


def test_patient_result_is_json_serialisable():
    result = classify_patient("p", [*pair(20, 8, phq), gad(15)])
    assert json.loads(json.dumps(result)) == result


# cohort_summary -------------------------------------------------------------------------------------


def small_cohort():
    scores = {
        # Reliable recovery.
        "a": [*pair(14, 8, phq), *pair(10, 4, gad)],
        # At caseness, not recovered (GAD-7 ends at 9), no reliable change.
        "b": [*pair(12, 8, phq), *pair(9, 9, gad)],
        # At caseness, recovered, reliable deterioration on GAD-7 (+4): recovery without reliable recovery.
        "c": [*pair(10, 8, phq), *pair(3, 7, gad)],
        # Single scores, item 9 answered 1: in the counts of patients and alerts only.
        "d": [phq(20, items=[3, 3, 3, 3, 2, 2, 2, 1, 1]), gad(15)],
    }
    patients = [classify_patient(player_id, s) for player_id, s in scores.items()]
    return patients, scores


def test_cohort_counts_rates_and_denominators():
    patients, scores = small_cohort()
    cohort = cohort_summary(patients, scores)
    assert {k: v for k, v in cohort.items() if k not in ("phq9", "gad7")} == {
        "n_patients": 4,
        "n_paired": 3,
        "n_caseness_at_start": 3,
        "recovered": 2,
        "recovery_rate": 0.6667,
        "reliable_improvement": 1,
        "reliable_improvement_rate": 0.3333,
        "reliable_deterioration": 1,
        "reliable_deterioration_rate": 0.3333,
        "reliable_recovery": 1,
        "reliable_recovery_rate": 0.3333,
        "item9_alerts": 1,
    }


def test_cohort_per_measure_hand_computed():
    patients, scores = small_cohort()
    cohort = cohort_summary(patients, scores)
    # PHQ-9 changes −6, −4, −2: mean −4, SD 2, d_z = −2, SE = √(1/3 + 4/6) = 1, CI −2 ± 1.96.
    assert cohort["phq9"] == {
        "n_with_score": 4,
        "n_paired": 3,
        "n_responses": 7,
        "mean_first": 12.0,
        "mean_last": 8.0,
        "mean_change": -4.0,
        "effect_size": {"n": 3, "sd_change": 2.0, "d_z": -2.0, "ci95_low": -3.96, "ci95_high": -0.04},
        "severity_first": {"minimal": 0, "mild": 0, "moderate": 3, "moderately_severe": 0, "severe": 0},
        "severity_last": {"minimal": 0, "mild": 3, "moderate": 0, "moderately_severe": 0, "severe": 0},
    }
    # GAD-7 10→4, 9→9, 3→7: changes −6, 0, +4, mean −2/3, SD √(76/3) ≈ 5.0332, d_z ≈ −0.1325.
    g = cohort["gad7"]
    assert (g["mean_first"], g["mean_last"], g["mean_change"]) == (7.3333, 6.6667, -0.6667)
    assert g["effect_size"]["sd_change"] == 5.0332
    assert g["effect_size"]["d_z"] == -0.1325
    se = math.sqrt(1 / 3 + (2 / 3 / math.sqrt(76 / 3)) ** 2 / 6)
    assert g["effect_size"]["ci95_low"] == round(-(2 / 3) / math.sqrt(76 / 3) - 1.96 * se, 4)
    assert g["severity_first"] == {"minimal": 1, "mild": 1, "moderate": 1, "severe": 0}
    assert g["severity_last"] == {"minimal": 1, "mild": 2, "moderate": 0, "severe": 0}
    assert g["n_responses"] == 7


def test_cohort_n_responses_null_without_scores():
    patients, _ = small_cohort()
    cohort = cohort_summary(patients)
    assert cohort["phq9"]["n_responses"] is None
    assert cohort["gad7"]["n_responses"] is None


def test_empty_cohort_has_null_rates_and_zero_counts():
    cohort = cohort_summary([])
    assert cohort["n_patients"] == cohort["n_paired"] == cohort["recovered"] == 0
    for key in ("recovery_rate", "reliable_improvement_rate", "reliable_deterioration_rate", "reliable_recovery_rate"):
        assert cohort[key] is None
    assert cohort["phq9"]["mean_first"] is None
    assert cohort["phq9"]["effect_size"]["d_z"] is None
    assert cohort["gad7"]["severity_first"] == {"minimal": 0, "mild": 0, "moderate": 0, "severe": 0}
    assert json.loads(json.dumps(cohort)) == cohort


def test_cohort_recovery_rate_null_when_nobody_at_caseness():
    patients = [classify_patient("p", [*pair(4, 2, phq), *pair(3, 1, gad)])]
    cohort = cohort_summary(patients)
    assert (cohort["n_paired"], cohort["n_caseness_at_start"]) == (1, 0)
    assert cohort["recovery_rate"] is None
    assert cohort["reliable_recovery_rate"] is None
    assert cohort["reliable_improvement_rate"] == 0.0


def test_effect_size_needs_two_and_a_nonzero_sd():
    assert effect_size_dz([])["d_z"] is None
    assert effect_size_dz([-5])["d_z"] is None
    constant = effect_size_dz([-3, -3, -3])
    assert constant["sd_change"] == 0.0
    assert constant["d_z"] is None
    assert constant["ci95_low"] is None


def test_effect_size_two_patients():
    # Changes −2, −6: mean −4, SD √8, d = −√2, SE = √(1/2 + 2/4) = 1.
    result = effect_size_dz([-2, -6])
    assert result["d_z"] == round(-math.sqrt(2), 4)
    assert result["ci95_high"] == round(-math.sqrt(2) + 1.96, 4)


# reliable_change_index -------------------------------------------------------------------------------


def test_rci_reliable_improvement():
    # S_diff = 5·√2·√0.16 = 2.8284; RC = −6 / 2.8284 = −2.1213.
    result = reliable_change_index(20, 14, sd=5, reliability=0.84)
    assert isinstance(result, RCIResult)
    assert result.s_diff == pytest.approx(2.828427, abs=1e-6)
    assert result.rc == pytest.approx(-2.121320, abs=1e-6)
    assert result.reliable is True


def test_rci_not_reliable():
    result = reliable_change_index(20, 15, sd=5, reliability=0.84)
    assert result.rc == pytest.approx(-1.767767, abs=1e-6)
    assert result.reliable is False


def test_rci_threshold_is_strictly_above_1_96():
    # sd 1, r 0.5 -> S_diff = 1, so RC = x2 − x1.
    assert reliable_change_index(0, 1.96, 1, 0.5).reliable is False
    assert reliable_change_index(0, 1.97, 1, 0.5).reliable is True
    assert reliable_change_index(0, -1.97, 1, 0.5).reliable is True


def test_rci_reliability_zero():
    assert reliable_change_index(10, 10, 3, 0).s_diff == pytest.approx(3 * math.sqrt(2))


@pytest.mark.parametrize(("sd", "r"), [(0, 0.8), (-1, 0.8), (float("nan"), 0.8), (5, 1), (5, -0.1), (5, 1.5)])
def test_rci_rejects_bad_parameters(sd, r):
    with pytest.raises(ValueError):
        reliable_change_index(10, 5, sd, r)


# the hand-worked fixture ---------------------------------------------------------------------------------


def load_fixture():
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def fixture_scores(patient):
    return [
        Score(
            instrument=r["instrument"],
            administered_at=datetime.fromisoformat(r["administered_at"]),
            total=r["total"],
            items=tuple(r["items"]) if r["items"] is not None else None,
            response_id=r["response_id"],
        )
        for r in patient["responses"]
    ]


FIXTURE_PATIENTS = load_fixture()["patients"]


def test_fixture_is_big_and_valid():
    assert len(FIXTURE_PATIENTS) >= 20
    assert len({p["player_id"] for p in FIXTURE_PATIENTS}) == len(FIXTURE_PATIENTS)
    for patient in FIXTURE_PATIENTS:
        for r in patient["responses"]:
            assert datetime.fromisoformat(r["administered_at"]).utcoffset() is not None
            if r["items"] is not None:
                assert sum(r["items"]) == r["total"], r["response_id"]
        assert tuple(patient["expected"]) == PATIENT_KEYS
        assert set(patient["expected"]["phq9"]) == set(MEASURE_KEYS)


@pytest.mark.parametrize("patient", FIXTURE_PATIENTS, ids=[p["player_id"] for p in FIXTURE_PATIENTS])
def test_fixture_patient_matches_hand_classification(patient):
    result = classify_patient(patient["player_id"], fixture_scores(patient))
    expected = patient["expected"]
    assert set(result) == set(expected)
    for key in PATIENT_KEYS:
        if key in ("phq9", "gad7"):
            for field in MEASURE_KEYS:
                assert result[key][field] == expected[key][field], f"{key}.{field}"
                assert type(result[key][field]) is type(expected[key][field]), f"{key}.{field}"
        else:
            assert result[key] == expected[key], key
            assert type(result[key]) is type(expected[key]), key


def test_fixture_cohort_matches_hand_counts():
    data = load_fixture()
    patients = [classify_patient(p["player_id"], fixture_scores(p)) for p in data["patients"]]
    cohort = cohort_summary(patients)
    for key, value in data["expected_cohort"].items():
        assert cohort[key] == value, key
