"""Debian's Prometheus, run by a test against the shipped scrape configuration.

`Prometheus(tmp, target="127.0.0.1:8123", token="...")` starts `/usr/bin/prometheus` on a free loopback port
(never 9090) with a copy of deploy/prometheus/prometheus.yml in which only these change: the one target is
`target`, the bearer token file is a file in `tmp` holding `token`, the rules are a copy of alerts.yml, and
the scrape and evaluation intervals are short (1 s by default) so a test does not wait 15 s for a scrape.
Its TSDB lives in `tmp`. Use it as a context manager: the process is stopped on the way out.

    with Prometheus(tmp_path, target=f"127.0.0.1:{port}", token=token) as prometheus:
        target = prometheus.wait_target_up()
        value = prometheus.wait_value('progress_analytics_lag_seconds{job="progress"}')

Every wait polls a condition until it holds or a deadline passes (then it fails with what it last saw).
The first scrape comes about 5 s after the start: Prometheus 2.42's target discovery hands new targets to
the scrape manager on a fixed 5 s tick, which no flag changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.stack import free_port

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "alerts.yml"
RULES_TEST = PROMETHEUS_DIR / "alerts_test.yml"
JOB = "progress"

T = TypeVar("T")


def binary(name: str) -> str:
    """The path of Debian's `prometheus` or `promtool` (package `prometheus`, installed by scripts/lib.sh)."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if path is None:
        raise RuntimeError(f"{name} is not installed: the tests need Debian's `prometheus` package (scripts/lib.sh)")
    return path


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def write_token(path: Path, token: str) -> Path:
    """A bearer token file as an operator writes it (Prometheus strips the trailing newline)."""
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def scrape_config(
    *, target: str, credentials_file: Path, rules: Path | None = RULES, interval: str | None = None
) -> dict[str, Any]:
    """The shipped scrape configuration with the `progress` job's target and token file replaced, the rule
    files replaced by `rules` (absolute; none when None) and, when given, both intervals set to `interval`."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    (static,) = job["static_configs"]
    assert len(static["targets"]) == 1, "the shipped config scrapes one target, web:8000"
    static["targets"] = [target]
    assert job["authorization"]["type"] == "Bearer"
    job["authorization"]["credentials_file"] = str(credentials_file)
    config["rule_files"] = [str(rules)] if rules is not None else []
    if interval is not None:
        config["global"].update(scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval)
        for key in ("scrape_interval", "scrape_timeout"):
            job.pop(key, None)
    return config


def wait_for(condition: Callable[[], T], *, timeout: float, what: str, poll: float = 0.1) -> T:
    """`condition()`'s first truthy value, polled every `poll` seconds for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except (OSError, urllib.error.URLError, ValueError) as error:  # not up yet, or a transient failure
            last = error
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}; last seen: {last!r}")
        time.sleep(poll)


class Prometheus:
    def __init__(
        self,
        tmp: Path,
        *,
        target: str,
        token: str,
        interval: str = "1s",
        rules: bool = True,
        start_timeout: float = 30,
    ):
        self.dir = Path(tmp) / "prometheus"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.target = target
        self.token_file = write_token(self.dir / "metrics_token", token)
        rules_path = None
        if rules:
            rules_path = self.dir / "alerts.yml"
            shutil.copyfile(RULES, rules_path)
        self.config = scrape_config(
            target=target, credentials_file=self.token_file, rules=rules_path, interval=interval
        )
        self.config_file = self.dir / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.log_file = self.dir / "prometheus.log"
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    # ----- process -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        for attempt in range(3):  # a free port can be taken between choosing it and binding it
            self.port = free_port()
            with self.log_file.open("ab") as log:
                self.process = subprocess.Popen(
                    [
                        binary("prometheus"),
                        f"--config.file={self.config_file}",
                        f"--storage.tsdb.path={self.dir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        "--storage.tsdb.retention.time=1h",
                        "--log.level=info",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            try:
                wait_for(self._ready, timeout=self.start_timeout, what=f"Prometheus ready on {self.url}")
                return self
            except (TimeoutError, RuntimeError):
                exited = self.process.poll() is not None
                self.stop()
                if not (exited and "address already in use" in self.log() and attempt < 2):
                    raise RuntimeError(f"Prometheus did not start:\n{self.log()[-3000:]}") from None
        raise AssertionError("unreachable")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"Prometheus exited with {self.process.returncode}")
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
            return response.status == 200

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- HTTP API ------------------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        """`data` of a successful `GET /api/v1/<path>`."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise ValueError(f"{path}: {body}")
        return body["data"]

    def targets(self) -> list[dict[str, Any]]:
        """The active targets of the `progress` job (`health` is "up", "down" or "unknown")."""
        return [t for t in self.api("targets", state="active")["activeTargets"] if t["labels"].get("job") == JOB]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (each item has `metric` and `value` = [time, "string"])."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise ValueError(f"{expr!r} is a {data['resultType']}, not a vector")
        return data["result"]

    # ----- waits ---------------------------------------------------------------------------------------

    def wait_target(self, condition: Callable[[dict[str, Any]], bool], *, timeout: float = 30, what: str) -> dict:
        """The `progress` target once `condition(target)` holds ("unknown" health until its first scrape)."""

        def check() -> dict | None:
            return next((t for t in self.targets() if condition(t)), None)

        return wait_for(check, timeout=timeout, what=what)

    def wait_target_up(self, timeout: float = 30) -> dict[str, Any]:
        return self.wait_target(lambda t: t["health"] == "up", timeout=timeout, what=f"{self.target} to be up")

    def wait_target_down(self, timeout: float = 30) -> dict[str, Any]:
        return self.wait_target(
            lambda t: t["health"] == "down", timeout=timeout, what=f"{self.target} to be scraped and down"
        )

    def wait_query(
        self,
        expr: str,
        condition: Callable[[list[dict[str, Any]]], bool] = bool,
        *,
        timeout: float = 30,
    ) -> list[dict[str, Any]]:
        """The result of `expr` once `condition(result)` holds (by default: once it is not empty)."""

        def check() -> list[dict[str, Any]] | None:
            result = self.query(expr)
            return result if condition(result) else None

        return wait_for(check, timeout=timeout, what=f"{expr!r} to satisfy the condition")

    def wait_value(
        self, expr: str, condition: Callable[[float], bool] = lambda _: True, *, timeout: float = 30
    ) -> float:
        """The single value of `expr` once it has one sample and `condition(value)` holds."""
        result = self.wait_query(expr, lambda r: len(r) == 1 and condition(float(r[0]["value"][1])), timeout=timeout)
        return float(result[0]["value"][1])
