"""GET /metrics (DESIGN §10): the Prometheus text format, for `Authorization: Bearer <METRICS_TOKEN>` only.

Without the token, with a wrong one, or when METRICS_TOKEN is not set, the answer is the site's 404, the
same as for a page that does not exist. The scrape is not a read of patient data and records no audit
event. It serves the counters and histograms of every process (`tracking.metrics`, added up from the
multiprocess directory when there is one) and the gauges below, read from the database now, in a fixed
number of index-backed queries (tests/test_metrics.py pins it). Clinics are never labelled (not even by
slug): the gauges are totals of the installation.

Also the middleware that times every request by view (`progress_http_request_seconds`).
"""

from __future__ import annotations

import glob
import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count, Min
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from reports.models import Alert, AlertSeverity
from tracking import metrics, metrics_files
from tracking.models import Patient, WebhookDelivery

logger = logging.getLogger(__name__)

CELERY_QUEUE_TIMEOUT_SECONDS = 0.5


class DatabaseCollector:
    """The gauges, from the database at scrape time: 4 queries."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()

        # 1. The stale patients and the oldest of their changes (partial index patient_stale_analytics).
        stale = Patient.objects.stale_analytics().aggregate(n=Count("pk"), oldest=Min("data_changed_at"))
        yield GaugeMetricFamily(
            "progress_analytics_stale_patients",
            "Patients whose data changed after their analytics were last computed.",
            value=stale["n"],
        )
        yield GaugeMetricFamily(
            "progress_analytics_lag_seconds",
            "Age of the oldest change not yet in the analytics (0 when none is waiting).",
            value=_age(now, stale["oldest"]),
        )

        # 2. Unacknowledged alerts by severity (partial index alert_unacknowledged).
        rows = {
            row["severity"]: row
            for row in Alert.objects.filter(acknowledged_at__isnull=True)
            .order_by()
            .values("severity")
            .annotate(n=Count("pk"), oldest=Min("created_at"))
        }
        open_alerts = GaugeMetricFamily(
            "progress_alerts_open", "Alerts not acknowledged yet, by severity.", labels=["severity"]
        )
        oldest = GaugeMetricFamily(
            "progress_alerts_unacknowledged_oldest_seconds",
            "Age of the oldest unacknowledged alert since it was raised, by severity (0 when none).",
            labels=["severity"],
        )
        for severity in AlertSeverity.values:
            row = rows.get(severity)
            open_alerts.add_metric([severity], row["n"] if row else 0)
            oldest.add_metric([severity], _age(now, row["oldest"] if row else None))
        yield open_alerts
        yield oldest

        # 3, 4. The outboxes: alert e-mails not sent (partial index alert_to_notify), webhooks pending
        # delivery (index webhook_due; a delivery that gave up after its last attempt is `failed`, not pending).
        outbox = GaugeMetricFamily(
            "progress_outbox_pending",
            "Work committed and not delivered yet: alert_email, alerts whose e-mail is not sent; webhook, "
            "milestone webhooks not delivered (and not given up).",
            labels=["kind"],
        )
        outbox.add_metric(["alert_email"], Alert.objects.filter(notified_at__isnull=True).count())
        outbox.add_metric(["webhook"], WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING).count())
        yield outbox

        length = celery_queue_length()
        if length is not None:
            yield GaugeMetricFamily(
                "progress_celery_queue_length",
                "Tasks waiting in the Celery queue in Redis (0 when tasks run in the process; absent when "
                "Redis does not answer).",
                value=length,
            )


def _age(now: Any, since: Any) -> float:
    return max(0.0, (now - since).total_seconds()) if since is not None else 0.0


def celery_queue_length() -> int | None:
    """LLEN of the Celery queue in the Redis broker; 0 without a Redis broker (tasks run in the process);
    None when Redis does not answer within half a second."""
    url = settings.CELERY_BROKER_URL
    if settings.CELERY_TASK_ALWAYS_EAGER or not url.startswith(("redis://", "rediss://", "unix://")):
        return 0
    import redis

    queue = getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")
    try:
        client = redis.Redis.from_url(
            url, socket_timeout=CELERY_QUEUE_TIMEOUT_SECONDS, socket_connect_timeout=CELERY_QUEUE_TIMEOUT_SECONDS
        )
        try:
            return int(client.llen(queue))
        finally:
            client.close()
    except redis.RedisError:
        return None


class FilesCollector:
    """The counters and histograms of every process, from the multiprocess directory: prometheus_client's
    MultiProcessCollector, except that a file it cannot read (one a process is creating right now, or one
    cut short by a full disk) is left out of this scrape, with a warning, instead of failing the scrape."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Iterable[Metric]:
        files = glob.glob(os.path.join(glob.escape(self.path), "*.db"))
        try:
            return MultiProcessCollector.merge(files, accumulate=True)  # every file read once, as a rule
        except Exception:  # noqa: BLE001, S110 - one of them cannot be read: found below
            pass
        readable = []
        for name in files:
            try:
                MultiProcessCollector.merge([name])
            except Exception as error:  # mmap's and struct's errors, a file removed meanwhile
                logger.warning("metrics file skipped: %s (%s)", os.path.basename(name), type(error).__name__)
                continue
            readable.append(name)
        return MultiProcessCollector.merge(readable, accumulate=True)


class _Scrape:
    """What one scrape serves: the counters and histograms, then the gauges."""

    def __init__(self) -> None:
        path = metrics_files.directory()
        self.counted = FilesCollector(path) if metrics.MULTIPROCESS and path else metrics.REGISTRY

    def collect(self) -> Iterator[Metric]:
        yield from self.counted.collect()
        yield from DatabaseCollector().collect()


def exposition() -> bytes:
    return generate_latest(_Scrape())  # any object with collect() will do


def authorized(request: HttpRequest) -> bool:
    expected = getattr(settings, "METRICS_TOKEN", "")
    given = request.headers.get("Authorization", "")
    if not expected or not given.startswith("Bearer "):
        return False
    return hmac.compare_digest(given.removeprefix("Bearer ").strip().encode(), expected.encode())


@login_not_required
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not authorized(request):
        raise Http404
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


class RequestTimingMiddleware:
    """`progress_http_request_seconds{view}`: each request's time, labelled by the view that answered."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        try:
            return self.get_response(request)
        finally:
            match = getattr(request, "resolver_match", None)
            metrics.view_timed(match.view_name if match is not None else "unresolved", time.perf_counter() - started)
