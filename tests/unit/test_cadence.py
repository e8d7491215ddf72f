"""Measurement cadence (DESIGN.md §8): activity window, due measures and the `measures-due` shape. Pure."""

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from reports.cadence import (
    ACTIVE_WINDOW_DAYS,
    DEFAULT_INSTRUMENTS,
    DEFAULT_INTERVAL_DAYS,
    Due,
    as_json,
    due_measures,
    is_active,
)
from reports.instruments import INSTRUMENTS

TODAY = date(2026, 3, 31)


def given(days_ago, hour=9):
    """A last administration `days_ago` local days before TODAY: (local date, aware UTC timestamp)."""
    day = TODAY - timedelta(days=days_ago)
    return day, datetime(day.year, day.month, day.day, hour, 0, tzinfo=UTC)


def due(last, interval=DEFAULT_INTERVAL_DAYS, active=True, today=TODAY, **kwargs):
    return due_measures(today=today, interval_days=interval, active=active, last_administered=last, **kwargs)


# constants --------------------------------------------------------------------------------------------


def test_defaults_match_design_and_instrument_codes():
    assert DEFAULT_INTERVAL_DAYS == 14
    assert ACTIVE_WINDOW_DAYS == 30
    assert set(DEFAULT_INSTRUMENTS) == set(INSTRUMENTS) == {"phq9", "gad7"}


# is_active --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days_ago", "active"),
    [(0, True), (1, True), (28, True), (29, True), (30, False), (31, False), (365, False)],
)
def test_active_window_is_today_and_the_29_days_before(days_ago, active):
    assert is_active([TODAY - timedelta(days=days_ago)], TODAY) is active


def test_no_sessions_is_inactive():
    assert is_active([], TODAY) is False


def test_any_session_in_window_makes_active():
    days = [TODAY - timedelta(days=90), TODAY - timedelta(days=30), TODAY - timedelta(days=29)]
    assert is_active(days, TODAY) is True
    assert is_active(days[:2], TODAY) is False


def test_a_day_after_today_is_not_in_the_window():
    assert is_active([TODAY + timedelta(days=1)], TODAY) is False


def test_active_accepts_any_iterable_once():
    assert is_active(iter([TODAY - timedelta(days=40), TODAY - timedelta(days=3)]), TODAY) is True


def test_active_window_crosses_month_and_year_boundaries():
    today = date(2026, 1, 15)
    assert is_active([date(2025, 12, 17)], today) is True  # 29 days before
    assert is_active([date(2025, 12, 16)], today) is False  # 30 days before
    leap = date(2024, 3, 1)
    assert is_active([date(2024, 2, 1)], leap) is True  # 29 days before (2024 is a leap year)
    assert is_active([date(2024, 1, 31)], leap) is False


# due_measures: the interval threshold -----------------------------------------------------------------


@pytest.mark.parametrize("interval", [1, 7, 14, 28, 365])
def test_not_due_the_day_before_the_interval(interval):
    last = {"phq9": given(interval - 1), "gad7": given(interval - 1)}
    assert due(last, interval) == []


@pytest.mark.parametrize("interval", [1, 7, 14, 28, 365])
def test_due_on_the_interval_day_since_that_day(interval):
    when = given(interval)
    result = due({"phq9": when, "gad7": when}, interval)
    assert result == [Due("phq9", TODAY, when[1]), Due("gad7", TODAY, when[1])]


@pytest.mark.parametrize("interval", [1, 7, 14, 28, 365])
def test_still_due_after_the_interval_since_the_first_due_day(interval):
    when = given(interval + 1)
    result = due({"phq9": when, "gad7": when}, interval)
    assert result == [Due("phq9", TODAY - timedelta(days=1), when[1]), Due("gad7", TODAY - timedelta(days=1), when[1])]


def test_long_overdue_keeps_the_original_due_since():
    when = given(120)  # a severe PHQ-9 four months ago, never repeated
    (d,) = due({"phq9": when, "gad7": given(0)})
    assert d == Due("phq9", when[0] + timedelta(days=14), when[1])


def test_interval_one_administered_today_is_due_tomorrow():
    when = given(0)
    assert due({"phq9": when, "gad7": when}, 1) == []
    tomorrow = TODAY + timedelta(days=1)
    assert [d.instrument for d in due({"phq9": when, "gad7": when}, 1, today=tomorrow)] == ["phq9", "gad7"]
    assert due({"phq9": when}, 1, today=tomorrow, instruments=("phq9",))[0].due_since == tomorrow


