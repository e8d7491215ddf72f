"""Small-cell suppression of the aggregates a clinic admin sees (the clinic report, its print and CSV):
a count of 1 to 4 patients is shown as "<5", so that a small cohort cannot identify a patient.

The rule, applied to a report of `reports.selectors.cohort_report` shape:
- every count of patients (the keys below, and each severity band's count) from 1 to 4 becomes "<5";
  0 is shown, since it identifies nobody;
- a rate whose numerator or denominator was suppressed becomes "<5" too (it would give the count back);
- the means of a measure paired for 1 to 4 patients become "<5", and its effect size is not given.
Counts of sessions, minutes and other activity are not counts of patients and are left alone. Pure:
plain data in, plain data out.
"""

from typing import Any

SUPPRESSED = "<5"
THRESHOLD = 5

PATIENT_COUNTS = frozenset(
    {
        "n_in_scope",
        "n_with_scores",
        "n_patients",
        "n_paired",
        "n_caseness_at_start",
        "recovered",
        "reliable_improvement",
        "reliable_deterioration",
        "reliable_recovery",
        "item9_alerts",
        "n_with_score",
        "patients",
    }
)
# rate → (numerator, denominator), as reports.outcomes.cohort_summary computes them
RATES = {
    "recovery_rate": ("recovered", "n_caseness_at_start"),
    "reliable_improvement_rate": ("reliable_improvement", "n_paired"),
    "reliable_deterioration_rate": ("reliable_deterioration", "n_paired"),
    "reliable_recovery_rate": ("reliable_recovery", "n_caseness_at_start"),
}
MEASURE_STATISTICS = ("mean_first", "mean_last", "mean_change")


def small(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < THRESHOLD


def suppress(value: Any, key: str = "") -> Any:
    """A copy of `value` with the small cells suppressed (see the module's rule)."""
    if isinstance(value, list):
        return [suppress(item, key) for item in value]
    if not isinstance(value, dict):
        return SUPPRESSED if key in PATIENT_COUNTS and small(value) else value
    result: dict[str, Any] = {}
    for name, inner in value.items():
        if name in ("severity_first", "severity_last") and isinstance(inner, dict):
            result[name] = {band: SUPPRESSED if small(n) else n for band, n in inner.items()}
        elif name in ("first", "last") and small(inner) and "label" in value:  # a severity row of `measures`
            result[name] = SUPPRESSED
        else:
            result[name] = suppress(inner, name)
    for rate, (numerator, denominator) in RATES.items():
        if rate in value and (small(value.get(numerator)) or small(value.get(denominator))):
            result[rate] = SUPPRESSED
    if small(value.get("n_paired")) and "mean_first" in value:
        for statistic in MEASURE_STATISTICS:
            result[statistic] = SUPPRESSED
        if isinstance(value.get("effect_size"), dict):
            result["effect_size"] = {**dict.fromkeys(value["effect_size"]), "n": SUPPRESSED}
    return result
