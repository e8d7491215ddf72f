"""The shipped Prometheus configuration (deploy/prometheus/): promtool accepts the scrape config and the
alerting rules, the rules' unit tests pass (each alert fires on a synthetic series and not on a healthy
one), and the test helper tests/prometheus.py runs Debian's Prometheus with the shipped scrape config
against a local server that, like /metrics, answers only with the bearer token.

No database: these tests need only the `prometheus` Debian package (scripts/lib.sh installs it).
"""

from __future__ import annotations

import secrets
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests.prometheus import (
    JOB,
    PROMETHEUS_DIR,
    RULES,
    RULES_TEST,
    SCRAPE_CONFIG,
    Prometheus,
    promtool,
    scrape_config,
    write_token,
)

# ----- promtool --------------------------------------------------------------------------------------------


def assert_ok(result) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def test_check_config_shipped_file_syntax():
    """The shipped file as is. `--syntax-only` because its token file is compose's secret
    (/run/secrets/metrics_token), which does not exist outside the Prometheus container."""
    assert_ok(promtool("check", "config", "--syntax-only", SCRAPE_CONFIG))


def test_check_config_with_token_file(tmp_path):
    """The full check (the token file and the rule files it names are read too) of the shipped file, its
    token file the only change, in a copy of deploy/prometheus so that `alerts.yml` resolves as shipped."""
    copy = tmp_path / "etc-prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy)
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == JOB and job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["web:8000"]}]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metrics_token"}
    job["authorization"]["credentials_file"] = str(write_token(tmp_path / "metrics_token", "t"))
    (copy / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    result = promtool("check", "config", copy / "prometheus.yml")
    assert_ok(result)
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


def test_check_config_fails_on_a_broken_config(tmp_path):
    broken = tmp_path / "prometheus.yml"
    broken.write_text(SCRAPE_CONFIG.read_text().replace("type: Bearer", "type: Bearer\n      username: x"))
    assert promtool("check", "config", "--syntax-only", broken).returncode != 0


def test_check_rules():
    result = promtool("check", "rules", RULES)
    assert_ok(result)
    assert "SUCCESS: 7 rules found" in result.stdout


def test_check_rules_fails_on_broken_rules(tmp_path):
    broken = tmp_path / "alerts.yml"
    broken.write_text(RULES.read_text().replace("> 10000", "> > 10000"))
    assert promtool("check", "rules", broken).returncode != 0


def test_rules_name_the_metrics_of_design_section_10():
    rules = {rule["alert"]: rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    assert set(rules) == {
        "ProgressTargetDown",
        "ProgressAnalyticsLagging",
        "ProgressAlertEmailsStuck",
        "ProgressWebhooksStuck",
        "ProgressUrgentAlertUnacknowledged",
        "ProgressIngestRejectingItems",
        "ProgressCeleryQueueBacklog",
    }
    expressions = " ".join(rule["expr"] for rule in rules.values())
    for metric in (
        'up{job="progress"}',
        "progress_analytics_lag_seconds",
        'progress_outbox_pending{kind="alert_email"}',
        'progress_outbox_pending{kind="webhook"}',
        'progress_alerts_unacknowledged_oldest_seconds{severity="urgent"}',
        'progress_ingest_items_total{result="rejected"}',
        "progress_celery_queue_length",
    ):
        assert metric in expressions
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_rules_unit_tests():
    """Each alert fires on its synthetic series, with its labels and annotations, and not on healthy ones."""
    result = promtool("test", "rules", RULES_TEST)
    assert_ok(result)
    assert "SUCCESS" in result.stdout


def test_rules_unit_tests_fail_on_a_wrong_threshold(tmp_path):
    """The unit tests catch a changed rule: the urgent-alert threshold doubled no longer fires in time."""
    shutil.copyfile(RULES_TEST, tmp_path / "alerts_test.yml")
    rules = RULES.read_text()
    assert rules.count("> 1800") == 1
    (tmp_path / "alerts.yml").write_text(rules.replace("> 1800", "> 3600"))
    result = promtool("test", "rules", tmp_path / "alerts_test.yml")
    assert result.returncode != 0
    assert "ProgressUrgentAlertUnacknowledged" in result.stdout + result.stderr


# ----- Prometheus against a token-protected exposition ----------------------------------------------------

EXPOSITION = """\
# HELP progress_analytics_lag_seconds The age of the oldest change not yet recomputed.
# TYPE progress_analytics_lag_seconds gauge
progress_analytics_lag_seconds 42.5
# HELP progress_outbox_pending Outbox rows not yet delivered.
# TYPE progress_outbox_pending gauge
progress_outbox_pending{kind="alert_email"} 3.0
progress_outbox_pending{kind="webhook"} 0.0
"""


class FakeMetrics:
    """A /metrics that serves EXPOSITION only with `Authorization: Bearer <token>`, 404 otherwise."""

    def __init__(self, token: str):
        self.token = token
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization header) of each request
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                metrics.seen.append((self.path, self.headers.get("Authorization")))
                if self.path == "/metrics" and self.headers.get("Authorization") == f"Bearer {metrics.token}":
                    body, status = EXPOSITION.encode(), 200
                else:
                    body, status = b"Not Found", 404
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def __enter__(self) -> FakeMetrics:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def metrics_token() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
def fake_metrics(metrics_token) -> Iterator[FakeMetrics]:
    with FakeMetrics(metrics_token) as server:
        yield server


def test_fake_metrics_needs_the_token(fake_metrics, metrics_token):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"http://{fake_metrics.address}/metrics", timeout=5)
    assert error.value.code == 404
    request = urllib.request.Request(
        f"http://{fake_metrics.address}/metrics", headers={"Authorization": f"Bearer {metrics_token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.read().decode() == EXPOSITION


def test_scrape_config_rewrite_changes_only_target_token_rules_and_intervals(tmp_path):
    shipped = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config = scrape_config(target="127.0.0.1:1234", credentials_file=tmp_path / "t", interval="1s")
    (job,) = config["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["127.0.0.1:1234"]}]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": str(tmp_path / "t")}
    assert config["rule_files"] == [str(RULES)]
    assert config["global"] == {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    for key in ("job_name", "metrics_path", "scheme"):
        assert job[key] == shipped["scrape_configs"][0][key]


def test_prometheus_scrapes_with_the_bearer_token(tmp_path, fake_metrics, metrics_token):
    with Prometheus(tmp_path, target=fake_metrics.address, token=metrics_token) as prometheus:
        assert prometheus.port != 9090
        target = prometheus.wait_target_up()
        assert target["scrapeUrl"] == f"http://{fake_metrics.address}/metrics"
        assert target["labels"] == {"job": JOB, "instance": fake_metrics.address}
        assert target["lastError"] == ""

        assert prometheus.wait_value(f'up{{job="{JOB}"}}') == 1
        assert prometheus.wait_value("progress_analytics_lag_seconds") == 42.5
        (pending,) = prometheus.wait_query('progress_outbox_pending{kind="alert_email"}')
        assert pending["metric"] == {
            "__name__": "progress_outbox_pending",
            "job": JOB,
            "instance": fake_metrics.address,
            "kind": "alert_email",
        }
        assert pending["value"][1] == "3"

        # The shipped rules are loaded and evaluated (an alert with `for:` is pending, not yet firing).
        rules = prometheus.api("rules")["groups"]
        assert {rule["name"] for group in rules for rule in group["rules"]} >= {"ProgressAlertEmailsStuck"}
        (alert,) = prometheus.wait_query('ALERTS{alertname="ProgressAlertEmailsStuck"}')
        assert alert["metric"]["alertstate"] == "pending"
        assert alert["metric"]["severity"] == "critical"
    assert prometheus.process is None
    assert (tmp_path / "prometheus" / "data").is_dir()  # its TSDB is in the test's tmp dir
    assert ("/metrics", f"Bearer {metrics_token}") in fake_metrics.seen


def test_prometheus_with_the_wrong_token_sees_the_target_down(tmp_path, fake_metrics, metrics_token):
    with Prometheus(tmp_path, target=fake_metrics.address, token="not-" + metrics_token) as prometheus:
        target = prometheus.wait_target_down()
        assert "404" in target["lastError"]
        assert prometheus.wait_value(f'up{{job="{JOB}"}}') == 0
        assert prometheus.query("progress_analytics_lag_seconds") == []
    assert all(auth == f"Bearer not-{metrics_token}" for _, auth in fake_metrics.seen)


def test_prometheus_stops_at_the_end(tmp_path, fake_metrics, metrics_token):
    prometheus = Prometheus(tmp_path, target=fake_metrics.address, token=metrics_token).start()
    process = prometheus.process
    assert process is not None and process.poll() is None
    prometheus.stop()
    assert process.poll() is not None
    prometheus.stop()  # idempotent
