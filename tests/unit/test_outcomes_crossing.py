"""Reliable change from the FIRST score and the administration that crossed into a reliable deterioration
(DESIGN §5, §7): the pure rules behind the caseload, the charts and the deterioration alert. No database."""

from datetime import UTC, datetime, timedelta

import pytest

from reports.instruments import GAD7, PHQ9
from reports.outcomes import Score, deterioration_crossing, reliable_change_direction

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def series(instrument, *totals) -> list[Score]:
    """One score a week, oldest first, ids naming their position."""
    return [
        Score(instrument.code, START + timedelta(weeks=n), total, None, f"{instrument.code}-{n}")
        for n, total in enumerate(totals)
    ]


# ----- reliable_change_direction -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instrument", "change", "expected"),
    [
        # PHQ-9: reliable at 6 points either way
        (PHQ9, 5, None),
        (PHQ9, 6, "deterioration"),
        (PHQ9, 7, "deterioration"),
        (PHQ9, -5, None),
        (PHQ9, -6, "improvement"),
        (PHQ9, -7, "improvement"),
        (PHQ9, 0, None),
        # GAD-7: reliable at 4 points either way
        (GAD7, 3, None),
        (GAD7, 4, "deterioration"),
        (GAD7, 5, "deterioration"),
        (GAD7, -3, None),
        (GAD7, -4, "improvement"),
        (GAD7, -5, "improvement"),
        (GAD7, 0, None),
    ],
)
def test_reliable_change_direction_at_and_around_the_threshold(instrument, change, expected):
    assert reliable_change_direction(instrument, change) == expected


@pytest.mark.parametrize("instrument", [PHQ9, GAD7])
def test_no_change_yet_has_no_direction(instrument):
    assert reliable_change_direction(instrument, None) is None


# ----- deterioration_crossing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instrument", "totals", "crossing_index"),
    [
        # from the first score: +5 / +3 is one point short, +6 / +4 is at the threshold, +7 / +5 above it
        (PHQ9, (8, 13), None),
        (PHQ9, (8, 14), 1),
        (PHQ9, (8, 15), 1),
        (GAD7, (5, 8), None),
        (GAD7, (5, 9), 1),
        (GAD7, (5, 10), 1),
        # improvement is not a deterioration
        (PHQ9, (14, 8), None),
        (GAD7, (9, 5), None),
    ],
)
def test_crossing_at_one_below_and_one_above_the_threshold(instrument, totals, crossing_index):
    scores = series(instrument, *totals)
    expected = None if crossing_index is None else scores[crossing_index]
    assert deterioration_crossing(instrument, scores) == expected


def test_the_crossing_is_the_administration_that_crossed_not_the_latest():
    scores = series(PHQ9, 8, 14, 15)
    assert deterioration_crossing(PHQ9, scores) == scores[1]


def test_change_is_measured_from_the_first_score_not_the_previous_one():
    # Each step is small (+2, +2, +2), but the third is 6 above the first.
    scores = series(PHQ9, 8, 10, 12, 14)
    assert deterioration_crossing(PHQ9, scores) == scores[3]
    # A big step from the previous score that is not reliable from the first is no crossing.
    assert deterioration_crossing(GAD7, series(GAD7, 10, 2, 13)) is None


def test_a_run_that_crosses_recovers_and_crosses_again_starts_at_the_latest_run():
    scores = series(PHQ9, 8, 14, 15, 12, 16, 17)
    assert deterioration_crossing(PHQ9, scores) == scores[4]


def test_a_run_that_crossed_and_has_recovered_now_is_no_crossing():
    assert deterioration_crossing(PHQ9, series(PHQ9, 8, 14, 15, 13)) is None
    assert deterioration_crossing(GAD7, series(GAD7, 5, 9, 8)) is None


def test_input_order_does_not_matter():
    scores = series(GAD7, 5, 9, 10)
    assert deterioration_crossing(GAD7, list(reversed(scores))) == scores[1]


@pytest.mark.parametrize("instrument", [PHQ9, GAD7])
def test_one_score_or_none_has_no_crossing(instrument):
    assert deterioration_crossing(instrument, series(instrument, 20)) is None
    assert deterioration_crossing(instrument, []) is None


def test_scores_of_another_instrument_are_refused():
    with pytest.raises(ValueError, match="not 'phq9'"):
        deterioration_crossing(PHQ9, series(GAD7, 5, 9))
