"""A database that cannot be reached is a 503 with Retry-After (JSON under /api/, the product's page elsewhere),
never a 500; a real bug stays a 500. `/readyz` names what is down. The probes are never redirected to HTTPS.

The database here is really unreachable: the connection's settings point at a loopback port where nothing
listens (and its pool is rebuilt on them), then put back. tests/test_database_down.py stops a real server."""

import json
import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.db import connection, connections, transaction
from django.db.utils import DataError, InterfaceError, OperationalError, ProgrammingError
from django.test import Client, override_settings
from django.utils import timezone

from tests.conftest import logged_in
from tests.test_celery_worker import free_port
from tracking.unavailable import RETRY_AFTER_SECONDS, database_unreachable

ROOT = Path(__file__).resolve().parents[1]
DEAD_REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
    }
}


@contextmanager
def unreachable_database():
    """The default connection points at a port where nothing listens, until the block ends."""
    conn = connections["default"]
    saved_port, saved_options = conn.settings_dict["PORT"], conn.settings_dict["OPTIONS"]
    conn.close()
    conn.close_pool()
    conn.settings_dict["PORT"] = str(free_port())
    if saved_options.get("pool"):
        # The deployed pool waits DB_POOL_TIMEOUT for a connection; a short wait keeps the test quick.
        conn.settings_dict["OPTIONS"] = {**saved_options, "pool": {**saved_options["pool"], "timeout": 0.5}}
    try:
        with pytest.raises(OperationalError):  # proves the database really is unreachable
            conn.ensure_connection()
        yield
    finally:
        conn.close()
        conn.close_pool()
        conn.settings_dict["PORT"], conn.settings_dict["OPTIONS"] = saved_port, saved_options


def crisis_batch(player_id: str) -> str:
    alert = {"alert_id": "c-1", "player_id": player_id, "level": "urgent", "reason": "Crisis phrase"}
    return json.dumps({"alerts": [{**alert, "occurred_at": timezone.now().isoformat()}]})


def assert_unavailable(response):
    assert response.status_code == 503
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)


# ----- the mapping ----------------------------------------------------------------------------------


