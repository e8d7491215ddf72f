"""Clinical outcome measurement (DESIGN.md §5) as pure functions.

Plain data in, plain data out: no Django, no ORM, no clock, no I/O. The thresholds (bands, caseness,
reliable change, the risk item) live on the instruments in `reports.instruments`; nothing here repeats
them. The dictionaries returned have the exact shape of the `effectiveness_report` JSON (DESIGN.md §6)
and contain only JSON-friendly values (str, int, float, bool, None, dict).

Sources: PHQ-9 — Kroenke, Spitzer & Williams (2001); GAD-7 — Spitzer, Kroenke, Williams & Löwe (2006);
caseness, reliable change, recovery — NHS Talking Therapies manual; reliable change index — Jacobson &
Truax (1991). See docs/outcomes.md for what the numbers mean and what they do not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reports.instruments import GAD7, PHQ9, Instrument, get_instrument, score_errors

__all__ = [
    "MEASURE_KEYS",
    "PATIENT_KEYS",
    "RCI_CRITICAL_VALUE",
    "ROUND_DIGITS",
    "RCIResult",
    "Score",
    "classify_measure",
    "classify_patient",
    "cohort_summary",
    "deterioration_crossing",
    "effect_size_dz",
    "reliable_change_direction",
    "reliable_change_index",
]

# Keys of one measure's classification and of one patient's, in the order of DESIGN.md §6.
MEASURE_KEYS = (
    "first",
    "last",
    "severity_first",
    "severity_last",
    "paired",
    "change",
    "reliable_improvement",
    "reliable_deterioration",
    "at_caseness_first",
    "at_caseness_last",
)
PATIENT_KEYS = (
    "player_id",
    "phq9",
    "gad7",
    "caseness_at_start",
    "recovery",
    "reliable_improvement",
    "reliable_deterioration",
    "reliable_recovery",
    "item9_alert",
)

# Cohort rates, means, SDs and effect sizes are rounded to this many decimals so reports are stable
# and JSON-friendly; counts are exact integers.
ROUND_DIGITS = 4

# Two-tailed 5% critical value of the standard normal distribution (Jacobson & Truax 1991; also the
# multiplier of the 95% confidence interval of the effect size).
RCI_CRITICAL_VALUE = 1.96


@dataclass(frozen=True)
class Score:
    """One administration of a questionnaire: its total and, when known, its item scores."""

    instrument: str  # "phq9" | "gad7"
    administered_at: datetime
    total: int
    items: tuple[int, ...] | None = None
    response_id: str = ""

    def __post_init__(self) -> None:
        # Accept a list (as the models and the JSON give it) but keep the dataclass hashable.
        if self.items is not None and not isinstance(self.items, tuple):
            object.__setattr__(self, "items", tuple(self.items))


def administration_order(score: Score) -> tuple[datetime, str, int]:
    # Administration time first; equal times are ordered by response_id, then total, so the choice of
    # first and last never depends on the order the scores arrive in.
    return (score.administered_at, score.response_id, score.total)


def _validated(instrument: Instrument, scores: Iterable[Score]) -> list[Score]:
    """The scores of `instrument`, oldest first; ValueError naming the response for anything invalid."""
    result = []
    for score in scores:
        label = f"response {score.response_id!r}" if score.response_id else "a response"
        if score.instrument != instrument.code:
            raise ValueError(f"{label} is {score.instrument!r}, not {instrument.code!r}")
        if score.administered_at.tzinfo is None or score.administered_at.utcoffset() is None:
            raise ValueError(f"{label}: administered_at must be timezone-aware")
        errors = score_errors(instrument, list(score.items) if score.items is not None else None, score.total)
        if errors:
            details = "; ".join(f"{field}: {reason}" for field, reason in errors.items())
            raise ValueError(f"{label}: {details}")
        result.append(score)
    result.sort(key=administration_order)
    return result


def _empty_measure() -> dict[str, Any]:
    measure: dict[str, Any] = dict.fromkeys(MEASURE_KEYS)
    measure["paired"] = False
    return measure


def classify_measure(instrument: Instrument, scores: Iterable[Score]) -> dict[str, Any]:
    """One measure of one patient, per DESIGN.md §5.

    `first` / `last` are the totals with the earliest / latest `administered_at`, whatever the input
    order; equal times are broken by `response_id`, then by total (deterministic). `change` = last − first,
    so a negative change is an improvement: `reliable_improvement` when the score went down by at least
    the instrument's `reliable_change`, `reliable_deterioration` when it went up by at least as much.
    With one score first = last, `paired` is False and `change` and both reliable flags are None; with
    no score every field is None and `paired` is False. Invalid scores raise ValueError.
    """
    ordered = _validated(instrument, scores)
    if not ordered:
        return _empty_measure()
    first, last = ordered[0].total, ordered[-1].total
    paired = len(ordered) >= 2
    change = last - first if paired else None
    direction = reliable_change_direction(instrument, change)
    return {
        "first": first,
        "last": last,
        "severity_first": instrument.band(first),
        "severity_last": instrument.band(last),
        "paired": paired,
        "change": change,
        "reliable_improvement": None if change is None else direction == "improvement",
        "reliable_deterioration": None if change is None else direction == "deterioration",
        "at_caseness_first": instrument.at_caseness(first),
        "at_caseness_last": instrument.at_caseness(last),
    }


def reliable_change_direction(instrument: Instrument, change: int | None) -> str | None:
    """ "improvement", "deterioration" or None for a change from the FIRST score (the NHS Talking Therapies
    definition, used by the caseload, the charts and the alerts alike): reliable when it reaches the
    instrument's `reliable_change` in either direction. None for no change yet (one score)."""
    if change is None:
        return None
    if change <= -instrument.reliable_change:
        return "improvement"
    if change >= instrument.reliable_change:
        return "deterioration"
    return None


