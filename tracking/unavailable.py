"""The database is unreachable: a fault of the deployment, answered 503 with Retry-After (never 500), so a game
retries its batch and a clinician's page says to try again, and both recover by themselves when PostgreSQL is
back. A real bug (bad SQL, a constraint, a statement cancelled) is not this, and stays a 500.

"Unreachable" is a connection that cannot be made or was lost: psycopg's OperationalError without a server
error code (connection refused, server closed the connection, the pool's timeout), one of class 08
(connection exception), the server shutting down or starting (57P01-57P03), too many connections (53300), and
InterfaceError (a connection already closed)."""

import logging

import psycopg
from django.db import utils as db_utils

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
# The API's body: a game's request (a crisis signal among them) is told to retry, never given a 500.
API_DETAIL = (
    "The service is briefly unavailable. Retry the same request after the seconds in Retry-After; "
    "a repeated batch is safe (ingest is idempotent by external id)."
)
UNREACHABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def database_unreachable(exc: BaseException | None) -> bool:
    """True when `exc`, or an exception it was raised from, says the database cannot be reached."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, db_utils.InterfaceError | psycopg.InterfaceError):
            return True
        if isinstance(exc, psycopg.OperationalError):
            sqlstate = exc.sqlstate
            return sqlstate is None or sqlstate.startswith("08") or sqlstate in UNREACHABLE_SQLSTATES
        exc = exc.__cause__ or exc.__context__
    return False


def log_unreachable(exc: BaseException, where: str) -> None:
    """One warning line with the exception types only: never a message, SQL or parameters, which could carry
    patient data or a connection string."""
    names = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names.append(f"{type(current).__module__}.{type(current).__qualname__}")
        current = current.__cause__ or current.__context__
    logger.warning("database unreachable (%s), answered 503 to %s", " <- ".join(names), where)
