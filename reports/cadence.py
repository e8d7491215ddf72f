"""Measurement cadence (DESIGN §8): which questionnaires are due for a patient, and since when. Pure.

Every day here is a patient's local calendar date; the caller converts (this module knows no clock and no
time zone) and passes `today` and the data in.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

DEFAULT_INTERVAL_DAYS = 14
ACTIVE_WINDOW_DAYS = 30  # today and the 29 days before
DEFAULT_INSTRUMENTS: tuple[str, ...] = ("phq9", "gad7")

# instrument code -> (local date of the last administration, its aware timestamp), or None if never given.
LastAdministered = Mapping[str, tuple[date, datetime] | None]


@dataclass(frozen=True)
class Due:
    instrument: str
    due_since: date | None  # last administration's local date + the interval; None if never administered
    last_administered_at: datetime | None


def is_active(session_days: Iterable[date], today: date) -> bool:
    """True when a session started on one of the 30 local days ending today (today and the 29 before)."""
    first = today - timedelta(days=ACTIVE_WINDOW_DAYS - 1)
    return any(first <= day <= today for day in session_days)


def due_since(last_local_date: date, interval_days: int) -> date:
    """The day a measure last given on `last_local_date` falls due again."""
    return last_local_date + timedelta(days=interval_days)


def due_measures(
    *,
    today: date,
    interval_days: int,
    active: bool,
    last_administered: LastAdministered,
    instruments: Sequence[str] = DEFAULT_INSTRUMENTS,
) -> list[Due]:
    """The measures due today, in `instruments` order; only those that are due.

    Inactive patients have nothing due. For an active patient a measure is due when it was never
    administered (an instrument missing from `last_administered` counts as never administered), or when
    today ≥ the local date of its last administration + `interval_days`.
    """
    if interval_days < 1:
        raise ValueError(f"interval_days must be at least 1, got {interval_days}")
    if not active:
        return []
    due: list[Due] = []
    for code in instruments:
        last = last_administered.get(code)
        if last is None:
            due.append(Due(code, None, None))
            continue
        last_date, last_at = last
        since = due_since(last_date, interval_days)
        if today >= since:
            due.append(Due(code, since, last_at))
    return due


def as_json(due: Iterable[Due]) -> dict[str, list[dict[str, Any]]]:
    """The `measures-due` answer: `{"due": [{"instrument", "due_since", "last_administered_at"}]}`."""
    return {
        "due": [
            {
                "instrument": d.instrument,
                "due_since": d.due_since.isoformat() if d.due_since is not None else None,
                "last_administered_at": d.last_administered_at.isoformat() if d.last_administered_at else None,
            }
            for d in due
        ]
    }
