"""Small-cell suppression of the clinic admin's aggregates (reports.disclosure), at and around 5."""

import pytest

from reports.disclosure import SUPPRESSED, suppress


@pytest.mark.parametrize(("count", "shown"), [(0, 0), (1, SUPPRESSED), (4, SUPPRESSED), (5, 5), (6, 6)])
def test_a_count_of_patients_from_1_to_4_is_suppressed(count, shown):
    assert suppress({"n_patients": count, "item9_alerts": count})["n_patients"] == shown
    assert suppress({"item9_alerts": count})["item9_alerts"] == shown


def test_counts_that_are_not_of_patients_are_left_alone():
    engagement = {"sessions": 3, "minutes": 2, "breakthroughs": 1}
    assert suppress({"engagement": engagement})["engagement"] == engagement


def test_a_rate_that_would_give_a_suppressed_count_back_is_suppressed():
    cohort = {
        "n_paired": 12,
        "n_caseness_at_start": 4,
        "recovered": 2,
        "recovery_rate": 0.5,
        "reliable_improvement": 6,
        "reliable_improvement_rate": 0.5,
        "reliable_deterioration": 3,
        "reliable_deterioration_rate": 0.25,
    }
    shown = suppress({"cohort": cohort})["cohort"]
    assert shown["recovery_rate"] == SUPPRESSED  # its denominator is 4
    assert shown["reliable_improvement_rate"] == 0.5 and shown["reliable_improvement"] == 6
    assert shown["reliable_deterioration"] == SUPPRESSED and shown["reliable_deterioration_rate"] == SUPPRESSED
    assert cohort["recovered"] == 2  # the input is not changed


@pytest.mark.parametrize(("paired", "hidden"), [(1, True), (4, True), (5, False)])
def test_the_means_of_a_measure_paired_for_fewer_than_5_patients_are_suppressed(paired, hidden):
    summary = {
        "n_paired": paired,
        "mean_first": 15.0,
        "mean_last": 9.0,
        "mean_change": -6.0,
        "effect_size": {"n": paired, "d_z": -1.2, "ci95_low": -2.0, "ci95_high": -0.4, "sd_change": 5.0},
        "severity_first": {"minimal": 0, "mild": paired, "severe": 7},
    }
    shown = suppress({"phq9": summary})["phq9"]
    assert (shown["mean_first"] == SUPPRESSED) is hidden
    assert (shown["effect_size"]["d_z"] is None) is hidden
    assert shown["severity_first"] == {"minimal": 0, "mild": SUPPRESSED if paired < 5 else paired, "severe": 7}


def test_severity_rows_of_the_measures_view_are_suppressed():
    rows = [{"label": "Mild", "range": "5–9", "first": 3, "last": 8}]
    assert suppress({"measures": [{"severity": rows}]})["measures"][0]["severity"] == [
        {"label": "Mild", "range": "5–9", "first": SUPPRESSED, "last": 8}
    ]