def deterioration_crossing(instrument: Instrument, scores: Iterable[Score]) -> Score | None:
    """The administration at which the measure became reliably worse than the first score, when it is so
    now (its latest score): the first of the run of latest scores that are all reliably worse. None when
    the latest score is not a reliable deterioration (or there is only one score)."""
    ordered = _validated(instrument, scores)
    if len(ordered) < 2:
        return None
    first = ordered[0].total
    crossing = None
    for score in ordered[1:]:
        worse = reliable_change_direction(instrument, score.total - first) == "deterioration"
        crossing = (crossing or score) if worse else None
    return crossing


def _has_risk_answer(instrument: Instrument, scores: Iterable[Score]) -> bool:
    """Any answer above 0 on the instrument's risk item (PHQ-9 item 9) among the responses we have."""
    if instrument.risk_item is None:
        return False
    index = instrument.risk_item - 1
    return any(s.items is not None and len(s.items) > index and s.items[index] > 0 for s in scores)


def classify_patient(player_id: str, scores: Iterable[Score]) -> dict[str, Any]:
    """The §5 classification of one patient (one element of the effectiveness report's `patients`).

    - `caseness_at_start`: first PHQ-9 ≥ caseness or first GAD-7 ≥ caseness; None if either measure has
      no score at all.
    - `reliable_improvement`: at least one measure improved reliably and neither deteriorated reliably;
      `reliable_deterioration` the mirror, so a mixed change gives both False.
    - `recovery`: at caseness at start and, at the end, below caseness on both measures; None when not at
      caseness at start. `reliable_recovery` = recovery and reliable improvement, None when recovery is.
    - recovery and the three reliable outcomes are None unless BOTH measures are paired.
    - `item9_alert`: True when any PHQ-9 response (not only first or last) has item 9 > 0; False
      otherwise. False only means no such answer among the responses we have (many have no item
      scores): it is not evidence of safety.
    """
    scores = list(scores)
    for score in scores:
        get_instrument(score.instrument)  # ValueError for an unknown instrument
    phq9_scores = [s for s in scores if s.instrument == PHQ9.code]
    gad7_scores = [s for s in scores if s.instrument == GAD7.code]
    phq9 = classify_measure(PHQ9, phq9_scores)
    gad7 = classify_measure(GAD7, gad7_scores)

    caseness_at_start: bool | None = None
    if phq9["first"] is not None and gad7["first"] is not None:
        caseness_at_start = phq9["at_caseness_first"] or gad7["at_caseness_first"]

    recovery = reliable_improvement = reliable_deterioration = reliable_recovery = None
    if phq9["paired"] and gad7["paired"]:
        any_improved = phq9["reliable_improvement"] or gad7["reliable_improvement"]
        any_deteriorated = phq9["reliable_deterioration"] or gad7["reliable_deterioration"]
        reliable_improvement = any_improved and not any_deteriorated
        reliable_deterioration = any_deteriorated and not any_improved
        if caseness_at_start:
            recovery = not phq9["at_caseness_last"] and not gad7["at_caseness_last"]
            reliable_recovery = recovery and reliable_improvement

    return {
        "player_id": player_id,
        "phq9": phq9,
        "gad7": gad7,
        "caseness_at_start": caseness_at_start,
        "recovery": recovery,
        "reliable_improvement": reliable_improvement,
        "reliable_deterioration": reliable_deterioration,
        "reliable_recovery": reliable_recovery,
        "item9_alert": _has_risk_answer(PHQ9, phq9_scores),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, ROUND_DIGITS)


