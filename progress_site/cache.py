"""The cache backend: Django's RedisCache, with one Redis client per process.

Django keeps its cache objects per context, and under ASGI every request runs in a context of its own:
each request built a new RedisCache, with a new connection pool, and opened a new TCP connection to
Redis for its first cache call (redis-py also reads its own package metadata for each new connection).
That was about a tenth of a single-item ingest's CPU. Here every RedisCache of a process with the same
servers and options shares one client and its pool; redis-py's pool is thread-safe and starts afresh
in a forked child.
"""

import threading
from typing import Any, ClassVar

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property


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
                client = self._clients[key] = RedisCacheClient(self._servers, **self._options)
        return client
