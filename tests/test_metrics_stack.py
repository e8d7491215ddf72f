"""Metrics under the production stack (tests/stack.py): gunicorn with 2 web workers and the Celery worker
sharing one multiprocess directory (compose's `metrics` volume), scraped in one request. The counts of
both web workers add up exactly, and what the worker's pool counted (the recompute) is in the same scrape."""

import glob
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.stack import Stack
from tests.test_celery_worker import Broker, wait_until
from tracking import metrics_files

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

METRICS_TOKEN = "stack-metrics-token-9e41"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
def stack(transactional_db, tmp_path):
    broker = Broker(tmp_path)
    broker.start()
    stack = Stack(
        tmp_path,
        redis_url=broker.url,
        env={"METRICS_TOKEN": METRICS_TOKEN},
        web_workers=2,
    )
    (tmp_path / "metrics").mkdir()
    # A web process's file of the last run on this host, and a file of another container's process.
    (tmp_path / "metrics" / f"counter_web-{metrics_files.HOST}-1.db").write_bytes(b"")
    (tmp_path / "metrics" / "counter_worker-othercontainer-1.db").write_bytes(b"")
    try:
        stack.start("web", "worker")
        yield stack
    finally:
        stack.stop()
        broker.stop()


def batch(n: int) -> dict:
    """Two new sessions and a marker of a player of its own: 3 items, all created."""
    player = f"mp-{n}"
    return {
        "sessions": [
            {"session_id": f"ms-{n}-{i}", "player_id": player, "started_at": (T0 + timedelta(hours=i)).isoformat(),
             "status": "completed", "duration_minutes": 10}
            for i in (1, 2)
        ],
        "markers": [
            {"marker_id": f"mm-{n}", "session_id": f"ms-{n}-1", "player_id": player, "type": "skill_acquired",
             "achieved_at": (T0 + timedelta(hours=1, minutes=5)).isoformat(), "therapeutic_value": 0.5}
        ],
    }  # fmt: skip


def scrape(stack: Stack) -> dict[tuple[str, frozenset], float]:
    # Plain HTTP, as Prometheus scrapes inside the host: not redirected to HTTPS (SECURE_REDIRECT_EXEMPT).
    status, headers, text = stack.request(
        "GET", "/metrics", headers={"X-Forwarded-Proto": "http", "Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert status == 200, (status, headers)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def ingested_by_process(directory) -> dict[str, float]:
    """progress_ingest_items_total of each web process, read from its own counter file."""
    counts = {}
    for path in glob.glob(os.path.join(directory, "counter_web-*.db")):
        for metric in MultiProcessCollector.merge([path]):
            if metric.name == "progress_ingest_items":
                counts[os.path.basename(path)] = sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return {name: n for name, n in counts.items() if n}


def test_two_web_workers_and_the_celery_worker_add_up_in_one_scrape(stack, clinic, token, tmp_path):
    directory = tmp_path / "metrics"
    assert not (directory / f"counter_web-{metrics_files.HOST}-1.db").exists()  # the web's last run: wiped
    # Another host's file is kept (this one is empty, as if cut short: each scrape leaves it out).
    assert (directory / "counter_worker-othercontainer-1.db").exists()
    assert stack.request("GET", "/metrics", headers={"X-Forwarded-Proto": "http"})[0] == 404

    posted = 0
    with ThreadPoolExecutor(6) as pool:
        # Fresh connections, several at once, until both web workers have served some (usually one round).
        for round_ in range(10):
            results = list(pool.map(lambda n: stack.ingest(token, batch(n)), range(round_ * 12, round_ * 12 + 12)))
            assert all(status == 201 for status, _, _ in results), results
            posted += 12 * 3
            if len(ingested_by_process(directory)) >= 2:
                break
    by_process = ingested_by_process(directory)
    assert len(by_process) == 2, by_process  # both gunicorn workers counted ingests, in files of their own

    after = scrape(stack)
    total = sum(v for (name, _), v in after.items() if name == "progress_ingest_items_total")
    assert total == posted == sum(by_process.values())
    created = {dict(labels)["kind"]: v for (name, labels), v in after.items()
               if name == "progress_ingest_items_total" and dict(labels)["result"] == "created"}  # fmt: skip
    assert created == {"sessions": posted * 2 / 3, "markers": posted / 3, "outcomes": 0, "alerts": 0}
    requests = posted / 3
    assert after[("progress_ingest_request_seconds_count", frozenset())] == requests
    assert after[("progress_http_request_seconds_count", frozenset({("view", "api-ingest")}))] == requests
    assert after[("progress_audit_events_total", frozenset({("action", "ingest")}))] == requests

    # The worker's pool recomputes the changed patients; its histogram is in the web's scrape.
    def recomputed():
        values = scrape(stack)
        return values if values.get(("progress_analytics_stale_patients", frozenset())) == 0 else None

    values = wait_until(recomputed, 90, "the worker to recompute every patient")
    time.sleep(0.5)
    values = scrape(stack)
    assert values[("progress_recompute_seconds_count", frozenset())] >= 1
    assert glob.glob(str(directory / "histogram_worker-*.db"))
    assert values[("progress_analytics_lag_seconds", frozenset())] == 0
    assert ("progress_celery_queue_length", frozenset()) in values


def test_debians_prometheus_scrapes_the_running_app_with_the_shipped_config(stack, clinic, token, tmp_path):
    """deploy/prometheus/prometheus.yml (tests/prometheus.py: only the target, the token file and the
    intervals changed) scrapes the stack's web over plain HTTP with the bearer token."""
    from tests.prometheus import Prometheus

    assert stack.ingest(token, batch(1))[0] == 201
    with Prometheus(tmp_path, target=f"127.0.0.1:{stack.port}", token=METRICS_TOKEN) as prometheus:
        target = prometheus.wait_target_up(timeout=60)
        assert target["health"] == "up", target
        created = prometheus.wait_value(
            'sum(progress_ingest_items_total{job="progress", result="created"})', lambda v: v == 3, timeout=60
        )
        assert created == 3
        assert prometheus.wait_value('progress_alerts_open{job="progress", severity="urgent"}') == 0
