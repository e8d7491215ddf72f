"""The asynchronous live-update stream (ASGI), against the test run's Redis: its frames, that a bump wakes it
through the process's one watcher, its end with the session or after STREAM_SECONDS, a Redis outage, and the
view's choice of stream under ASGI."""

import asyncio
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import timedelta

import pytest
import redis
from django.test import AsyncClient
from django.utils import timezone

from tests.aio import run
from tracking import live
from tracking.live_watch import Watcher

PATIENT = "event: patient\ndata: {}\n\n"
ALERTS = "event: alerts\ndata: {}\n\n"
RETRY = "retry: 2000\n\n"


def _stream(patient_id=42, clinic_ids=(7,), expires_in=timedelta(minutes=5), **kwargs):
    return live.aevent_stream(
        patient_id=patient_id, clinic_ids=list(clinic_ids), session_expires_at=timezone.now() + expires_in, **kwargs
    )


async def _next(stream, timeout=3.0):
    return await asyncio.wait_for(anext(stream), timeout)


def test_a_bump_wakes_the_async_stream_through_the_process_watcher():
    async def scenario():
        stream = _stream()
        assert await _next(stream) == RETRY
        watcher = live.process_watcher()
        assert watcher.watched_keys == 2
        live.bump(patient_ids=[42])
        assert await _next(stream) == PATIENT
        live.bump(alert_clinic_ids=[7])
        assert await _next(stream) == ALERTS
        live.bump(patient_ids=[43])  # another patient's: nothing for this stream
        live.bump(patient_ids=[42], alert_clinic_ids=[7])
        assert [await _next(stream), await _next(stream)] == [ALERTS, PATIENT]
        await stream.aclose()
        assert watcher.watched_keys == 0

    run(scenario())


def test_the_async_stream_beats_and_ends_after_stream_seconds(monkeypatch):
    monkeypatch.setattr(live, "HEARTBEAT_SECONDS", 0.3)
    monkeypatch.setattr(live, "STREAM_SECONDS", 1.0)

    async def scenario():
        return [frame async for frame in _stream()]

    frames = run(scenario())
    assert frames[0] == RETRY and frames[-1] == 'event: bye\ndata: {"reason": "timeout"}\n\n'
    assert 2 <= frames.count(": heartbeat\n\n") <= 3 and len(frames) == frames.count(": heartbeat\n\n") + 2


def test_the_async_stream_ends_when_the_login_session_expires():
    async def scenario(expires_in):
        return [frame async for frame in _stream(expires_in=expires_in)]

    bye = 'event: bye\ndata: {"reason": "session"}\n\n'
    assert run(scenario(timedelta(0))) == [RETRY, bye]
    began = time.monotonic()
    assert run(scenario(timedelta(seconds=0.5))) == [RETRY, bye]
    assert time.monotonic() - began < 2  # at the expiry, not at the end of the stream


def _counting(read):
    calls = []

    async def counted(keys):
        calls.append(len(keys))
        return await read(keys)

    return counted, calls


def test_many_streams_share_one_read_per_tick():
    backend = live.caches["default"]
    client = redis.asyncio.Redis.from_url(live.settings.CACHES["default"]["LOCATION"])

    async def mget(keys):
        return await client.mget([backend.make_key(k) for k in keys])

    read, calls = _counting(mget)

    async def scenario():
        watcher = Watcher(read, interval=live.POLL_SECONDS, on_error=lambda e: None, on_recover=lambda: None)
        streams = [_stream(patient_id=1000 + i, clinic_ids=[7], watcher=watcher) for i in range(300)]
        assert [await _next(s) for s in streams] == [RETRY] * 300
        opened = len(calls)  # one baseline read per stream
        live.bump(patient_ids=[1007])
        woken = asyncio.ensure_future(_next(streams[7]))
        others = [asyncio.ensure_future(_next(s, timeout=30)) for s in streams[:7] + streams[8:]]
        assert await woken == PATIENT
        assert not any(o.done() for o in others)
        ticks = len(calls) - opened
        assert 1 <= ticks <= 6 and all(n == 301 for n in calls[opened:])  # every key in one MGET, per tick
        for other in others:
            other.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        for s in streams:
            await s.aclose()
        assert watcher.watched_keys == 0
        await client.aclose()

    run(scenario())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(port, directory):
    process = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("redis-server did not start")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_a_redis_outage_leaves_the_streams_open_and_they_recover(caplog):
    """A private Redis that the test stops and starts again: the stream sees no change while it is down, one
    warning names the exception type only, and a bump after its return reaches the stream."""
    port = _free_port()
    directory = tempfile.mkdtemp(prefix="live-redis-")
    process = _start_redis(port, directory)
    url = f"redis://127.0.0.1:{port}/0"
    writer = redis.Redis(port=port)
    key = live.patient_key(42)
    try:

        async def scenario():
            nonlocal process
            watcher = live.redis_watcher(url, lambda k: k)
            stream = _stream(watcher=watcher)
            assert await _next(stream) == RETRY
            writer.set(key, 1)
            assert await _next(stream) == PATIENT
            process.terminate()
            process.wait(10)
            pending = asyncio.ensure_future(_next(stream, timeout=30))
            while not any("cannot be read" in r.message for r in caplog.records):
                await asyncio.sleep(0.05)  # until the watcher has met the outage
            assert not pending.done()
            process = _start_redis(port, directory)  # empty: the key is gone, which is a change
            writer.set(key, 2)
            assert await asyncio.wait_for(pending, 5) == PATIENT
            await stream.aclose()

        with caplog.at_level(logging.INFO, logger="tracking.live"):
            run(scenario())
    finally:
        process.kill()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage() == (
        "live updates: the cache cannot be read (ConnectionError); open streams see no change"
    )
    assert any(r.getMessage() == "live updates: the cache answers again" for r in caplog.records)


@pytest.mark.django_db(transaction=True)
def test_under_asgi_the_view_streams_the_async_iterator(therapist_a, patient_a):
    """Django's async test client makes ASGI requests: the view answers with the async stream."""

    async def scenario():
        client = AsyncClient()
        await client.aforce_login(therapist_a)
        response = await client.get(f"/patients/{patient_a.player_id}/live")
        assert response.status_code == 200 and response.is_async
        assert response["Content-Type"] == "text/event-stream"
        stream = aiter(response.streaming_content)
        assert await _next(stream) == RETRY.encode()
        live.bump(patient_ids=[patient_a.pk])
        assert await _next(stream) == PATIENT.encode()
        await stream.aclose()

    run(scenario())
