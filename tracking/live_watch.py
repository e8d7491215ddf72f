"""One watcher per event loop for the asynchronous live-update streams (tracking/live.py).

A single task reads every watched version key with one read (one Redis MGET) each `interval` seconds and
wakes the streams whose keys moved, through an asyncio event each: a thousand open streams cost one round
trip per interval, not a thousand. The task runs while some stream watches, and stops with the last one.

A failed read is a tick without news: the streams see no change, `on_error` is told once per outage (with
the exception, for the caller to log its type), `on_recover` when a read succeeds again. asyncio only: no
Django, no project module.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence

# Reads the current values of these keys, in order (None for a missing key); raises when it cannot.
Reader = Callable[[list[str]], Awaitable[Sequence[object]]]


class Subscription:
    """One stream's keys, the versions it has seen, and the keys that moved since it last asked."""

    def __init__(self, keys: Sequence[str], seen: dict[str, object], joined: int) -> None:
        self.keys = tuple(keys)
        self.seen = seen
        self.joined = joined  # the watcher's round in flight when this subscription joined
        self.changed: set[str] = set()
        self._event = asyncio.Event()

    def mark(self, key: str) -> None:
        self.changed.add(key)
        self._event.set()

    async def wait(self, timeout: float) -> set[str]:
        """The keys that moved since the last call, waiting at most `timeout` seconds for one to move."""
        if not self.changed and timeout > 0:
            try:
                async with asyncio.timeout(timeout):
                    await self._event.wait()
            except TimeoutError:
                pass
        changed, self.changed = self.changed, set()
        self._event.clear()
        return changed


class Watcher:
    def __init__(
        self,
        read: Reader,
        *,
        interval: float,
        on_error: Callable[[BaseException], None],
        on_recover: Callable[[], None],
        on_idle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._read = read
        self._interval = interval
        self._on_error = on_error
        self._on_recover = on_recover
        self._on_idle = on_idle  # e.g. closes the connections when no stream watches
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._round = 0
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def watched_keys(self) -> int:
        return len(self._subscriptions)

    async def watch(self, keys: Sequence[str]) -> Subscription:
        """Registers a stream. Its baseline is what the keys hold now; when the read fails (or reads are
        failing), the first good read of the watcher is the baseline instead."""
        values = None if self._failing else await self._read_or_none(list(keys))
        seen = dict(zip(keys, values, strict=True)) if values is not None else {}
        subscription = Subscription(keys, seen, self._round)
        for key in subscription.keys:
            self._subscriptions.setdefault(key, set()).add(subscription)
        if self._task is None:
            # A context of its own: the task outlives the request that started it.
            self._task = asyncio.get_running_loop().create_task(self._run(), context=contextvars.Context())
        return subscription

    def unwatch(self, subscription: Subscription) -> None:
        for key in subscription.keys:
            subscriptions = self._subscriptions.get(key)
            if subscriptions is not None:
                subscriptions.discard(subscription)
                if not subscriptions:
                    del self._subscriptions[key]

    async def _run(self) -> None:
        try:
            while self._subscriptions:
                await asyncio.sleep(self._interval)
                keys = list(self._subscriptions)
                self._round += 1
                this_round = self._round
                values = await self._read_or_none(keys)
                if values is not None:
                    self._compare(keys, values, this_round)
        finally:
            self._task = None
            if self._on_idle is not None and not self._subscriptions:
                await self._on_idle()

    def _compare(self, keys: list[str], values: Sequence[object], this_round: int) -> None:
        for key, value in zip(keys, values, strict=True):
            for subscription in self._subscriptions.get(key, ()):
                if subscription.joined >= this_round:
                    continue  # this read began before it joined: it may be older than its baseline
                if key not in subscription.seen:
                    subscription.seen[key] = value
                elif subscription.seen[key] != value:
                    subscription.seen[key] = value
                    subscription.mark(key)

    async def _read_or_none(self, keys: list[str]) -> Sequence[object] | None:
        try:
            values = await self._read(keys)
        except Exception as error:
            if not self._failing:
                self._failing = True
                self._on_error(error)
            return None
        if self._failing:
            self._failing = False
            self._on_recover()
        return values
