"""Several web processes share Socket.IO rooms through Redis (REDIS_URL)."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis
import socketio as socketio_client

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:  # the service is part of this machine; CI starts it
        pytest.fail(f"Redis not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.mark.live
def test_emit_from_another_process_reaches_a_client_through_redis(live_server_factory,
                                                                   redis_url):
    """An emitter outside the web process (a worker, another web process) reaches the
    browsers connected to this one, because the app uses the Redis message queue."""
    prefix = f"yuanjiao-test-{uuid.uuid4().hex[:12]}"
    server = live_server_factory({"YUANJIAO_MEDIA": "off", "REDIS_URL": redis_url,
                                  "YUANJIAO_REDIS_PREFIX": prefix})
    received = threading.Event()
    marker = uuid.uuid4().hex
    got: list = []

    client = socketio_client.Client(reconnection=False)

    @client.on("redis_probe")
    def _probe(data):
        got.append(data)
        if data.get("marker") == marker:
            received.set()

    client.connect(server.url, transports=["websocket"], wait_timeout=10)
    try:
        # The deployment's channel: its key prefix's (YUANJIAO_SOCKETIO_CHANNEL unset).
        emitter = socketio_client.RedisManager(redis_url, channel=f"{prefix}:socketio",
                                               write_only=True)
        # The subscriber in the server may need a moment after connect; retry briefly.
        for _ in range(20):
            emitter.emit("redis_probe", {"marker": marker}, namespace="/")
            if received.wait(0.5):
                break
        assert received.is_set(), f"no message through Redis; got {got}"
    finally:
        client.disconnect()
