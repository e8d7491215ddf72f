"""Reading a CSV file of questionnaire responses (`manage.py import_outcomes`, DESIGN §6).

Each row is validated exactly as the ingest API validates an outcome (its compiled schema, with
`OutcomeInSerializer` wording the errors: ids of the §6 pattern, known instrument, timestamps with an
offset from 2000-01-01 to not in the future, item count and ranges, a total that agrees with the items),
so a file and an API batch accept and reject the same things. Errors name the line of the file (the
header is line 1) and the field.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass

from tracking.ingest import OutcomeInSerializer, schema_validate
from tracking.validators import text_error

COLUMNS = ("player_id", "response_id", "instrument", "administered_at", "total", "items")
_WHOLE_NUMBER = re.compile(r"^[0-9]+$")


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}, {self.field}: {self.reason}"


class ImportInvalid(Exception):
    """The file has at least one bad line; nothing of it was stored."""

    def __init__(self, errors: list[RowError]):
        super().__init__(f"{len(errors)} problem(s)")
        self.errors = sorted(errors, key=lambda e: (e.line, e.field))


def _whole_number(text: str) -> int | None:
    return int(text) if _WHOLE_NUMBER.match(text) else None


def _row_to_item(row: dict[str, str], line: int) -> tuple[dict | None, list[RowError]]:
    """One CSV row → the validated item `outcomes_ingest` takes (with `_index` = the line), or errors."""
    # A NUL in any cell is named as such (the csv module reads it as an ordinary character).
    errors = [RowError(line, name, reason) for name in COLUMNS if (reason := text_error(row[name]))]
    if errors:
        return None, errors
    total_text = row["total"].strip()
    total = None
    if total_text:
        total = _whole_number(total_text)
        if total is None:
            errors.append(RowError(line, "total", f"{total_text!r} is not a whole number."))
    items_text = row["items"].strip()
    items = None
    if items_text:
        parts = items_text.split()
        if not all(_WHOLE_NUMBER.match(p) for p in parts):
            errors.append(RowError(line, "items", "Expected item scores as digits separated by spaces, e.g. 1 2 0 3."))
        else:
            items = [int(p) for p in parts]
    if errors:
        return None, errors
    data = {
        "player_id": row["player_id"],
        "response_id": row["response_id"],
        "instrument": row["instrument"].strip(),
        "administered_at": row["administered_at"].strip(),
        "total": total,
        "items": items,
    }
    if (item := schema_validate("outcomes", data)) is not None:
        return dict(item, _index=line), []
    serializer = OutcomeInSerializer(data=data)  # words the errors of a row the schema refused
    if not serializer.is_valid():
        return None, [RowError(line, field, reason) for field, reason in _messages(serializer.errors)]
    return dict(serializer.validated_data, _index=line), []


def _messages(detail) -> list[tuple[str, str]]:
    out = []
    for field, messages in detail.items():
        field = "items" if field == "non_field_errors" else field
        if isinstance(messages, dict):
            out += [(field, str(m)) for inner in messages.values() for m in inner]
        elif isinstance(messages, list | tuple):
            out += [(field, str(m)) for m in messages]
        else:
            out.append((field, str(messages)))
    return out


def outcome_rows_parse(lines: Iterable[str]) -> list[dict]:
    """Validated items from the lines of a CSV file; ImportInvalid listing every bad line otherwise."""
    reader = csv.DictReader(lines)
    try:
        header = [name.strip() for name in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise ImportInvalid([RowError(1, "header", f"Not readable as CSV: {exc}.")]) from None
    if not header:
        raise ImportInvalid([RowError(1, "header", f"The file is empty; expected the columns {', '.join(COLUMNS)}.")])
    errors = [RowError(1, name, "Missing column.") for name in COLUMNS if name not in header]
    errors += [
        RowError(1, name, f"Unknown column; expected {', '.join(COLUMNS)}.") for name in header if name not in COLUMNS
    ]
    errors += [
        RowError(1, name, "Column appears twice.") for name in sorted({n for n in header if header.count(n) > 1})
    ]
    if errors:
        raise ImportInvalid(errors)
    reader.fieldnames = header

    items: list[dict] = []
    first_line_of: dict[str, int] = {}
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a value longer than the csv module's field limit
            # (the DictReader's own line_num is only updated after a row was read)
            errors.append(RowError(reader.reader.line_num, "row", f"Not readable as CSV: {exc}."))
            break
        line = reader.line_num
        if None in row:
            errors.append(RowError(line, "row", f"More values than the {len(COLUMNS)} columns."))
            continue
        missing = [name for name in COLUMNS if row[name] is None]
        if missing:
            errors.append(RowError(line, missing[0], f"Missing value: the row has fewer than {len(COLUMNS)} values."))
            continue
        item, row_errors = _row_to_item(row, line)
        if row_errors:
            errors += row_errors
            continue
        response_id = item["response_id"]
        if response_id in first_line_of:
            errors.append(
                RowError(
                    line, "response_id", f"Also on line {first_line_of[response_id]}: each response once per file."
                )
            )
            continue
        first_line_of[response_id] = line
        items.append(item)
    if errors:
        raise ImportInvalid(errors)
    if not items:
        raise ImportInvalid([RowError(1, "file", "The file has a header but no rows.")])
    return items
