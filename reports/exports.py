"""CSV shapes of the effectiveness reports: one row per patient (the command and the caseload export)
and metric/value rows of aggregates (the clinic export). Plain data in, rows out."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

from reports.outcomes import MEASURE_KEYS, PATIENT_KEYS
from reports.selectors import ENGAGEMENT_KEYS, REPORT_INSTRUMENTS

_MEASURES = tuple(i.code for i in REPORT_INSTRUMENTS)
_PATIENT_FLAGS = tuple(k for k in PATIENT_KEYS if k not in ("player_id", *_MEASURES))
# Expected recovery (DESIGN §8), after the §5 columns; its inputs are in the JSON's `trajectory`.
_TRAJECTORY_KEYS = ("not_on_track", "not_on_track_basis")
# A cell a spreadsheet would run as a formula (CWE-1236). Only text cells are guarded: numbers such as
# a change of -6 are written as numbers.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> str | int | float:
    """None → empty, booleans → true/false, numbers and text as they are."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def safe_text(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def patient_csv_header() -> list[str]:
    return [
        "player_id",
        *(f"{m}_{k}" for m in _MEASURES for k in MEASURE_KEYS),
        *_PATIENT_FLAGS,
        *(f"{m}_{k}" for m in _MEASURES for k in _TRAJECTORY_KEYS),
    ]


def patient_csv_row(patient: dict[str, Any]) -> list[Any]:
    """One classified patient (`classify_patient`) flattened: phq9_first, …, gad7_…, then the flags. The
    player id is the one text cell from outside, so it is guarded here for every writer of these rows
    (the command as well as the web export; ids stored before the §6 id rule may start with "=")."""
    return [
        safe_text(patient["player_id"]),
        *(cell(patient[m][k]) for m in _MEASURES for k in MEASURE_KEYS),
        *(cell(patient[k]) for k in _PATIENT_FLAGS),
        *(cell(patient[m].get(k)) for m in _MEASURES for k in _TRAJECTORY_KEYS),
    ]


def caseload_csv_rows(report: dict[str, Any]) -> Iterator[list[Any]]:
    """The caseload export: every patient in scope, the classification (empty without a questionnaire
    in the period) and, in columns prefixed `engagement_`, use of the game over the period."""
    empty = [""] * (len(patient_csv_header()) - 1)
    yield [
        *patient_csv_header(),
        "questionnaire_in_period",
        *(f"engagement_{k}" for k in ENGAGEMENT_KEYS),
    ]
    for row in report["rows"]:
        outcome = row["outcome"]
        values = patient_csv_row(outcome)[1:] if outcome is not None else empty
        yield [
            safe_text(row["player_id"]),
            *values,
            cell(outcome is not None),
            *(row["engagement"][k] for k in ENGAGEMENT_KEYS),
        ]


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else key, inner)
    else:
        yield prefix, cell(value)


def aggregate_csv_rows(report: dict[str, Any]) -> Iterator[list[Any]]:
    """The clinic export: `metric,value` rows of the aggregates only (no patient appears)."""
    yield ["metric", "value"]
    for key in ("period", "n_in_scope", "n_with_scores", "cohort", "engagement"):
        yield from ([name, value] for name, value in _flatten(key, report[key]))


def csv_text(rows: Iterable[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()
