"""What an identifier, a timestamp or a piece of text from outside may look like (DESIGN §6).

Pure: no ORM, no clock. The ingest API, the CSV import and the pages' forms all check with these, so the
game, a file and a person are held to the same rules, and nothing that reaches a URL, an e-mail header or
a PostgreSQL text column can break it.
"""

import re
from datetime import UTC, datetime

# A player id and every external id (session, marker, response, alert). No "/" (it would break the
# URLs that carry the id), no whitespace or control characters (e-mail headers, logs), at most 128.
EXTERNAL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
_EXTERNAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")  # used with fullmatch: "$" admits a final \n
EXTERNAL_ID_RULE = "1–128 characters: letters, digits and . _ : @ -, starting with a letter or digit"

# Timestamps before this are refused (a clock reset to year 1 is not a session from year 1).
TIMESTAMP_MIN = datetime(2000, 1, 1, tzinfo=UTC)

# PostgreSQL integer columns (PositiveIntegerField is a 4-byte integer).
INT32_MAX = 2**31 - 1


def external_id_error(value: str) -> str | None:
    """Why `value` is not a valid external id, or None when it is."""
    if _EXTERNAL_ID.fullmatch(value):
        return None
    if value == "":
        return "May not be empty."
    return f"Not a valid id: use {EXTERNAL_ID_RULE}."


def text_error(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None when it can: a NUL character (PostgreSQL refuses
    it) or half of a surrogate pair (not encodable as UTF-8)."""
    if "\x00" in value:
        return "Contains a NUL character (\\u0000), which cannot be stored."
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "Contains an unpaired surrogate, which is not valid Unicode text."
    return None


def echo_safe(value: str, limit: int = 200) -> str:
    """`value` as it may be quoted back in an error: unpaired surrogates escaped (a JSON response with
    one cannot be encoded) and cut to `limit` characters. Control characters are left to the JSON
    encoder, which escapes them."""
    value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value if len(value) <= limit else value[: limit - 1] + "…"