def _rate(count: int, denominator: int) -> float | None:
    return _round(count / denominator) if denominator else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def effect_size_dz(changes: Sequence[float]) -> dict[str, Any]:
    """Pre–post standardised mean change (Cohen's d_z) with its 95% confidence interval.

    d_z = mean(change) / SD(change), SD with n − 1 in the denominator; change = last − first, so a
    negative d_z is an improvement. SE = √(1/n + d_z² / (2n)) (normal approximation), CI = d_z ± 1.96·SE.
    Every value is None when n < 2 or the SD is 0. Values are rounded to ROUND_DIGITS decimals.
    """
    n = len(changes)
    result: dict[str, Any] = {"n": n, "sd_change": None, "d_z": None, "ci95_low": None, "ci95_high": None}
    if n < 2:
        return result
    mean = sum(changes) / n
    sd = math.sqrt(sum((c - mean) ** 2 for c in changes) / (n - 1))
    result["sd_change"] = _round(sd)
    if sd == 0:
        return result
    d = mean / sd
    se = math.sqrt(1 / n + d * d / (2 * n))
    result.update(
        d_z=_round(d),
        ci95_low=_round(d - RCI_CRITICAL_VALUE * se),
        ci95_high=_round(d + RCI_CRITICAL_VALUE * se),
    )
    return result


def _measure_summary(
    instrument: Instrument, patients: Sequence[Mapping[str, Any]], n_responses: int | None
) -> dict[str, Any]:
    measures = [p[instrument.code] for p in patients]
    paired = [m for m in measures if m["paired"]]
    changes = [m["change"] for m in paired]
    band_names = [band.name for band in instrument.bands]
    severity_first = dict.fromkeys(band_names, 0)
    severity_last = dict.fromkeys(band_names, 0)
    for m in paired:
        severity_first[m["severity_first"]] += 1
        severity_last[m["severity_last"]] += 1
    return {
        "n_with_score": sum(1 for m in measures if m["first"] is not None),
        "n_paired": len(paired),
        "n_responses": n_responses,
        "mean_first": _round(_mean([m["first"] for m in paired])),
        "mean_last": _round(_mean([m["last"] for m in paired])),
        "mean_change": _round(_mean(changes)),
        "effect_size": effect_size_dz(changes),
        "severity_first": severity_first,
        "severity_last": severity_last,
    }


