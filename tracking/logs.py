"""Log records as DESIGN §10 wants them: one JSON object per line (`JsonFormatter`: time in ISO 8601 UTC,
level, logger, message, request_id, user_id, and task/task_id in a task, exc_type and traceback for an
exception), or a line of text for development (`TextFormatter`, LOG_FORMAT=text); `ContextFilter` adds
the request id and the user id (tracking/request_id.py) to every record, and `ScrubFilter` the scrubbed
message and exception text, which both formatters print instead of the raw ones. The record itself is
not changed (pytest's caplog and other handlers still see it as it was logged).

The scrubbing rule. Logs hold no patient data beyond internal ids, and a player id can be any string,
so what is kept is decided by an allow-list, not by recognising player ids:

- The format string is ours, fixed text; it is kept. Its arguments are kept when they are numbers, None
  or booleans; an exception argument becomes its type and its scrubbed message (below); a string is kept
  only when it looks like code: words of letters and `_ . : -` without digits (a task or view name, a
  step such as `email`), lists of those joined by `, ` or ` <- `, `HTTP 404`, a UUID or a long hex id,
  or an exception class name optionally followed by `: ` and a message (scrubbed as below). Any other
  string (anything with a digit in a word, spaces, quotes, longer than 120 characters) is `[redacted]`.
  Containers (tuples, lists, dicts) are scrubbed item by item.
- An exception's message is kept only for the families whose messages the infrastructure writes (the
  database driver and Django's database errors, OSError and the network, the broker, Celery's time
  limits, ImproperlyConfigured), and then only after value redaction: everything in quotes, everything
  in parentheses after `=` (PostgreSQL's `Key (player_id)=(p-123) already exists` keeps its column
  names), every non-numeric value of `key=value`, and PostgreSQL's DETAIL lines but for their
  `Key (...)` form, become `[redacted]`. Every other exception (ValueError, ValidationError, KeyError,
  our own...) keeps its type only: its message is `[redacted]`.
- The traceback keeps its frames (file, line, function; not the source line, which can hold a literal)
  and each exception of its chain as `Type: <scrubbed message>`.
- The value redaction is applied again to the whole rendered message: a third-party message that quotes
  a value (`Invalid HTTP_HOST header: 'x'`) loses it.

Internal integer ids, exception types and our own fixed messages remain. A player id that is a plain
word without digits cannot be told from a fixed word: the call sites log `patient_id` (the internal id),
never a player id, and tests/test_logging.py checks a worker's whole log for a batch's player ids."""

from __future__ import annotations

import json
import logging
import re
import traceback
from datetime import UTC, datetime
from typing import Any

from tracking import request_id

REDACTED = "[redacted]"

_QUOTED = re.compile(r"""'[^'\n]*'|"[^"\n]*"|«[^»\n]*»""")
_PAREN_AFTER_EQUALS = re.compile(r"=\s*\((?:[^()]|\([^()]*\))*\)")
_KEY_VALUE = re.compile(r"""\b([A-Za-z_][\w.]*)=([^\s,;()\[\]'"]+)""")
_INTEGERS_IN_PARENS = re.compile(r"=\s*\([\d,\s]*\)")
_QUOTED_INTEGER = re.compile(r"""['"«]-?\d+['"»]""")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[a-z]{1,2})?")
_DETAIL = re.compile(r"^(\s*(?:DETAIL|HINT|CONTEXT|WHERE):\s*)(.*)$", re.MULTILINE)
_DETAIL_KEY = re.compile(
    r"Key \([\w\s,]+\)=\(\[redacted\]\)( already exists| is not present in table \[redacted\]|)\.?"
)

_CODE_WORD = r"[A-Za-z_][A-Za-z_.:-]*"
_SAFE_STRING = re.compile(
    rf"{_CODE_WORD}(?:(?:, | <- ){_CODE_WORD})*"
    r"|HTTP \d{3}"
    r"|-?\d+(?:\.\d+)?"
    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16,64}"
)
_EXCEPTION_TEXT = re.compile(r"([A-Z]\w*(?:Error|Exception|Exceeded|Timeout))(?:: (.*))?", re.DOTALL)

# Exceptions whose messages the infrastructure writes (kept after value redaction); by module prefix.
_MESSAGE_MODULES = (
    "psycopg", "django.db", "redis", "kombu", "amqp", "billiard", "celery.exceptions", "urllib", "http.client",
    "socket", "ssl", "smtplib",
)  # fmt: skip
_MESSAGE_TYPES: tuple[type[BaseException], ...] = (OSError, TimeoutError)


def _message_is_kept(error: BaseException) -> bool:
    if isinstance(error, _MESSAGE_TYPES):
        return True
    module = type(error).__module__ or ""
    if module.startswith(_MESSAGE_MODULES):
        return True
    return type(error).__name__ == "ImproperlyConfigured"


def _redact_detail(match: re.Match) -> str:
    head, rest = match.group(1), match.group(2)
    kept = _DETAIL_KEY.fullmatch(rest.strip())
    return head + (rest.strip() if kept else REDACTED)


def _keep_or_redact_paren(match: re.Match) -> str:
    return match.group(0) if _INTEGERS_IN_PARENS.fullmatch(match.group(0)) else f"=({REDACTED})"


def _keep_or_redact_quoted(match: re.Match) -> str:
    return match.group(0) if _QUOTED_INTEGER.fullmatch(match.group(0)) else f"'{REDACTED}'"


