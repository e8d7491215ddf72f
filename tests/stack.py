"""The production stack as docker-compose.yml describes it, started as processes.

There is no container engine on these machines, so the services' own command lines are run: `web`,
`worker` and `beat` exactly as compose writes them, with compose's environment (`DJANGO_ENV=production`
and the rest), pointed at the local PostgreSQL and Redis instead of compose's hostnames, and the web bound
to a free loopback port. The health checks are compose's own commands too. Every process runs in its own
session so that stopping a service stops its children (gunicorn's workers, Celery's pool).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml
from cryptography.fernet import Fernet

from tracking.fields import configured_keys

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
BEAT_SCHEDULE = "/var/lib/beat/celerybeat-schedule"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_database_url() -> str:
    """This test run's database (pytest-django's `test_` copy of DATABASE_URL's), for processes outside it."""
    from django.db import connection

    return os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + connection.settings_dict["NAME"]


def patient_rows_locked(patient_ids):
    """A connection of its own to this run's database, holding the patients' rows locked (as a long
    ingest would) until it ends its transaction; use it as a context manager or close it."""
    import psycopg

    conn = psycopg.connect(run_database_url().replace("postgres://", "postgresql://", 1))
    conn.execute("SELECT 1 FROM tracking_patient WHERE id = ANY(%s) FOR UPDATE", [list(patient_ids)])
    return conn


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def service_command(service: str) -> list[str]:
    """The service's command as an argument list, without compose's `sh -c "... migrate --noinput &&"`
    wrapper (`Stack` runs the migration as its own step, as the wrapper does)."""
    command = compose()["services"][service]["command"]
    text = command if isinstance(command, str) else shlex.join(command)
    words = shlex.split(text)
    if words[:2] == ["sh", "-c"]:
        words = shlex.split(words[2].split("&&")[-1])
    return words


def service_environment(service: str) -> dict[str, str]:
    """Compose's `environment` of the service (the shared x-app block), with `${VAR:?message}` and `${VAR}`
    left for the caller to override."""
    values = compose()["services"][service].get("environment") or {}
    return {key: str(value) for key, value in values.items()}


