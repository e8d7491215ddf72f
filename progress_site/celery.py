"""The Celery app. Tasks live in the apps' tasks.py; the beat schedule lives here, in one place."""

import logging
import os
from typing import Any

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "progress_site.settings")


def _closed_broker_connection_is_a_connection_error() -> None:
    """Keeps the worker alive when Redis goes away while it holds unacknowledged messages (a running task
    under `acks_late`, an ETA task waiting for its time). On the connection loss, Celery closes the broken
    connection, which detaches kombu's Redis transport from its `Connection` (`transport.client = None`)
    before the channel's close tries to give the unacknowledged messages back, and the late acks of the
    tasks still running go through that channel too: kombu then builds a new Redis client from
    `transport.client.hostname` and raises `AttributeError: 'NoneType' object has no attribute
    'hostname'`, which is not a connection error, so the consumer's reconnect loop does not catch it and
    the worker stops ("Unrecoverable error"), then hangs in its shutdown until Redis is back (kombu
    5.7.0, celery 5.7.0; tests/test_broker_outage.py). Here a detached transport raises redis's
    ConnectionError instead: the restore and the late acks fail as a lost connection does, the worker
    reconnects, and those messages stay in Redis's unacked set, redelivered after the visibility timeout
    (settings.CELERY_BROKER_TRANSPORT_OPTIONS); the tasks are idempotent, and the sweeps find anything
    Redis itself lost."""
    import redis
    from kombu.transport import redis as kombu_redis

    channel = kombu_redis.Channel
    if getattr(channel._connparams, "detached_guard", False):
        return
    original = channel._connparams

    def _connparams(self, *args, **kwargs):
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection was closed")
        return original(self, *args, **kwargs)

    _connparams.detached_guard = True  # type: ignore[attr-defined]
    channel._connparams = _connparams


_closed_broker_connection_is_a_connection_error()

app = Celery("progress_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
from tracking.request_id import install as install_request_ids  # noqa: E402 (request ids, Django's LOGGING)

install_request_ids(app)

logger = logging.getLogger(__name__)


def enqueue(task, *args, countdown: float = 0) -> bool:
    """Sends a task; a broker outage is logged, not raised: the data is committed, and the periodic
    sweeps find what a task that was never sent left to do."""
    try:
        task.apply_async(args=args, countdown=countdown)
        return True
    except Exception as error:  # kombu OperationalError and friends; never fail the request that committed
        logger.warning("could not enqueue %s%s: %s", task.name, args, type(error).__name__)
        return False


def enqueue_once(task, *args, key: str, countdown: float = 0) -> bool:
    """Debounced `enqueue`: at most one queued run per `key` at a time (a burst of writes → one run); the
    task deletes `key` when it starts, so changes from then on queue a new run. With the cache down it
    sends anyway (a run twice is harmless). Returns whether a task was sent."""
    from django.core.cache import cache

    try:
        if not cache.add(key, 1, timeout=max(5, int(countdown) + 60)):
            return False  # a run is already queued and has not started yet
    except Exception as error:
        logger.warning("debounce cache unavailable: %s", type(error).__name__)
    if enqueue(task, *args, countdown=countdown):
        return True
    try:
        cache.delete(key)
    except Exception as error:
        logger.warning("debounce cache unavailable: %s", type(error).__name__)
    return False


class PendingSet:
    """A set of ids waiting for work, in Redis (`SADD` / `SPOP`): writers add, a draining task pops a
    group at a time, so a burst of changes to many patients becomes a few group runs. It is a speed-up,
    never the record: what it loses (Redis down, a worker killed after a pop) is found again by a sweep
    over the database. Errors are raised to the caller, which decides the fallback."""

    REDIS_CACHES = ("progress_site.cache.ProcessRedisCache", "django.core.cache.backends.redis.RedisCache")

    def __init__(self, name: str):
        self.name = name
        self._clients: dict[str, Any] = {}

    @staticmethod
    def _cache_settings() -> dict:
        from django.conf import settings

        return settings.CACHES["default"]

    def available(self) -> bool:
        """Whether the cache is Redis (the set lives beside it); not in the demo's in-memory cache."""
        return self._cache_settings()["BACKEND"] in self.REDIS_CACHES

    def _redis(self):
        location = self._cache_settings()["LOCATION"]
        if location not in self._clients:
            import redis

            self._clients[location] = redis.Redis.from_url(location, socket_timeout=5, socket_connect_timeout=2)
        return self._clients[location]

    @property
    def key(self) -> str:
        return f"{self._cache_settings().get('KEY_PREFIX', '')}:{self.name}"

    def add(self, ids: list[int]) -> None:
        if ids:
            self._redis().sadd(self.key, *ids)

    def pop(self, count: int) -> list[int]:
        return sorted(int(value) for value in self._redis().spop(self.key, count) or [])

    def members(self, ids: list[int]) -> set[int]:
        if not ids:
            return set()
        flags = self._redis().smismember(self.key, ids)
        return {i for i, member in zip(ids, flags, strict=True) if member}


def _beat_schedule() -> dict:
    from django.conf import settings

    return {
        # Patients whose data changed after their last computation (a lost or never-sent task), and
        # summaries from an earlier local day: analytics are delayed by an outage, never lost.
        "reconcile-analytics": {
            "task": "tracking.tasks.reconcile_analytics",
            "schedule": settings.ANALYTICS_RECONCILE_SECONDS,
        },
        # Celebration webhooks whose backoff has passed, or whose delivery task was lost.
        "retry-pending-webhooks": {
            "task": "tracking.tasks.retry_pending_webhooks",
            "schedule": settings.WEBHOOK_RETRY_SECONDS,
        },
        # Alert e-mails not sent yet (a lost task, or alerts raised by a recompute).
        "notify-pending-alerts": {
            "task": "reports.tasks.notify_pending_alerts",
            "schedule": settings.ALERT_SWEEP_SECONDS,
        },
        # Each night: verify every audit chain and write its signed head outside the database.
        "audit-nightly": {"task": "tracking.tasks.audit_nightly", "schedule": crontab(hour=2, minute=15)},
        # Urgent alerts not acknowledged in the clinic's escalation minutes: e-mail the clinic admins.
        "escalate-alerts": {"task": "reports.tasks.escalate_alerts", "schedule": settings.ALERT_SWEEP_SECONDS},
        # Each night: remove what aged out under the clinics' retention policies (DESIGN §7).
        "retention-nightly": {"task": "tracking.tasks.enforce_retention", "schedule": crontab(hour=3, minute=30)},
        # Each night: every clinic's expected-recovery references and its patients' not-on-track results.
        "references-nightly": {"task": "reports.tasks.rebuild_all_references", "schedule": crontab(hour=4, minute=0)},
        # Hourly: each therapist whose clinic's local hour is DIGEST_HOUR gets the day's measures-due digest.
        "measure-digests": {"task": "reports.tasks.send_measure_digests", "schedule": crontab(minute=5)},
    }


@app.on_after_configure.connect
def setup_periodic_tasks(sender, **kwargs):
    sender.conf.beat_schedule = _beat_schedule()