def _keep_or_redact_value(match: re.Match) -> str:
    return match.group(0) if _NUMBER.fullmatch(match.group(2)) else f"{match.group(1)}={REDACTED}"


def redact_values(text: str, *, key_values: bool = True) -> str:
    """Quoted values, parenthesised values after `=`, DETAIL lines and (`key_values`) non-numeric
    `key=value` values."""
    text = _PAREN_AFTER_EQUALS.sub(_keep_or_redact_paren, text)
    text = _QUOTED.sub(_keep_or_redact_quoted, text)
    if key_values:
        text = _KEY_VALUE.sub(_keep_or_redact_value, text)
    return _DETAIL.sub(_redact_detail, text)


def exception_message(error: BaseException) -> str:
    text = str(error)
    if not text:
        return ""
    return redact_values(text) if _message_is_kept(error) else REDACTED


def describe_exception(error: BaseException) -> str:
    message = exception_message(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def scrub_argument(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, BaseException):
        return describe_exception(value)
    if isinstance(value, tuple | list | set | frozenset):
        return (
            type(value)(scrub_argument(item) for item in value)
            if not isinstance(value, set | frozenset)
            else sorted(map(str, (scrub_argument(item) for item in value)))
        )
    if isinstance(value, dict):
        return {key: scrub_argument(item) for key, item in value.items()}
    text = value if isinstance(value, str) else str(value)
    if len(text) <= 120 and _SAFE_STRING.fullmatch(text):
        return text
    exception = _EXCEPTION_TEXT.fullmatch(text) if len(text) <= 500 else None
    if exception is not None:
        name, rest = exception.groups()
        return f"{name}: {redact_values(rest)}" if rest else name
    return REDACTED


def scrub_message(record: logging.LogRecord) -> str:
    """The record's message, rendered with scrubbed arguments, then value-redacted."""
    message = str(record.msg) if not isinstance(record.msg, BaseException) else describe_exception(record.msg)
    if record.args:
        args = record.args
        scrubbed: Any = scrub_argument(args) if isinstance(args, dict) else tuple(scrub_argument(a) for a in args)
        try:
            message = message % scrubbed
        except (TypeError, ValueError, KeyError):
            message = f"{message} {REDACTED}"
    return redact_values(message, key_values=False)  # its own `key=%s` values are scrubbed arguments


def scrub_traceback(error: BaseException) -> str:
    """The exception's chain with its frames, each exception as `Type: <scrubbed message>`."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    chain: list[tuple[BaseException, str]] = []
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.__cause__ is not None:
            link = "The above exception was the direct cause of the following exception:"
            nxt: BaseException | None = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            link = "During handling of the above exception, another exception occurred:"
            nxt = current.__context__
        else:
            link, nxt = "", None
        chain.append((current, link))
        current = nxt
    for exc, link in reversed(chain):
        if link:
            parts.append(f"\n{link}\n\n")
        frames = "".join(
            f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}\n'
            for frame in traceback.extract_tb(exc.__traceback__)
        )  # without the source lines: a line of code can hold a literal
        if frames:
            parts.append("Traceback (most recent call last):\n" + frames)
        parts.append(describe_exception(exc) + "\n")
    return "".join(parts).rstrip("\n")


class ContextFilter(logging.Filter):
    """Adds request_id, user_id, task and task_id (None outside a request or a task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = request_id.current()
        record.request_id = context.request_id if context else None
        record.user_id = request_id.current_user_id()
        record.task = context.task if context else None
        record.task_id = context.task_id if context else None
        return True


class ScrubFilter(logging.Filter):
    """Adds the scrubbed message (`scrubbed_message`) and exception (`scrubbed_exc_type`, `scrubbed_traceback`)
    that the formatters print."""

    def filter(self, record: logging.LogRecord) -> bool:
        _scrub(record)
        return True


def _scrub(record: logging.LogRecord) -> None:
    if getattr(record, "scrubbed_message", None) is not None:
        return
    record.scrubbed_message = scrub_message(record)
    error = record.exc_info[1] if record.exc_info else None
    record.scrubbed_exc_type = type(error).__name__ if error is not None else None
    record.scrubbed_traceback = scrub_traceback(error) if error is not None else None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        _scrub(record)
        if not hasattr(record, "request_id"):
            ContextFilter().filter(record)
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.scrubbed_message,  # type: ignore[attr-defined]
            "request_id": record.request_id,  # type: ignore[attr-defined]
            "user_id": record.user_id,  # type: ignore[attr-defined]
        }
        if record.task_id is not None:  # type: ignore[attr-defined]
            entry["task"] = record.task  # type: ignore[attr-defined]
            entry["task_id"] = record.task_id  # type: ignore[attr-defined]
        if record.scrubbed_exc_type is not None:  # type: ignore[attr-defined]
            entry["exc_type"] = record.scrubbed_exc_type  # type: ignore[attr-defined]
            entry["traceback"] = record.scrubbed_traceback  # type: ignore[attr-defined]
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger [request id] message`, then the scrubbed traceback: for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        _scrub(record)
        if not hasattr(record, "request_id"):
            ContextFilter().filter(record)
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="seconds")
        line = f"{when} {record.levelname} {record.name} [{record.request_id or '-'}] {record.scrubbed_message}"  # type: ignore[attr-defined]
        if record.scrubbed_traceback:  # type: ignore[attr-defined]
            line += "\n" + record.scrubbed_traceback  # type: ignore[attr-defined]
        return line
