"""The questionnaire definitions: every threshold pinned (DESIGN.md §5)."""

import pytest

from reports.instruments import GAD7, INSTRUMENTS, PHQ9, get_instrument, score_errors


def test_instrument_shapes():
    assert (PHQ9.item_count, PHQ9.total_min, PHQ9.total_max) == (9, 0, 27)
    assert (GAD7.item_count, GAD7.total_min, GAD7.total_max) == (7, 0, 21)
    assert PHQ9.risk_item == 9
    assert GAD7.risk_item is None
    assert set(INSTRUMENTS) == {"phq9", "gad7"}


def test_get_instrument():
    assert get_instrument("phq9") is PHQ9
    assert get_instrument("gad7") is GAD7
    with pytest.raises(ValueError, match="unknown instrument"):
        get_instrument("bdi2")


@pytest.mark.parametrize(
    ("total", "band"),
    [
        (0, "minimal"),
        (4, "minimal"),
        (5, "mild"),
        (9, "mild"),
        (10, "moderate"),
        (14, "moderate"),
        (15, "moderately_severe"),
        (19, "moderately_severe"),
        (20, "severe"),
        (27, "severe"),
    ],
)
def test_phq9_band_edges(total, band):
    assert PHQ9.band(total) == band


@pytest.mark.parametrize(
    ("total", "band"),
    [
        (0, "minimal"),
        (4, "minimal"),
        (5, "mild"),
        (9, "mild"),
        (10, "moderate"),
        (14, "moderate"),
        (15, "severe"),
        (21, "severe"),
    ],
)
def test_gad7_band_edges(total, band):
    assert GAD7.band(total) == band


@pytest.mark.parametrize(("instrument", "total"), [(PHQ9, -1), (PHQ9, 28), (GAD7, -1), (GAD7, 22)])
def test_band_outside_range_raises(instrument, total):
    with pytest.raises(ValueError, match="outside"):
        instrument.band(total)


def test_bands_cover_the_range_without_gaps():
    for instrument in INSTRUMENTS.values():
        edges = [(b.low, b.high) for b in instrument.bands]
        assert edges[0][0] == instrument.total_min
        assert edges[-1][1] == instrument.total_max
        for (_, high), (low, _) in zip(edges, edges[1:], strict=False):
            assert low == high + 1


def test_phq9_caseness_is_10_and_above():
    assert PHQ9.caseness_threshold == 10
    assert PHQ9.at_caseness(9) is False
    assert PHQ9.at_caseness(10) is True


def test_gad7_caseness_is_8_and_above():
    assert GAD7.caseness_threshold == 8
    assert GAD7.at_caseness(7) is False
    assert GAD7.at_caseness(8) is True


def test_reliable_change_thresholds():
    assert PHQ9.reliable_change == 6
    assert GAD7.reliable_change == 4


def test_band_labels():
    assert [b.label for b in PHQ9.bands] == ["Minimal", "Mild", "Moderate", "Moderately severe", "Severe"]


# score_errors ------------------------------------------------------------------------------------------


def test_valid_responses_have_no_errors():
    assert score_errors(PHQ9, [1, 1, 1, 1, 1, 1, 1, 1, 1], 9) == {}
    assert score_errors(PHQ9, None, 27) == {}
    assert score_errors(GAD7, [3] * 7, None) == {}
    assert score_errors(GAD7, [0] * 7, 0) == {}


def test_neither_items_nor_total():
    assert set(score_errors(PHQ9, None, None)) == {"items"}


@pytest.mark.parametrize(("instrument", "count"), [(PHQ9, 8), (PHQ9, 10), (GAD7, 6), (GAD7, 9), (GAD7, 0)])
def test_wrong_item_count(instrument, count):
    errors = score_errors(instrument, [1] * count, None)
    assert set(errors) == {"items"}
    assert f"got {count}" in errors["items"]


@pytest.mark.parametrize("bad", [-1, 4])
def test_item_out_of_range_names_the_item(bad):
    items = [0] * 9
    items[4] = bad
    errors = score_errors(PHQ9, items, None)
    assert set(errors) == {"items"}
    assert errors["items"].startswith("item 5 ")


@pytest.mark.parametrize(("instrument", "total"), [(PHQ9, -1), (PHQ9, 28), (GAD7, -1), (GAD7, 22)])
def test_total_out_of_range(instrument, total):
    assert set(score_errors(instrument, None, total)) == {"total"}


def test_total_disagreeing_with_items():
    errors = score_errors(GAD7, [1] * 7, 8)
    assert set(errors) == {"total"}
    assert "disagrees" in errors["total"]
    assert "(7)" in errors["total"]