def cohort_summary(
    patients: Sequence[Mapping[str, Any]],
    all_scores_by_player: Mapping[str, Sequence[Score]] | None = None,
) -> dict[str, Any]:
    """The §5 cohort counts and rates over patients classified by `classify_patient`.

    Denominators: `n_paired` = patients with both measures paired (reliable improvement and
    deterioration rates); `n_caseness_at_start` = of those, the ones at caseness at start (recovery and
    reliable recovery rates). A rate is None when its denominator is 0. Per measure, means, the change and
    the severity distributions (every band present, first and last) are over the patients paired on that
    measure; `n_with_score` counts patients with at least one score. When `all_scores_by_player` is given,
    each measure also reports `n_responses`, the number of responses of the cohort's patients (None
    otherwise). Rates, means and effect sizes are rounded to ROUND_DIGITS decimals.
    """
    both_paired = [p for p in patients if p["phq9"]["paired"] and p["gad7"]["paired"]]
    at_caseness = [p for p in both_paired if p["caseness_at_start"]]
    recovered = sum(1 for p in at_caseness if p["recovery"])
    improved = sum(1 for p in both_paired if p["reliable_improvement"])
    deteriorated = sum(1 for p in both_paired if p["reliable_deterioration"])
    reliably_recovered = sum(1 for p in at_caseness if p["reliable_recovery"])

    n_responses: dict[str, int | None] = {PHQ9.code: None, GAD7.code: None}
    if all_scores_by_player is not None:
        cohort_ids = {p["player_id"] for p in patients}
        for code in n_responses:
            n_responses[code] = sum(
                1
                for player_id, scores in all_scores_by_player.items()
                if player_id in cohort_ids
                for s in scores
                if s.instrument == code
            )

    return {
        "n_patients": len(patients),
        "n_paired": len(both_paired),
        "n_caseness_at_start": len(at_caseness),
        "recovered": recovered,
        "recovery_rate": _rate(recovered, len(at_caseness)),
        "reliable_improvement": improved,
        "reliable_improvement_rate": _rate(improved, len(both_paired)),
        "reliable_deterioration": deteriorated,
        "reliable_deterioration_rate": _rate(deteriorated, len(both_paired)),
        "reliable_recovery": reliably_recovered,
        "reliable_recovery_rate": _rate(reliably_recovered, len(at_caseness)),
        "item9_alerts": sum(1 for p in patients if p["item9_alert"]),
        PHQ9.code: _measure_summary(PHQ9, patients, n_responses[PHQ9.code]),
        GAD7.code: _measure_summary(GAD7, patients, n_responses[GAD7.code]),
    }


@dataclass(frozen=True)
class RCIResult:
    s_diff: float  # standard error of the difference between two scores
    rc: float  # the reliable change index, (x2 − x1) / s_diff
    reliable: bool  # |rc| > 1.96


def reliable_change_index(x1: float, x2: float, sd: float, reliability: float) -> RCIResult:
    """Jacobson & Truax (1991): S_diff = SD·√2·√(1 − r), RC = (x2 − x1) / S_diff, reliable when |RC| > 1.96.

    `sd` is the standard deviation of the measure in a reference (pre-treatment) population and
    `reliability` its test–retest (or internal-consistency) reliability r. ValueError when sd ≤ 0 or r
    is outside [0, 1). The sign of RC follows x2 − x1, so on PHQ-9/GAD-7-like scales a negative RC is an
    improvement.
    """
    if not sd > 0 or math.isinf(sd):
        raise ValueError(f"sd must be a positive number, got {sd}")
    if not 0 <= reliability < 1:
        raise ValueError(f"reliability must be in [0, 1), got {reliability}")
    s_diff = sd * math.sqrt(2) * math.sqrt(1 - reliability)
    rc = (x2 - x1) / s_diff
    return RCIResult(s_diff=s_diff, rc=rc, reliable=abs(rc) > RCI_CRITICAL_VALUE)
