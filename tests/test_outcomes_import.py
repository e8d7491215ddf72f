"""`manage.py import_outcomes` (DESIGN §6): all-or-nothing, errors name the line and field, idempotent."""

import csv
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from reports.models import Alert, AlertKind, OutcomeResponse
from tracking.models import Patient

HEADER = ["player_id", "response_id", "instrument", "administered_at", "total", "items"]
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def write_csv(path, rows, header=HEADER):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def good_rows(n=1000):
    """n valid rows over 50 players, alternating PHQ-9 with items, GAD-7 with items and totals only."""
    rows = []
    for i in range(n):
        player = f"imp-{i % 50:02d}"
        when = (T0 + timedelta(hours=i)).isoformat()
        if i % 3 == 0:
            items = [i % 4, 1, 1, 0, 2, 1, 0, 1, 0]
            rows.append([player, f"r-{i:04d}", "phq9", when, str(sum(items)), " ".join(map(str, items))])
        elif i % 3 == 1:
            items = [1, 2, 0, 1, 1, 0, i % 4]
            rows.append([player, f"r-{i:04d}", "gad7", when, "", " ".join(map(str, items))])
        else:
            rows.append([player, f"r-{i:04d}", "phq9", when, str(i % 28), ""])
    return rows


def run(path, clinic="northside"):
    out = StringIO()
    call_command("import_outcomes", str(path), "--clinic", clinic, stdout=out)
    return out.getvalue()


def import_error(path) -> str:
    with pytest.raises(CommandError) as raised:
        run(path)
    return str(raised.value)


def test_good_file_is_stored_and_counted(clinic, tmp_path):
    out = run(write_csv(tmp_path / "good.csv", good_rows(30)))
    assert "30 created, 0 unchanged (30 rows)" in out
    assert OutcomeResponse.objects.filter(clinic=clinic).count() == 30
    assert Patient.objects.filter(clinic=clinic).count() == 30
    stored = OutcomeResponse.objects.get(response_id="r-0001")
    assert (stored.instrument, stored.total, stored.items) == ("gad7", 6, [1, 2, 0, 1, 1, 0, 1])
    assert stored.administered_at == T0 + timedelta(hours=1)
    total_only = OutcomeResponse.objects.get(response_id="r-0002")
    assert (total_only.total, total_only.items) == (2, None)


def test_thousand_rows_with_one_bad_row_in_the_middle_store_nothing_and_name_the_line(clinic, tmp_path):
    rows = good_rows(1000)
    rows[499][4] = "30"  # a PHQ-9 total above 27, on line 501 (the header is line 1)
    message = import_error(write_csv(tmp_path / "bad.csv", rows))
    assert "line 501, total:" in message
    assert "nothing was stored; 1 problem(s)" in message
    assert OutcomeResponse.objects.count() == 0
    assert Patient.objects.count() == 0
    assert Alert.objects.count() == 0


def test_same_good_file_twice_stores_each_response_once(clinic, tmp_path):
    path = write_csv(tmp_path / "good.csv", good_rows(1000))
    first = run(path)
    alerts = Alert.objects.count()
    second = run(path)
    assert "1000 created, 0 unchanged" in first
    assert "0 created, 1000 unchanged" in second
    assert OutcomeResponse.objects.count() == 1000
    assert Alert.objects.count() == alerts  # no second alert for the same answers


def test_item9_above_zero_raises_an_urgent_alert(clinic, tmp_path):
    rows = [["p-1", "r-1", "phq9", T0.isoformat(), "", "0 0 0 0 0 0 0 0 2"]]
    out = run(write_csv(tmp_path / "item9.csv", rows))
    alert = Alert.objects.get()
    assert (alert.kind, alert.severity) == (AlertKind.ITEM9, "urgent")
    assert "1 urgent alert(s)" in out


def test_a_changed_response_is_rejected_with_its_line(clinic, tmp_path):
    run(write_csv(tmp_path / "a.csv", [["p-1", "r-1", "phq9", T0.isoformat(), "12", ""]]))
    rows = [["p-1", "r-2", "phq9", T0.isoformat(), "5", ""], ["p-1", "r-1", "phq9", T0.isoformat(), "13", ""]]
    message = import_error(write_csv(tmp_path / "b.csv", rows))
    assert "line 3, response_id: Already recorded with different values" in message
    assert list(OutcomeResponse.objects.values_list("response_id", "total")) == [("r-1", 12)]


def test_import_and_api_treat_the_same_response_as_the_same(clinic, api, tmp_path):
    body = {
        "outcomes": [
            {
                "response_id": "r-1",
                "player_id": "p-1",
                "instrument": "gad7",
                "administered_at": T0.isoformat(),
                "items": [1, 1, 1, 1, 1, 1, 1],
            }
        ]
    }
    assert api.post("/api/v1/ingest", body, content_type="application/json").status_code == 201
    out = run(write_csv(tmp_path / "same.csv", [["p-1", "r-1", "gad7", T0.isoformat(), "7", "1 1 1 1 1 1 1"]]))
    assert "0 created, 1 unchanged" in out


