"""PostgreSQL stopped for 10 s under ingest, through the web server as deployed (issue 15).

The test starts a private PostgreSQL cluster of its own (initdb and pg_ctl, on a free loopback port, in a
temporary directory, removed at the end whatever happens), migrates it, and runs gunicorn with the command
line of docker-compose.yml's `web` service against it. Ingest clients post batches with unique external
ids, each retrying the same batch after `Retry-After` when answered 503. Mid-ingest the cluster is stopped
(`pg_ctl stop -m fast`) for 10 s and started again. Then:
- during the outage every answer was 2xx or 503, each 503 with Retry-After and the API's JSON error body;
- a page answers the product's 503 page, and `/readyz` 503 naming the database, then 200 once it is back;
- every retry succeeded after the restart, and the private database holds each session and marker exactly
  once.
"""

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.test_celery_worker import free_port, wait_until
from tracking.management.commands.benchmark_ingest import compose_commands

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[1]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
OUTAGE_SECONDS = 10
CLIENTS = 4
BATCHES_PER_CLIENT = 24
SESSIONS_PER_BATCH = 2
MARKERS_PER_SESSION = 5
CLINIC = "outage"


def as_postgres(command: list[str]) -> list[str]:
    """initdb refuses to run as root: the cluster belongs to the `postgres` OS user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class Cluster:
    """A throwaway PostgreSQL cluster on a free loopback port."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="progress-pg-down-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.data, self.log = self.dir / "data", self.dir / "server.log"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/progress"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            as_postgres([str(PG_BIN / args[0]), *args[1:]]), check=True, timeout=timeout, capture_output=True
        )

    def create(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE progress")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def query(self, sql: str, params=()) -> list[tuple]:
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=progress") as c:
            return c.execute(sql, params).fetchall()


@pytest.fixture
def cluster():
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL server binaries in {PG_BIN}")
    cluster = Cluster()
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.remove()


def stack_env(cluster: Cluster, logs: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/3")
    return {
        **{k: v for k, v in os.environ.items() if k not in ("DJANGO_TESTING", "CELERY_TASK_ALWAYS_EAGER")},
        "DATABASE_URL": cluster.url,
        "REDIS_URL": redis_url,
        "CACHE_KEY_PREFIX": f"pg-down-{cluster.port}",
        "DEBUG": "false",  # as deployed: the product's error pages
        "AUDIT_HEAD_DIR": str(logs / "audit-heads"),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@contextlib.contextmanager
def web_server(env: dict[str, str], log: Path):
    """gunicorn as docker-compose.yml's `web` runs it, bound to a free loopback port."""
    command, _ = compose_commands()
    bind = command.index("--bind")
    port = free_port()
    command = [*command[:bind], *command[bind + 2 :], "--bind", f"127.0.0.1:{port}"]
    with log.open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", *command], cwd=ROOT, env=env, stdout=output, stderr=output)
    try:
        wait_until(lambda: get(port, "/healthz")[0] == 200, 90, "gunicorn to answer /healthz")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def request(port: int, method: str, path: str, body: bytes | None = None, headers=None):
    """(status, headers, body), or (0, {}, error) when no answer came."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    except (OSError, http.client.HTTPException) as error:
        return 0, {}, repr(error).encode()
    finally:
        conn.close()


def get(port: int, path: str, headers=None):
    return request(port, "GET", path, headers=headers)


def batch(client: int, number: int) -> tuple[bytes, list[str], list[str]]:
    """A batch of new sessions with their markers, every external id unique to (client, batch)."""
    at = datetime.now(UTC) - timedelta(days=1, minutes=client * 100 + number)
    sessions, markers = [], []
    for s in range(SESSIONS_PER_BATCH):
        session_id = f"c{client}-b{number}-s{s}"
        player = f"outage-c{client}-p{s}"
        sessions.append(
            {"session_id": session_id, "player_id": player, "started_at": at.isoformat(),
             "ended_at": (at + timedelta(minutes=20)).isoformat(), "status": "completed", "duration_minutes": 20.0}
        )  # fmt: skip
        for m in range(MARKERS_PER_SESSION):
            markers.append(
                {"marker_id": f"{session_id}-m{m}", "session_id": session_id, "player_id": player,
                 "type": "skill_acquired", "description": "Completed a guided breathing exercise",
                 "achieved_at": (at + timedelta(minutes=5 + m)).isoformat(), "therapeutic_value": 0.5}
            )  # fmt: skip
    body = json.dumps({"sessions": sessions, "markers": markers}).encode()
    return body, [s["session_id"] for s in sessions], [m["marker_id"] for m in markers]


@dataclass
class Load:
    statuses: list[int] = field(default_factory=list)
    unavailable: list[tuple[str, dict]] = field(default_factory=list)  # (Retry-After, body) of each 503
    retried_and_stored: int = 0
    stored: int = 0
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def ingest_client(port: int, token: str, client: int, load: Load, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for number in range(BATCHES_PER_CLIENT):
        body, _, _ = batch(client, number)
        retried = False
        while not stop.is_set():
            status, answer_headers, answer = request(port, "POST", "/api/v1/ingest", body, headers)
            with load.lock:
                load.statuses.append(status)
            if status in (200, 201):
                with load.lock:
                    load.stored += 1
                    load.retried_and_stored += retried
                break
            if status == 503:
                retry_after = answer_headers.get("retry-after", "")
                try:
                    detail = json.loads(answer)
                except ValueError:
                    detail = {}
                with load.lock:
                    load.unavailable.append((retry_after, detail))
                retried = True
                time.sleep(float(retry_after) if retry_after.isdigit() else 1.0)  # as a game does: Retry-After
                continue
            with load.lock:
                load.problems.append(f"client {client} batch {number}: {status} {answer[:200]!r}")
            return


def test_postgresql_stopped_for_10_s_during_ingest(cluster):
    logs = Path(tempfile.mkdtemp(prefix="progress-pg-down-logs-"))
    env = stack_env(cluster, logs)
    manage(env, "migrate", "--noinput")
    manage(env, "create_clinic", CLINIC, "--name", "Outage test clinic")
    token = manage(env, "create_ingest_token", "--clinic", CLINIC, "--name", "game").strip()
    load, stop = Load(), threading.Event()
    try:
        with web_server(env, logs / "web.log") as port:
            clients = [
                threading.Thread(target=ingest_client, args=(port, token, c, load, stop), daemon=True)
                for c in range(CLIENTS)
            ]
            for thread in clients:
                thread.start()
            wait_until(lambda: load.stored >= CLIENTS * 2, 120, "the clients to store their first batches")

            cluster.stop("fast")
            stopped_at = time.monotonic()
            stored_before = load.stored
            # Meanwhile a clinician's page (a browser with its session cookie) and the readiness probe.
            probes: dict[str, tuple] = {}
            cookie = {"Cookie": "sessionid=a3bdf8e1c0c94a1e9f5ae0b7c2d4e6f8"}
            probe_threads = [
                threading.Thread(target=lambda: probes.setdefault("page", get(port, "/login/", headers=cookie))),
                threading.Thread(target=lambda: probes.setdefault("ready", get(port, "/readyz"))),
            ]
            for thread in probe_threads:
                thread.start()
            wait_until(lambda: len(load.unavailable) >= CLIENTS, OUTAGE_SECONDS, "every client to be told 503")
            for thread in probe_threads:
                thread.join(OUTAGE_SECONDS)
            remaining = OUTAGE_SECONDS - (time.monotonic() - stopped_at)
            time.sleep(max(0.0, remaining))  # the deliberate outage: 10 s, whatever the requests did
            stored_during = load.stored - stored_before
            cluster.start()

            wait_until(lambda: get(port, "/readyz")[0] == 200, 90, "/readyz to answer 200 after the restart")
            ready_after = get(port, "/readyz")
            for thread in clients:
                thread.join(timeout=180)
            stop.set()
            assert not any(thread.is_alive() for thread in clients), "clients still running after 180 s"
            # The web tier's pools hold no more than their budget (3 workers × DB_POOL_MAX_SIZE, default 10).
            held = cluster.query("SELECT count(*) FROM pg_stat_activity WHERE datname = 'progress'")[0][0] - 1
    finally:
        stop.set()
        web_log = (logs / "web.log").read_text(errors="replace") if (logs / "web.log").exists() else ""
        shutil.rmtree(logs, ignore_errors=True)

    print(  # the figures of the run, for the closing note
        f"\noutage: {len(load.unavailable)} answers 503, {load.retried_and_stored} batches stored on a retry, "
        f"{stored_during} stored while stopped (in flight), statuses {sorted(set(load.statuses))}, "
        f"{held} connections held by the web server afterwards"
    )
    assert load.problems == [], load.problems
    assert held <= 3 * 10, f"the web server holds {held} connections"
    assert set(load.statuses) <= {200, 201, 503}, f"an answer other than 2xx or 503: {sorted(set(load.statuses))}"
    assert load.unavailable, "no client was told 503 during the outage"
    for retry_after, detail in load.unavailable:
        assert retry_after.isdigit() and int(retry_after) > 0
        assert "Retry the same request" in detail.get("detail", "")
    assert load.retried_and_stored >= 1
    assert load.stored == CLIENTS * BATCHES_PER_CLIENT  # every batch, each retry included, succeeded

    status, headers, body = probes["page"]
    assert status == 503 and headers.get("retry-after"), (status, body[:300])
    assert headers["content-type"].startswith("text/html") and b"Briefly unavailable" in body
    status, headers, body = probes["ready"]
    assert status == 503 and headers.get("retry-after")
    assert json.loads(body) == {"status": "unavailable", "failed": ["database"]}
    assert json.loads(ready_after[2]) == {"status": "ready"}
    assert "Traceback" not in web_log and '" 500 ' not in web_log, web_log[-3000:]

    # Nothing lost, nothing twice: each external id of every batch is stored exactly once.
    sessions, markers = set(), set()
    for client in range(CLIENTS):
        for number in range(BATCHES_PER_CLIENT):
            _, session_ids, marker_ids = batch(client, number)
            sessions.update(session_ids)
            markers.update(marker_ids)
    stored_sessions = cluster.query(
        "SELECT s.session_id, count(*) FROM tracking_therapysession s JOIN tracking_clinic c ON c.id = s.clinic_id "
        "WHERE c.slug = %s GROUP BY s.session_id",
        [CLINIC],
    )
    stored_markers = cluster.query(
        "SELECT m.marker_id, count(*) FROM tracking_progressmarker m JOIN tracking_clinic c ON c.id = m.clinic_id "
        "WHERE c.slug = %s GROUP BY m.marker_id",
        [CLINIC],
    )
    assert dict(stored_sessions) == dict.fromkeys(sessions, 1)
    assert dict(stored_markers) == dict.fromkeys(markers, 1)
    print(f"stored: {len(stored_sessions)} sessions, {len(stored_markers)} markers, each once")
