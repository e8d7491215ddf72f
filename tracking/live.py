"""Live updates for open pages, as server-sent events.

Writers bump a version key in the cache (Redis in production) after their transaction commits; an open
page's event stream notices within `POLL_SECONDS` when one moves and sends an event, and the page then
fetches what changed. Streams are short (they end after `STREAM_SECONDS`, and when the login session
expires) and never extend the session: only what a person does keeps them logged in.

Two implementations of one stream, picked by the view for the server it runs under:
- `aevent_stream`, under ASGI (gunicorn's uvicorn workers, as deployed): an async iterator that holds no
  thread and reads nothing itself. One watcher per process (tracking/live_watch.py) reads every open
  stream's keys with one Redis MGET each `POLL_SECONDS` and wakes the streams whose keys moved.
- `event_stream`, under WSGI (runserver for the demo, the browser tests' live server): a generator that
  polls its own keys; it holds its thread for as long as it is open.
"""

import asyncio
import contextlib
import json
import logging
import re
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence

import redis.asyncio
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.utils import timezone
from redis.backoff import NoBackoff
from redis.retry import Retry

from tracking.live_watch import Watcher

logger = logging.getLogger(__name__)

STREAM_SECONDS = 55
POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15


def patient_key(patient_id: int) -> str:
    return f"live:patient:{patient_id}"


def clinic_alerts_key(clinic_id: int) -> str:
    return f"live:alerts:{clinic_id}"


def bump(*, patient_ids=(), alert_clinic_ids=()) -> None:
    """Marks patients (and clinics' alert inboxes) as changed. Never raises: live updates are a
    convenience, the page can always be reloaded."""
    stamp = time.time_ns()
    keys = {patient_key(p): stamp for p in patient_ids} | {clinic_alerts_key(c): stamp for c in alert_clinic_ids}
    if keys:
        try:
            cache.set_many(keys, timeout=3600)
        except Exception as error:  # the cache is down: the stream will not notice, a reload will
            logger.warning("live bump failed: %s", type(error).__name__)


def event_stream(*, patient_id: int | None, clinic_ids: list[int], session_expires_at):
    """Yields SSE frames: `patient` when the patient's data changed, `alerts` when a clinic's alerts did,
    a comment as heartbeat; stops after STREAM_SECONDS or when the login session expires."""
    keys = _keys(patient_id, clinic_ids)
    deadline = time.monotonic() + STREAM_SECONDS
    last_beat = time.monotonic()
    seen = _versions(keys)
    yield "retry: 2000\n\n"
    while time.monotonic() < deadline and timezone.now() < session_expires_at:
        time.sleep(POLL_SECONDS)
        current = _versions(keys)
        changed = [k for k in keys if current.get(k) != seen.get(k)]
        seen = current
        yield from _change_frames(changed, patient_id)
        if time.monotonic() - last_beat > HEARTBEAT_SECONDS:
            last_beat = time.monotonic()
            yield ": heartbeat\n\n"
    yield _bye(session_expires_at)


async def aevent_stream(
    *, patient_id: int | None, clinic_ids: list[int], session_expires_at, watcher: Watcher | None = None
) -> AsyncIterator[str]:
    """The frames of `event_stream`, as an async iterator for ASGI: it waits on the process's watcher (or
    the one given) for a change, the next heartbeat, the end of the stream or of the session."""
    keys = _keys(patient_id, clinic_ids)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_SECONDS
    next_beat = loop.time() + HEARTBEAT_SECONDS
    watcher = watcher or process_watcher()
    subscription = await watcher.watch(keys)
    try:
        yield "retry: 2000\n\n"
        while (now := loop.time()) < deadline and timezone.now() < session_expires_at:
            session_left = (session_expires_at - timezone.now()).total_seconds()
            changed = await subscription.wait(min(deadline - now, next_beat - now, session_left))
            for frame in _change_frames(changed, patient_id):
                yield frame
            if loop.time() >= next_beat:
                next_beat = loop.time() + HEARTBEAT_SECONDS
                yield ": heartbeat\n\n"
        yield _bye(session_expires_at)
    finally:  # also when the client went away and Django cancelled the response
        watcher.unwatch(subscription)


def _keys(patient_id: int | None, clinic_ids: list[int]) -> list[str]:
    keys = [clinic_alerts_key(c) for c in clinic_ids]
    if patient_id is not None:
        keys.append(patient_key(patient_id))
    return keys


def _change_frames(changed: Iterable[str], patient_id: int | None) -> list[str]:
    changed = set(changed)
    frames = []
    if any(k.startswith("live:alerts:") for k in changed):
        frames.append(_frame("alerts", {}))
    if patient_id is not None and patient_key(patient_id) in changed:
        frames.append(_frame("patient", {}))
    return frames


def _bye(session_expires_at) -> str:
    return _frame("bye", {"reason": "session" if timezone.now() >= session_expires_at else "timeout"})


def _versions(keys: list[str]) -> dict:
    with contextlib.suppress(Exception):
        return cache.get_many(keys)
    return {}


def _frame(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


# ----- the process's watcher, for the asynchronous streams -------------------------------------------

_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watcher] = weakref.WeakKeyDictionary()


def process_watcher() -> Watcher:
    """The watcher of this event loop (one per server process), made on first use."""
    loop = asyncio.get_running_loop()
    watcher = _watchers.get(loop)
    if watcher is None:
        backend = caches["default"]
        if isinstance(backend, RedisCache):
            location = settings.CACHES["default"]["LOCATION"]
            url = re.split("[;,]", location)[0] if isinstance(location, str) else location[0]
            watcher = redis_watcher(url, backend.make_key)
        else:  # the local-memory cache of the demo and of tests, read in a worker thread
            read = sync_to_async(lambda keys: [_versions(keys).get(k) for k in keys], thread_sensitive=False)
            watcher = Watcher(read, interval=POLL_SECONDS, on_error=_watch_failed, on_recover=_watch_recovered)
        _watchers[loop] = watcher
    return watcher


def redis_watcher(url: str, make_key) -> Watcher:
    """A watcher reading the cache's keys (named by `make_key`, as Django's cache names them) from Redis
    with redis.asyncio: one MGET per tick, bounded by short timeouts and never retried within a tick (the
    next tick is the retry)."""
    client = redis.asyncio.Redis.from_url(
        url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0), health_check_interval=30
    )

    async def read(keys: list[str]) -> Sequence[object]:
        return await client.mget([make_key(k) for k in keys])

    async def close() -> None:
        await client.connection_pool.disconnect()

    return Watcher(read, interval=POLL_SECONDS, on_error=_watch_failed, on_recover=_watch_recovered, on_idle=close)


def _watch_failed(error: BaseException) -> None:
    # The type only: neither the keys (which name patients) nor the message.
    logger.warning("live updates: the cache cannot be read (%s); open streams see no change", type(error).__name__)


def _watch_recovered() -> None:
    logger.info("live updates: the cache answers again")


# ----- receivers of the services' signals (connected in TrackingConfig.ready) ------------------------


def on_patients_changed(sender, *, patient_ids, **kwargs) -> None:
    """New data or freshly recomputed analytics: open pages of these patients redraw."""
    bump(patient_ids=patient_ids)


def on_alerts_changed(sender, *, clinic_ids, **kwargs) -> None:
    """Alerts raised, updated or acknowledged: the inboxes of these clinics' therapists redraw."""
    bump(alert_clinic_ids=clinic_ids)