class Stack:
    """`web`, `worker` and `beat` of docker-compose.yml on `redis_url` and `database_url` (this test run's
    database unless told otherwise), with the test process's field-encryption keys.

    `env` adds to (or overrides) compose's environment, for what a test needs: a sweep interval, an SMTP
    server. `request` speaks to the web as the TLS-terminating proxy compose expects in front of it does
    (`X-Forwarded-Proto: https`)."""

    def __init__(
        self,
        tmp: Path,
        *,
        redis_url: str,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
        web_workers: int | None = None,
    ):
        self.tmp = tmp
        self.web_workers = web_workers  # instead of compose's `--workers`, when given
        self.port = free_port()
        self.processes: dict[str, subprocess.Popen] = {}
        (tmp / "audit-heads").mkdir(exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_TESTING", "PYTEST", "CELERY_"))},
            **service_environment("web"),
            "DATABASE_URL": database_url or run_database_url(),
            "REDIS_URL": redis_url,
            "SECRET_KEY": "stack-test-" + Fernet.generate_key().decode(),
            # what the test process encrypts (names, webhook secrets) the stack must read
            "FIELD_ENCRYPTION_KEYS": ",".join(configured_keys()),
            "AUDIT_HEAD_DIR": str(tmp / "audit-heads"),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),  # compose's shared metrics volume
            "AUDIT_SIGNING_KEY": "stack-test-audit-signing-key",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DEBUG": "false",
            "EMAIL_USE_TLS": "false",
            "SITE_URL": f"https://127.0.0.1:{self.port}",
            **(env or {}),
        }

    # ----- the services ---------------------------------------------------------------------------

    def command(self, service: str) -> list[str]:
        words = service_command(service)
        if "--bind" in words:
            words[words.index("--bind") + 1] = f"127.0.0.1:{self.port}"
        if "--workers" in words and self.web_workers is not None:
            words[words.index("--workers") + 1] = str(self.web_workers)
        if BEAT_SCHEDULE in words:
            words[words.index(BEAT_SCHEDULE)] = str(self.tmp / "celerybeat-schedule")
        if words[0] in ("gunicorn", "celery"):
            words = [sys.executable, "-m", *words]
        elif words[0] == "python":
            words[0] = sys.executable
        return words

    def collectstatic(self) -> None:
        """The Dockerfile's build step that collects the static files (production serves only those). Skipped
        when the collected manifest is newer than every source file (compressing plotly.js takes a minute)."""
        manifest = ROOT / "staticfiles" / "staticfiles.json"
        sources = [p.stat().st_mtime for p in (ROOT / "static").rglob("*") if p.is_file()]
        if manifest.exists() and manifest.stat().st_mtime > max(sources, default=0):
            return
        lines = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
        step = next(line for line in lines if line.startswith("RUN ") and "collectstatic" in line)
        step = step.removeprefix("RUN ").split("&& useradd")[0]
        path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
        subprocess.run(["sh", "-c", step], cwd=ROOT, env={"PATH": path}, check=True, capture_output=True)  # noqa: S603,S607

    def migrate(self) -> None:
        """What the web service runs before gunicorn (`python manage.py migrate --noinput`)."""
        subprocess.run(  # noqa: S603
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
        )

    def start(self, *services: str) -> Stack:
        if "web" in services:
            self.collectstatic()  # the image is built before it runs: production serves only collected files
        for service in services:
            log = (self.tmp / f"{service}.log").open("a")  # noqa: SIM115 (open while the process runs)
            self.processes[service] = subprocess.Popen(  # noqa: S603
                self.command(service), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        for service in services:
            self.wait_healthy(service)
        return self

    def kill(self, service: str, sig: int = signal.SIGKILL) -> None:
        """Sends `sig` to the service's whole process group (SIGKILL: the service dies with its children)."""
        process = self.processes.pop(service)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # children a graceful stop left behind

    def stop(self) -> None:
        for service in list(self.processes):
            self.kill(service, signal.SIGTERM)

    def log(self, service: str) -> str:
        path = self.tmp / f"{service}.log"
        return path.read_text() if path.exists() else ""

    # ----- health -----------------------------------------------------------------------------------

    def healthcheck(self, service: str) -> bool:
        """Runs compose's health check of the service, as the engine would, against this stack."""
        check = compose()["services"][service].get("healthcheck")
        if not check:
            return self.processes[service].poll() is None
        test = check["test"]
        argv = ["sh", "-c", test[1].replace("$$", "$")] if test[0] == "CMD-SHELL" else list(test[1:])
        argv = [a.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}") for a in argv]
        argv = [a.replace(BEAT_SCHEDULE, str(self.tmp / "celerybeat-schedule")) for a in argv]
        if argv[0] == "python":
            argv[0] = sys.executable
        env = {
            **self.env,
            "HOSTNAME": socket.gethostname(),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
        result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=60, check=False)  # noqa: S603
        return result.returncode == 0

    def wait_healthy(self, service: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[service].poll() is not None:
                raise AssertionError(
                    f"{service} exited ({self.processes[service].returncode}):\n{self.log(service)[-3000:]}"
                )
            if self.healthcheck(service):
                return
            time.sleep(0.5)
        raise AssertionError(f"{service} not healthy after {timeout}s:\n{self.log(service)[-3000:]}")

    # ----- speaking to the web ------------------------------------------------------------------------

    def request(self, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 30):
        """(status, headers, parsed JSON or text) of one request, through a proxy that terminated TLS. The
        headers are looked up without regard to case, as HTTP's are (uvicorn's httptools protocol sends
        them in lower case)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = json.dumps(body).encode() if isinstance(body, dict | list) else body
        all_headers = {"X-Forwarded-Proto": "https", "Host": "127.0.0.1", **(headers or {})}
        if data is not None:
            all_headers.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=all_headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        text = raw.decode("utf-8", "replace")
        parsed = json.loads(text) if re.match(r"application/json", response.getheader("Content-Type") or "") else text
        return response.status, response.headers, parsed

    def ingest(self, token: str, batch: dict):
        return self.request("POST", "/api/v1/ingest", batch, {"Authorization": f"Bearer {token}"})