def test_ingest_of_a_crisis_signal_is_503_with_retry_after_then_stored_when_the_database_is_back(
    api, patient_a, transactional_db, caplog
):
    caplog.set_level(logging.WARNING)
    batch = crisis_batch(patient_a.player_id)
    with unreachable_database():
        response = api.post("/api/v1/ingest", batch, content_type="application/json")
    assert_unavailable(response)
    assert response["Content-Type"] == "application/json"
    assert "Retry the same request" in response.json()["detail"]
    warnings = [r for r in caplog.records if r.name == "tracking.unavailable"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    # The exception's types only: no message, no SQL, no host, no request detail.
    line = warnings[0].getMessage()
    assert "psycopg" in line and "OperationalError" in line
    assert "127.0.0.1" not in line and "SELECT" not in line and "ingest" not in line
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # The same process, its pool rebuilt once the database answers again: the retry is stored.
    assert api.post("/api/v1/ingest", batch, content_type="application/json").status_code == 201


def test_a_page_is_the_products_503_page(therapist_a, transactional_db, caplog):
    client = logged_in(therapist_a)
    client.raise_request_exception = False
    with unreachable_database():  # the session lookup of the middleware is the first to fail
        response = client.get("/")
    assert_unavailable(response)
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "Briefly unavailable" in page and "Progress Dashboard" in page and "app.css" in page
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert client.get("/").status_code == 200  # and the page is back with the database


def test_an_api_read_failing_in_the_middleware_is_json_503(therapist_a, patient_a, transactional_db):
    client = logged_in(therapist_a)
    client.raise_request_exception = False
    with unreachable_database():
        response = client.get(f"/api/v1/patients/{patient_a.player_id}/progress")
    assert_unavailable(response)
    assert "Retry the same request" in response.json()["detail"]


def test_a_real_bug_is_still_a_500(therapist_a, transactional_db, monkeypatch):
    """A programming error in a query is no outage: the plain 500 page, not 503."""
    from tracking import selectors

    def broken(*args, **kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")

    monkeypatch.setattr(selectors, "caseload_page", broken)
    client = logged_in(therapist_a)
    client.raise_request_exception = False
    response = client.get("/")
    assert response.status_code == 500
    assert "Retry-After" not in response


def test_an_exhausted_pool_is_503(api, patient_a, transactional_db):
    """Every connection of a one-connection pool is taken: the next request waits the pool's timeout, then
    is told to retry."""
    conn = connections["default"]
    if not conn.settings_dict["OPTIONS"].get("pool"):
        pytest.skip("the connection pool is off (DB_POOL=false)")
    saved = conn.settings_dict["OPTIONS"]
    conn.close()
    conn.close_pool()
    conn.settings_dict["OPTIONS"] = {**saved, "pool": {"min_size": 0, "max_size": 1, "timeout": 0.5}}
    try:
        conn.pool.open()
        held = conn.pool.getconn()
        try:
            response = api.post("/api/v1/ingest", crisis_batch(patient_a.player_id), content_type="application/json")
        finally:
            conn.pool.putconn(held)
        assert_unavailable(response)
    finally:
        conn.close()
        conn.close_pool()
        conn.settings_dict["OPTIONS"] = saved


def test_a_real_bug_is_not_unavailability(db):
    for sql, error in [("SELECT * FROM no_such_table", ProgrammingError), ("SELECT 1/0", DataError)]:
        with pytest.raises(error) as raised, transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
        assert not database_unreachable(raised.value)
    # A statement cancelled by its timeout (57014) is the query's problem, not the server's reachability.
    with pytest.raises(OperationalError) as raised, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 1")
        cursor.execute("SELECT pg_sleep(1)")
    assert not database_unreachable(raised.value)
    assert not database_unreachable(ValueError("not a database error"))
    assert not database_unreachable(None)


def test_lost_and_refused_connections_are_unavailability(db):
    params = connection.get_connection_params()
    params.pop("pool", None)
    params = {k: v for k, v in params.items() if k in ("dbname", "user", "password", "host", "port")}
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(**{**params, "port": free_port()}, connect_timeout=2)
    assert database_unreachable(refused.value)
    victim = psycopg.connect(**params, autocommit=True)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [victim.info.backend_pid])
        with pytest.raises(psycopg.OperationalError) as terminated:
            victim.execute("SELECT 1")
        assert database_unreachable(terminated.value)  # 57P01, or "server closed the connection"
    finally:
        victim.close()
    with pytest.raises(psycopg.OperationalError) as closed:
        victim.execute("SELECT 1")
    assert database_unreachable(closed.value)
    assert database_unreachable(InterfaceError("connection already closed"))


# ----- /readyz ------------------------------------------------------------------------------------


def test_readyz_is_ready_when_both_answer(db):
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_readyz_names_the_database_when_it_is_down(transactional_db):
    with unreachable_database():
        response = Client().get("/readyz")
    assert_unavailable(response)
    assert response.json() == {"status": "unavailable", "failed": ["database"]}


def test_readyz_names_redis_when_it_is_down(db):
    with override_settings(CACHES=DEAD_REDIS):
        response = Client().get("/readyz")
    assert_unavailable(response)
    assert response.json() == {"status": "unavailable", "failed": ["redis"]}


def test_readyz_names_both(transactional_db):
    with unreachable_database(), override_settings(CACHES=DEAD_REDIS):
        response = Client().get("/readyz")
    assert response.json() == {"status": "unavailable", "failed": ["database", "redis"]}


# ----- the probes and the HTTPS redirect --------------------------------------------------------------


@override_settings(SECURE_SSL_REDIRECT=True, SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
def test_the_probes_are_not_redirected_to_https(db):
    client = Client()  # a new client loads the middleware under these settings
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    login = client.get("/login/")
    assert login.status_code == 301 and login["Location"].startswith("https://")
    assert client.get("/healthz/x").status_code == 301  # the exemption is the probe's path, no more


def test_compose_health_check_passes_under_production_settings():
    """The production settings, in a fresh process, as compose's health check asks: plain HTTP to
    127.0.0.1:8000 with that address as the Host, while the site's name is another."""
    url = urlsplit(os.environ.get("DATABASE_URL", ""))
    if not url.scheme.startswith("postgres"):
        pytest.skip("production settings need PostgreSQL")
    maintenance = urlunsplit(url._replace(path="/postgres"))
    script = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "c = Client()\n"
        "for path in ('/healthz', '/readyz', '/login/'):\n"
        "    r = c.get(path, HTTP_HOST='127.0.0.1:8000')\n"
        "    print(path, r.status_code, r.get('Location', ''))\n"
    )
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "REDIS_URL")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={
            **env,
            "DJANGO_SETTINGS_MODULE": "progress_site.settings",
            "DJANGO_ENV": "production",
            "SECRET_KEY": "x" * 60,
            "ALLOWED_HOSTS": "progress.example.org",
            "AUDIT_HEAD_DIR": "/tmp/audit-heads-unavailable-test",  # noqa: S108 (never written)
            "AUDIT_SIGNING_KEY": "k" * 40,
            "FIELD_ENCRYPTION_KEYS": "S2V5LW9mLXRoZS1zZXR0aW5ncy10ZXN0cy0wMDAwMDA=",
            "DATABASE_URL": maintenance,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "/healthz 200 "
    assert lines[1] == "/readyz 200 "
    assert lines[2].startswith("/login/ 301 https://")


# ----- the pool's settings ------------------------------------------------------------------------------


def database_settings(env: dict[str, str]) -> dict:
    script = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps(s.DATABASES['default'], default=str))"
    )
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "progress_site.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_postgresql_is_pooled_with_sizes_from_the_environment_and_sqlite_is_not():
    url = "postgres://postgres@127.0.0.1:5432/postgres"
    pooled = database_settings({"DATABASE_URL": url, "DB_POOL_MAX_SIZE": "7", "DB_POOL_TIMEOUT": "2.5"})
    assert pooled["OPTIONS"]["pool"] == {"min_size": 2, "max_size": 7, "timeout": 2.5}
    assert pooled["CONN_MAX_AGE"] == 0  # Django refuses persistent connections with a pool
    unpooled = database_settings({"DATABASE_URL": url, "DB_POOL": "false", "DB_CONN_MAX_AGE": "60"})
    assert "pool" not in unpooled["OPTIONS"] and unpooled["CONN_MAX_AGE"] == 60
    demo = database_settings({})
    assert demo["ENGINE"] == "django.db.backends.sqlite3" and "pool" not in demo["OPTIONS"]
    assert demo["CONN_MAX_AGE"] == 0
