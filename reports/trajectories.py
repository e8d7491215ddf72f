"""Expected recovery (DESIGN §8): the clinic's reference trajectories and the not-on-track signal. Pure.

Plain data in, plain data out: no Django, no ORM, no clock, no I/O. Days are the patient's LOCAL calendar
dates (the caller converts `administered_at` to the patient's time zone, e.g. with `patient_scores`).

- Week w of a score = floor((its local date − the local date of the patient's first score on that
  instrument) / 7).
- The reference group: the clinic's patients whose first score on the instrument was at caseness (the
  judged patient included). Each of their scores is placed at its week; of several in one week only the
  latest is kept. At week w, the reference of an intake band (the band of the first score) is the list of
  kept scores in weeks w−1, w and w+1 of the group's patients with that intake band (a patient can
  contribute up to three scores). It exists only when those scores come from ≥ 10 distinct patients; its
  quartiles are `statistics.quantiles(scores, n=4, method="inclusive")`.
- Not on track: null without a score, when the first score was not at caseness, or when the latest score is
  before week 3. With a reference at the latest score's week: latest > its 75th percentile
  ("clinic_reference"). Otherwise: latest week ≥ 6, latest at caseness, and the change from the first score
  not a reliable improvement ("no_reliable_improvement").

Thresholds (bands, caseness, reliable change) live on the instruments; reliable change is
`reports.outcomes.reliable_change_direction`. Sources: OQ-style expected-treatment-response feedback
(Lambert et al.; Delgadillo et al.). It is a signal to review, not a prediction.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from reports.instruments import Instrument
from reports.outcomes import Score, administration_order, reliable_change_direction

__all__ = [
    "BASIS_CLINIC_REFERENCE",
    "BASIS_NO_RELIABLE_IMPROVEMENT",
    "FIRST_JUDGED_WEEK",
    "MIN_REFERENCE_PATIENTS",
    "NO_REFERENCE_WEEK",
    "PatientScores",
    "Reference",
    "Result",
    "WeekReference",
    "band_series",
    "build_reference",
    "not_on_track",
    "patient_scores",
    "week_of",
]

# A reference at week w exists only with scores from at least this many distinct patients.
MIN_REFERENCE_PATIENTS = 10
# No judgement before this week (the latest score's week).
FIRST_JUDGED_WEEK = 3
# Without a reference, the no-reliable-improvement rule applies from this week.
NO_REFERENCE_WEEK = 6
# Weeks w−1, w, w+1 make the reference at w.
WINDOW = 1

BASIS_CLINIC_REFERENCE = "clinic_reference"
BASIS_NO_RELIABLE_IMPROVEMENT = "no_reliable_improvement"


@dataclass(frozen=True)
class PatientScores:
    """One patient's scores on one instrument: (local date, total) pairs.

    Give them in administration order: they are sorted by date (stably), so scores on the same local date
    keep the given order and the last of them is the latest.
    """

    key: str
    scores: tuple[tuple[date, int], ...]

    def __init__(self, key: str, scores: Iterable[tuple[date, int]]) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "scores", tuple((d, int(s)) for d, s in scores))


def patient_scores(key: str, scores: Iterable[Score], local_date: Callable[[datetime], date]) -> PatientScores:
    """A PatientScores from `reports.outcomes.Score`s of one instrument, ordered as §5 orders them
    (administration time, then response id, then total); `local_date` gives the patient's local date."""
    ordered = sorted(scores, key=administration_order)
    return PatientScores(key, [(local_date(s.administered_at), s.total) for s in ordered])


def week_of(score_date: date, first_date: date) -> int:
    """floor((score date − first score date) / 7), in days of the local calendar."""
    return (score_date - first_date).days // 7


def _ordered(scores: Iterable[tuple[date, int]]) -> list[tuple[date, int]]:
    return sorted(scores, key=lambda pair: pair[0])  # stable: same-date ties keep the given order


def _validated(instrument: Instrument, pairs: Sequence[tuple[date, int]]) -> None:
    for _, total in pairs:
        instrument.band(total)  # ValueError outside the instrument's range


@dataclass(frozen=True)
class WeekReference:
    """The reference of one intake band at one week."""

    week: int
    n_patients: int
    n_scores: int
    p25: float
    p50: float
    p75: float

    def to_json(self) -> dict[str, Any]:
        return {
            "n_patients": self.n_patients,
            "n_scores": self.n_scores,
            "p25": self.p25,
            "p50": self.p50,
            "p75": self.p75,
        }