def test_interval_365_crosses_a_leap_day():
    last_day = date(2023, 3, 1)
    last_at = datetime(2023, 3, 1, 12, tzinfo=UTC)
    last = {"phq9": (last_day, last_at), "gad7": (last_day, last_at)}
    # 2024 is a leap year: 365 days after 2023-03-01 is 2024-02-29.
    kwargs = {"interval": 365, "instruments": ("phq9",)}
    assert due(last, today=date(2024, 2, 28), **kwargs) == []
    assert due(last, today=date(2024, 2, 29), **kwargs) == [Due("phq9", date(2024, 2, 29), last_at)]
    assert due(last, today=date(2024, 3, 1), **kwargs) == [Due("phq9", date(2024, 2, 29), last_at)]


def test_uses_the_local_date_not_the_utc_timestamp():
    # Given late on the patient's local 17th, which is already the 18th in UTC: the local date counts.
    local_day = TODAY - timedelta(days=14)
    utc_at = datetime(local_day.year, local_day.month, local_day.day, 23, 30, tzinfo=UTC) + timedelta(hours=2)
    assert utc_at.date() == local_day + timedelta(days=1)
    (d,) = due({"phq9": (local_day, utc_at)}, instruments=("phq9",))
    assert d == Due("phq9", TODAY, utc_at)


# due_measures: never administered, inactive, independence --------------------------------------------


def test_never_administered_is_due_with_no_due_since():
    assert due({"phq9": None, "gad7": None}) == [Due("phq9", None, None), Due("gad7", None, None)]


def test_missing_from_the_mapping_counts_as_never_administered():
    assert due({}) == [Due("phq9", None, None), Due("gad7", None, None)]


@pytest.mark.parametrize(
    "last",
    [
        {},
        {"phq9": None, "gad7": None},
        {"phq9": given(14), "gad7": given(400)},
        {"phq9": given(0), "gad7": None},
    ],
)
def test_inactive_has_nothing_due(last):
    assert due(last, active=False) == []


@pytest.mark.parametrize("interval", [1, 14, 365])
def test_inactive_has_nothing_due_at_any_interval(interval):
    assert due({"phq9": given(interval), "gad7": None}, interval, active=False) == []


def test_instruments_are_independent():
    phq, gad = given(13), given(14)
    assert due({"phq9": phq, "gad7": gad}) == [Due("gad7", TODAY, gad[1])]
    assert due({"phq9": gad, "gad7": phq}) == [Due("phq9", TODAY, gad[1])]


def test_one_never_given_and_one_recent():
    recent = given(3)
    assert due({"phq9": recent, "gad7": None}) == [Due("gad7", None, None)]
    assert due({"phq9": None, "gad7": recent}) == [Due("phq9", None, None)]


def test_one_never_given_and_one_overdue_keep_instrument_order():
    old = given(20)
    assert due({"gad7": old, "phq9": None}) == [Due("phq9", None, None), Due("gad7", TODAY - timedelta(days=6), old[1])]


def test_instruments_parameter_selects_and_orders():
    assert due({}, instruments=("gad7", "phq9")) == [Due("gad7", None, None), Due("phq9", None, None)]
    assert due({}, instruments=("gad7",)) == [Due("gad7", None, None)]
    assert due({}, instruments=()) == []


def test_last_administration_in_the_future_is_not_due():
    assert due({"phq9": given(-3), "gad7": given(-3)}) == []


@pytest.mark.parametrize("interval", [0, -1])
def test_interval_must_be_positive(interval):
    with pytest.raises(ValueError, match="interval_days"):
        due({}, interval)


def test_due_is_frozen():
    d = Due("phq9", None, None)
    with pytest.raises(AttributeError):
        d.instrument = "gad7"  # type: ignore[misc]


# as_json ----------------------------------------------------------------------------------------------


def test_as_json_shape_and_iso_values():
    when = given(20, hour=14)
    payload = as_json(due({"phq9": when, "gad7": None}))
    assert payload == {
        "due": [
            {
                "instrument": "phq9",
                "due_since": (TODAY - timedelta(days=6)).isoformat(),
                "last_administered_at": "2026-03-11T14:00:00+00:00",
            },
            {"instrument": "gad7", "due_since": None, "last_administered_at": None},
        ]
    }
    assert payload["due"][0]["due_since"] == "2026-03-25"
    assert datetime.fromisoformat(payload["due"][0]["last_administered_at"]) == when[1]
    assert json.loads(json.dumps(payload)) == payload


def test_as_json_nothing_due():
    assert as_json([]) == {"due": []}
    assert as_json(due({}, active=False)) == {"due": []}


def test_as_json_keys_exactly():
    (item,) = as_json([Due("gad7", TODAY, datetime(2026, 3, 17, 8, tzinfo=UTC))])["due"]
    assert list(item) == ["instrument", "due_since", "last_administered_at"]