def future() -> str:
    return (timezone.now() + timedelta(hours=1)).isoformat()


BAD_ROWS = {
    "unknown instrument": (["p-1", "r-9", "bdi2", T0.isoformat(), "10", ""], "instrument", "not a valid choice"),
    "too few items": (["p-1", "r-9", "phq9", T0.isoformat(), "", "1 1 1"], "items", "PHQ-9 has 9 items, got 3"),
    "too many items": (["p-1", "r-9", "gad7", T0.isoformat(), "", "1 1 1 1 1 1 1 1"], "items", "GAD-7 has 7 items"),
    "item out of range": (["p-1", "r-9", "gad7", T0.isoformat(), "", "1 1 1 4 1 1 1"], "items", "item 4 is 4"),
    "items not digits": (["p-1", "r-9", "gad7", T0.isoformat(), "", "1,1,1,1,1,1,1"], "items", "digits separated"),
    "total disagrees": (["p-1", "r-9", "gad7", T0.isoformat(), "8", "1 1 1 1 1 1 1"], "total", "disagrees"),
    "total not a number": (["p-1", "r-9", "gad7", T0.isoformat(), "seven", ""], "total", "not a whole number"),
    "no total, no items": (["p-1", "r-9", "gad7", T0.isoformat(), "", ""], "items", "give the item scores"),
    "naive timestamp": (["p-1", "r-9", "phq9", "2026-01-05T09:00:00", "10", ""], "administered_at", "offset"),
    "not a timestamp": (["p-1", "r-9", "phq9", "last tuesday", "10", ""], "administered_at", "ISO 8601"),
    "future timestamp": (["p-1", "r-9", "phq9", None, "10", ""], "administered_at", "in the future"),
    "empty player id": (["", "r-9", "phq9", T0.isoformat(), "10", ""], "player_id", "blank"),
    "empty response id": (["p-1", "", "phq9", T0.isoformat(), "10", ""], "response_id", "blank"),
    "extra value": (["p-1", "r-9", "phq9", T0.isoformat(), "10", "", "x"], "row", "More values"),
    "missing value": (["p-1", "r-9", "phq9", T0.isoformat(), "10"], "items", "fewer than 6 values"),
    "duplicate response id": (["p-1", "r-0001", "phq9", T0.isoformat(), "10", ""], "response_id", "Also on line 3"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_row_names_its_line_and_field(clinic, tmp_path, case):
    bad, field, reason = BAD_ROWS[case]
    if bad[3] is None:
        bad = [*bad[:3], future(), *bad[4:]]
    rows = good_rows(6)
    rows.insert(3, bad)  # line 5
    message = import_error(write_csv(tmp_path / "bad.csv", rows))
    assert f"line 5, {field}: " in message
    assert reason in message
    assert OutcomeResponse.objects.count() == 0


def test_missing_column_is_named_on_line_1(clinic, tmp_path):
    header = [c for c in HEADER if c != "administered_at"]
    message = import_error(write_csv(tmp_path / "cols.csv", [["p-1", "r-1", "phq9", "10", ""]], header=header))
    assert "line 1, administered_at: Missing column." in message


def test_unknown_column_is_named_on_line_1(clinic, tmp_path):
    message = import_error(write_csv(tmp_path / "cols.csv", [], header=[*HEADER, "notes"]))
    assert "line 1, notes: Unknown column" in message


def test_columns_may_come_in_any_order(clinic, tmp_path):
    header = list(reversed(HEADER))
    out = run(write_csv(tmp_path / "rev.csv", [["", "10", T0.isoformat(), "phq9", "r-1", "p-1"]], header=header))
    assert "1 created" in out


def test_every_bad_line_is_listed(clinic, tmp_path):
    rows = good_rows(10)
    rows[1][2] = "phq8"
    rows[7][3] = "2026-01-05 09:00"
    message = import_error(write_csv(tmp_path / "bad.csv", rows))
    assert "2 problem(s)" in message
    assert message.index("line 3, instrument") < message.index("line 9, administered_at")


def test_offsets_are_kept_as_instants(clinic, tmp_path):
    run(write_csv(tmp_path / "tz.csv", [["p-1", "r-1", "gad7", "2026-01-10T23:30:00-05:00", "9", ""]]))
    assert OutcomeResponse.objects.get().administered_at == datetime(2026, 1, 11, 4, 30, tzinfo=UTC)


def test_empty_file_and_header_only(clinic, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    assert "line 1, header: The file is empty" in import_error(tmp_path / "empty.csv")
    assert "line 1, file: The file has a header but no rows" in import_error(write_csv(tmp_path / "h.csv", []))


def test_byte_order_mark_is_accepted(clinic, tmp_path):
    path = tmp_path / "bom.csv"
    path.write_text(",".join(HEADER) + "\n" + f"p-1,r-1,phq9,{T0.isoformat()},10,\n", encoding="utf-8-sig")
    assert "1 created" in run(path)


def test_unknown_clinic_and_missing_file_fail_clearly(clinic, tmp_path):
    path = write_csv(tmp_path / "good.csv", good_rows(3))
    with pytest.raises(CommandError, match="No clinic with slug 'nowhere'"):
        run(path, clinic="nowhere")
    with pytest.raises(CommandError, match="no such file"):
        run(tmp_path / "missing.csv")
    (tmp_path / "latin1.csv").write_bytes(b"player_id,response_id\n\xe9\n")
    with pytest.raises(CommandError, match="not UTF-8"):
        run(tmp_path / "latin1.csv")


def test_patients_of_another_clinic_are_separate(clinic, other_clinic, tmp_path):
    path = write_csv(tmp_path / "good.csv", [["p-1", "r-1", "phq9", T0.isoformat(), "10", ""]])
    run(path)
    run(path, clinic=other_clinic.slug)
    assert OutcomeResponse.objects.filter(clinic=other_clinic).count() == 1
    assert Patient.objects.filter(player_id="p-1").count() == 2


# ----- poison rows (DESIGN §6: the file is held to the ingest API's rules) -------------------------

POISON_ROWS = {
    "player id with a slash": (["p/1", "r-9", "phq9", T0.isoformat(), "10", ""], "player_id", "Not a valid id"),
    "player id with a space": (["p 1", "r-9", "phq9", T0.isoformat(), "10", ""], "player_id", "Not a valid id"),
    "player id of 129 characters": (["p" * 129, "r-9", "phq9", T0.isoformat(), "10", ""], "player_id", "1–128"),
    "year 1, +05:00": (["p-1", "r-9", "phq9", "0001-01-01T00:00:00+05:00", "10", ""], "administered_at", "2000-01-01"),
    "year 1, -05:00": (["p-1", "r-9", "phq9", "0001-01-01T00:00:00-05:00", "10", ""], "administered_at", "2000-01-01"),
    "year 1999": (["p-1", "r-9", "phq9", "1999-12-31T23:59:59+00:00", "10", ""], "administered_at", "2000-01-01"),
    "year 9999": (["p-1", "r-9", "phq9", "9999-12-31T23:59:59-05:00", "10", ""], "administered_at", "in the future"),
    "NUL in the player id": (["p\x001", "r-9", "phq9", T0.isoformat(), "10", ""], "player_id", "NUL"),
    "NUL in the instrument": (["p-1", "r-9", "phq\x009", T0.isoformat(), "10", ""], "instrument", "NUL"),
    "NUL in the items": (["p-1", "r-9", "gad7", T0.isoformat(), "", "1 1 1\x00 1 1 1 1"], "items", "NUL"),
    "a huge total": (["p-1", "r-9", "phq9", T0.isoformat(), str(2**31), ""], "total", "total must be 0–27"),
}


@pytest.mark.parametrize("case", list(POISON_ROWS))
def test_poison_row_names_its_line_and_field_and_stores_nothing(clinic, tmp_path, case):
    bad, field, reason = POISON_ROWS[case]
    rows = good_rows(6)
    rows.insert(3, bad)  # line 5
    message = import_error(write_csv(tmp_path / "bad.csv", rows))
    assert f"line 5, {field}: " in message, message
    assert reason in message, message
    assert "1 problem(s)" in message, message
    assert (OutcomeResponse.objects.count(), Patient.objects.count(), Alert.objects.count()) == (0, 0, 0)


def test_an_id_with_a_newline_is_refused_on_the_line_its_row_ends(clinic, tmp_path):
    rows = good_rows(6)
    rows.insert(3, ["p-1", "r\n9", "phq9", T0.isoformat(), "10", ""])  # quoted: lines 5 and 6
    message = import_error(write_csv(tmp_path / "bad.csv", rows))
    assert "line 6, response_id: Not a valid id" in message, message
    assert OutcomeResponse.objects.count() == 0


@pytest.mark.parametrize(
    "player_id, administered_at",
    [("p" * 128, T0.isoformat()), ("Az09._:@-x", "2000-01-01T00:00:00Z"), ("p-1", "1999-12-31T19:00:00-05:00")],
    ids=["128-character id", "every allowed character, first instant of 2000", "2000 in UTC, 1999 locally"],
)
def test_the_edges_of_the_rules_are_accepted(clinic, tmp_path, player_id, administered_at):
    out = run(write_csv(tmp_path / "edge.csv", [[player_id, "r-1", "phq9", administered_at, "10", ""]]))
    assert "1 created" in out
    assert OutcomeResponse.objects.get().patient.player_id == player_id


def test_a_value_beyond_the_csv_field_limit_is_reported_with_its_line(clinic, tmp_path):
    rows = good_rows(3)
    rows.insert(1, ["p-1", "r-9", "phq9", T0.isoformat(), "10", "1" * 200_000])  # line 3
    message = import_error(write_csv(tmp_path / "huge.csv", rows))
    assert "line 3, row: Not readable as CSV" in message, message
    assert OutcomeResponse.objects.count() == 0
