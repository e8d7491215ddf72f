"""The cache backend: Django's RedisCache, with one Redis client per process.

Django keeps its cache objects per context, and under ASGI every request runs in a context of its own:
each request built a new RedisCache, with a new connection pool, and opened a new TCP connection to
Redis for its first cache call (redis-py also reads its own package metadata for each new connection).
That was about a tenth of a single-item ingest's CPU. Here every RedisCache of a process with the same
servers and options shares one client and its pool; redis-py's pool is thread-safe and starts afresh
in a forked child.

Django's client also made a new `redis.Redis` for every cache call (`get_client`), about 100 µs each
(it builds its table of response callbacks), a third of a cache read. A `redis.Redis` is thread-safe (it
takes a connection from its pool for each command), so one per pool is kept.
"""

import threading
from collections.abc import Callable
from typing import Any, ClassVar

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property


class KeptClientRedisCacheClient(RedisCacheClient):
    """Django's RedisCacheClient with one `redis.Redis` per connection pool instead of one per call."""

    _client: Any  # redis.Redis; set, with the method below, by RedisCacheClient (not in django-stubs)
    _get_connection_pool: Callable[[bool], Any]

    def __init__(self, servers: list[str], **options: Any):
        super().__init__(servers, **options)
        self._kept: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)
        client = self._kept.get(id(pool))
        if client is None:  # two threads may both make one: either does
            client = self._kept[id(pool)] = self._client(connection_pool=pool)
        return client


class ProcessRedisCache(RedisCache):
    _servers: list[str]  # set by RedisCache.__init__ (not in django-stubs)
    _options: dict[str, Any]
    _clients: ClassVar[dict[str, RedisCacheClient]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @cached_property
    def _cache(self) -> RedisCacheClient:
        key = repr((self._servers, sorted(self._options.items())))
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = KeptClientRedisCacheClient(self._servers, **self._options)
        return client