@dataclass(frozen=True)
class Reference:
    """A clinic's reference for one instrument: {intake band: {week: WeekReference}}, only the weeks where a
    reference exists. `to_json()` / `from_json()` round-trip it through JSON-friendly plain data."""

    instrument: str
    bands: Mapping[str, Mapping[int, WeekReference]] = field(default_factory=dict)

    def at(self, intake_band: str, week: int) -> WeekReference | None:
        return self.bands.get(intake_band, {}).get(week)

    def to_json(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "bands": {
                band: {str(week): ref.to_json() for week, ref in sorted(weeks.items())}
                for band, weeks in sorted(self.bands.items())
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reference:
        bands: dict[str, dict[int, WeekReference]] = {}
        for band, weeks in data.get("bands", {}).items():
            bands[band] = {
                int(week): WeekReference(
                    week=int(week),
                    n_patients=int(ref["n_patients"]),
                    n_scores=int(ref["n_scores"]),
                    p25=float(ref["p25"]),
                    p50=float(ref["p50"]),
                    p75=float(ref["p75"]),
                )
                for week, ref in weeks.items()
            }
        return cls(instrument=str(data["instrument"]), bands=bands)


def _kept_by_week(pairs: Sequence[tuple[date, int]]) -> dict[int, int]:
    """{week: the latest score of that week}; `pairs` ordered oldest first."""
    first_date = pairs[0][0]
    kept: dict[int, int] = {}
    for score_date, total in pairs:
        kept[week_of(score_date, first_date)] = total  # later ones overwrite earlier ones
    return kept


def build_reference(patients: Iterable[PatientScores], instrument: Instrument) -> Reference:
    """The clinic's reference for `instrument` (DESIGN §8) from every patient's scores on it.

    Patients without a score, or whose first score was below caseness, are not in the group. A patient key
    given twice is a ValueError, as is a total outside the instrument's range.
    """
    # {intake band: {week: {patient key: kept score}}}
    by_band: dict[str, dict[int, dict[str, int]]] = {}
    seen: set[str] = set()
    for patient in patients:
        if patient.key in seen:
            raise ValueError(f"patient {patient.key!r} given twice")
        seen.add(patient.key)
        pairs = _ordered(patient.scores)
        _validated(instrument, pairs)
        if not pairs or not instrument.at_caseness(pairs[0][1]):
            continue
        weeks = by_band.setdefault(instrument.band(pairs[0][1]), {})
        for week, total in _kept_by_week(pairs).items():
            weeks.setdefault(week, {})[patient.key] = total

    bands: dict[str, dict[int, WeekReference]] = {}
    for band, weeks in by_band.items():
        refs: dict[int, WeekReference] = {}
        for week in range(0, max(weeks) + WINDOW + 1):
            scores: list[int] = []
            contributors: set[str] = set()
            for w in range(week - WINDOW, week + WINDOW + 1):
                for key, total in weeks.get(w, {}).items():
                    scores.append(total)
                    contributors.add(key)
            if len(contributors) < MIN_REFERENCE_PATIENTS:
                continue
            p25, p50, p75 = statistics.quantiles(scores, n=4, method="inclusive")
            refs[week] = WeekReference(week, len(contributors), len(scores), p25, p50, p75)
        if refs:
            bands[band] = refs
    return Reference(instrument=instrument.code, bands=bands)


@dataclass(frozen=True)
class Result:
    """The not-on-track result of one measure with its basis and inputs.

    `week`, `latest` and `intake_band` (the band of the first score, naming the reference band the chart
    draws) are given whenever there is a score, even when the result is null; the reference's counts and
    percentiles are None without a reference at the latest score's week.
    """

    not_on_track: bool | None
    basis: str | None
    week: int | None = None
    latest: int | None = None
    n_patients: int | None = None
    n_scores: int | None = None
    p25: float | None = None
    p50: float | None = None
    p75: float | None = None
    intake_band: str | None = None

    def inputs(self) -> dict[str, Any]:
        """The stated inputs (the API's `trajectory`)."""
        return {
            "week": self.week,
            "latest": self.latest,
            "n_patients": self.n_patients,
            "n_scores": self.n_scores,
            "p25": self.p25,
            "p50": self.p50,
            "p75": self.p75,
        }


def not_on_track(
    scores_of_patient: PatientScores | Iterable[tuple[date, int]], reference: Reference, instrument: Instrument
) -> Result:
    """Whether the patient's measure is not on track (DESIGN §8), with its basis and inputs."""
    if reference.instrument != instrument.code:
        raise ValueError(f"the reference is for {reference.instrument!r}, not {instrument.code!r}")
    raw = scores_of_patient.scores if isinstance(scores_of_patient, PatientScores) else scores_of_patient
    pairs = _ordered(raw)
    _validated(instrument, pairs)
    if not pairs:
        return Result(None, None)
    (first_date, first), (latest_date, latest) = pairs[0], pairs[-1]
    week = week_of(latest_date, first_date)
    intake_band = instrument.band(first)
    if not instrument.at_caseness(first) or week < FIRST_JUDGED_WEEK:
        return Result(None, None, week=week, latest=latest, intake_band=intake_band)
    ref = reference.at(intake_band, week)
    if ref is not None:
        return Result(
            latest > ref.p75,
            BASIS_CLINIC_REFERENCE,
            week=week,
            latest=latest,
            n_patients=ref.n_patients,
            n_scores=ref.n_scores,
            p25=ref.p25,
            p50=ref.p50,
            p75=ref.p75,
            intake_band=intake_band,
        )
    flagged = (
        week >= NO_REFERENCE_WEEK
        and instrument.at_caseness(latest)
        and reliable_change_direction(instrument, latest - first) != "improvement"
    )
    return Result(flagged, BASIS_NO_RELIABLE_IMPROVEMENT, week=week, latest=latest, intake_band=intake_band)


def band_series(reference: Reference, intake_band: str, weeks: Iterable[int]) -> list[tuple[int, float, float, float]]:
    """(week, p25, p50, p75) for each of `weeks` where the band has a reference (others are left out), for
    the outcome chart's 25th–75th band and median."""
    series = []
    for week in weeks:
        ref = reference.at(intake_band, week)
        if ref is not None:
            series.append((week, ref.p25, ref.p50, ref.p75))
    return series
