"""The web tier's per-request costs under ASGI (issue 14, docs/performance.md): the cache's Redis client is
one per process, the middleware chain runs in one thread, and uvicorn uses its C parser and event loop."""

import contextvars

import pytest
import redis
from asgiref.sync import SyncToAsync
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings
from uvicorn_worker import UvicornWorker

from progress_site.asgi import application
from progress_site.cache import ProcessRedisCache
from tests.aio import run


def _in_a_new_context(function):
    """Runs `function` as a request does under ASGI: in a context of its own, where Django's cache handler
    holds no cache object yet."""
    return contextvars.Context().run(function)


async def _get(app, path: str) -> int:
    """The status of one GET through `app`, driven as an ASGI server drives it."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(10)
    while (await communicator.receive_output(10)).get("more_body"):
        pass
    await communicator.wait(10)
    return start["status"]


def _connections_received(admin: redis.Redis) -> int:
    return admin.info("stats")["total_connections_received"]


@pytest.mark.skipif(not settings.REDIS_URL, reason="the Redis cache needs REDIS_URL")
def test_requests_in_their_own_contexts_share_one_redis_client():
    assert isinstance(caches["default"], ProcessRedisCache)
    clients = [_in_a_new_context(lambda: caches["default"]._cache) for _ in range(3)]
    assert clients[0] is clients[1] is clients[2]

    _in_a_new_context(lambda: caches["default"].get("warm-up"))
    admin = redis.Redis.from_url(settings.REDIS_URL)
    before = _connections_received(admin)
    for i in range(20):
        _in_a_new_context(lambda i=i: caches["default"].set(f"web-tier-{i}", i, timeout=5))
    # Django's RedisCache opened a connection in every new context: 20 here.
    assert _connections_received(admin) - before == 0


@pytest.mark.skipif(not settings.REDIS_URL, reason="the Redis cache needs REDIS_URL")
def test_a_cache_with_other_servers_gets_a_client_of_its_own():
    other = {"BACKEND": "progress_site.cache.ProcessRedisCache", "LOCATION": settings.REDIS_URL + "0"}
    with override_settings(CACHES={"default": settings.CACHES["default"], "other": other}):
        assert caches["other"]._cache is not caches["default"]._cache


@pytest.mark.django_db(transaction=True)
def test_a_request_enters_the_middleware_chain_and_the_view_with_one_handoff(monkeypatch):
    """Every sync-to-async handoff of one request through the deployed ASGI application, counted."""
    handoffs = []
    original = SyncToAsync.__call__

    def counted(self, *args, **kwargs):
        handoffs.append(getattr(self.func, "__qualname__", repr(self.func)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted)
    assert run(_get(application, "/healthz")) == 200
    # request_started, the whole chain with the view, the response's close (request_finished). Django's own
    # ASGI chain made 12 here: each async-capable middleware's hooks and each process_view in threads.
    assert len(handoffs) == 3, handoffs


def test_uvicorn_workers_use_httptools_and_uvloop():
    assert UvicornWorker.CONFIG_KWARGS == {"loop": "auto", "http": "auto"}
    from uvicorn.loops.auto import auto_loop_factory
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    assert AutoHTTPProtocol.__name__ == "HttpToolsProtocol"
    assert type(auto_loop_factory()()).__module__.startswith("uvloop")


@pytest.mark.skipif(not settings.REDIS_URL, reason="the Redis cache needs REDIS_URL")
def test_cache_calls_share_one_redis_object_per_pool():
    client = caches["default"]._cache
    made = []
    real = client._client

    def counting(**kwargs):
        made.append(kwargs)
        return real(**kwargs)

    client._kept.clear()
    client._client = counting
    try:
        for i in range(10):
            caches["default"].set(f"kept-{i}", i, timeout=5)
            assert caches["default"].get(f"kept-{i}") == i
    finally:
        client._client = real
    # Django's client made a redis.Redis for each of these 20 calls.
    assert len(made) == 1
    assert client.get_client(write=True) is client.get_client(write=False)  # one server: one pool
