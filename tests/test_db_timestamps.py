"""Timestamps are parsed by psycopg's optimised loader (progress_site.db), with the very values Django's
own loader gave."""

from datetime import UTC

import pytest
from django.db import connection
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg.pq import Format
from psycopg.types.datetime import TimestamptzLoader

from progress_site import db as timestamps

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="psycopg's loaders: PostgreSQL")

VALUES = [
    "2026-03-29 01:30:00.123456+00",  # a clock change in Europe, microseconds
    "2026-10-25 00:59:59.999999+00",
    "2000-02-29 12:00:00+00",
    "1970-01-01 00:00:00+00",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
]
SELECT = "SELECT v::timestamptz FROM unnest(%s::text[]) WITH ORDINALITY AS t(v, i) ORDER BY i"


def _loader():
    return connection.connection.adapters.get_loader(timestamps.TIMESTAMPTZ_OID, Format.TEXT)


def test_connections_read_timestamps_with_the_optimised_loader(db):
    connection.ensure_connection()
    assert timestamps.optimised_loader() is not TimestamptzLoader  # psycopg's binary implementation is installed
    assert _loader() is timestamps.OptimisedUTCLoader


def test_the_values_are_those_of_djangos_own_loader(db):
    with connection.cursor() as cursor:
        cursor.execute(SELECT, [VALUES])
        ours = [row[0] for row in cursor.fetchall()]
    with connection.cursor() as cursor:
        register_tzloader(connection.timezone, cursor.cursor)  # Django's loader, on this cursor only
        assert (
            cursor.cursor.adapters.get_loader(timestamps.TIMESTAMPTZ_OID, Format.TEXT)
            is not timestamps.OptimisedUTCLoader
        )
        cursor.execute(SELECT, [VALUES])
        djangos = [row[0] for row in cursor.fetchall()]
    assert ours == djangos
    assert [(d.isoformat(), d.tzinfo) for d in ours] == [(d.isoformat(), d.tzinfo) for d in djangos]
    assert all(d.tzinfo is UTC for d in ours)
    assert ours[0].microsecond == 123456 and ours[-1].year == 9999


def test_a_session_in_another_time_zone_keeps_djangos_loader(db):
    connection.ensure_connection()
    raw = connection.connection
    register_tzloader(connection.timezone, raw)  # as Django's connection template leaves it
    djangos = _loader()
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'Europe/Paris'")
    try:
        timestamps.install_fast_timestamptz_loader(None, connection)
        assert _loader() is djangos
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
    timestamps.install_fast_timestamptz_loader(None, connection)
    assert _loader() is timestamps.OptimisedUTCLoader
