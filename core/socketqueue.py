"""Socket.IO's Redis message queue, one PUBLISH per batch of emits instead of one per emit.

python-socketio's `RedisManager` publishes every emit to Redis from the handler that emits
it, and waits for Redis's answer there: under gevent each of a burst's handlers then takes
a pooled Redis connection (the pool grows to the burst's concurrency, making connections
as it goes) for one round trip. Profiled with py-spy in bench/stack.py (500 connections,
check-ins at 500/s), that was a third of a web process's CPU.

`BatchedRedisManager` delivers to this process's own sockets at once, as before, and hands
the message to one flusher task, which publishes whatever has queued meanwhile as one
message: ``B<host id><c or ->`` then the JSON list. Receivers unpack the list in order; a
process skips its own batches without decoding them (it delivered them already), unless
one carries a `callback` (acks routed through the queue are for whichever process waits).
Plain messages (another sender's, or a single one) are published as before, so processes
of both kinds on one channel understand each other.

The handlers never wait for Redis: with Redis away the flusher retries once, logs, and
drops the batch (the process's own sockets got their emits), as `RedisManager` gave up.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import socketio

log = logging.getLogger(__name__)

#: The flusher waits this long after the first queued message (seconds): the messages of a
#: burst then share one PUBLISH; a remote page sees its update this much later.
LINGER = 0.005
#: At most this many messages wait for the flusher (Redis away): older ones are dropped.
MAX_PENDING = 20000
BATCH = b"B"


class BatchedRedisManager(socketio.RedisManager):
    """A `socketio.RedisManager` whose publishes leave in batches (see the module)."""

    name = "redis-batched"
    connected: bool

    def __init__(self, url: str, channel: str = "socketio", linger: float = LINGER,
                 **kwargs: Any) -> None:
        super().__init__(url, channel=channel, **kwargs)
        self.linger = linger
        self._pending: list[dict[str, Any]] = []
        self._pending_lock = threading.Lock()
        self._flushing = False

    def _publish(self, data: dict[str, Any]) -> None:
        if self.server is None:  # a write-only emitter of another process: as before
            super()._publish(data)
            return
        with self._pending_lock:
            self._pending.append(data)
            if len(self._pending) > MAX_PENDING:
                del self._pending[:len(self._pending) - MAX_PENDING]
            if self._flushing:
                return
            self._flushing = True
        self.server.start_background_task(self._flush)

    def _flush(self) -> None:
        """Publish what has queued, until nothing has; one task at a time."""
        while True:
            self.server.sleep(self.linger)
            with self._pending_lock:
                batch, self._pending = self._pending, []
                if not batch:
                    self._flushing = False
                    return
            try:
                self._send(batch)
            except Exception:
                log.exception("could not publish %d Socket.IO messages", len(batch))

    def _send(self, batch: list[dict[str, Any]]) -> None:
        if len(batch) == 1:
            payload: str | bytes = self.json.dumps(batch[0])
        else:
            flag = "c" if any(m.get("method") == "callback" for m in batch) else "-"
            payload = f"B{self.host_id}{flag}{self.json.dumps(batch)}"
        for attempt in range(2):
            try:
                if not self.connected:
                    self._redis_connect()
                self.redis.publish(self.channel, payload)
                return
            except Exception as exc:
                self.connected = False
                if attempt:
                    log.error("cannot publish to Redis, %d Socket.IO messages dropped: %s",
                              len(batch), exc)

    def _listen(self):
        own = self.host_id.encode()
        for raw in super()._listen():
            if isinstance(raw, str):
                raw = raw.encode()
            if raw[:1] != BATCH:
                yield raw
                continue
            host, flag, body = raw[1:33], raw[33:34], raw[34:]
            if host == own and flag != b"c":
                continue  # delivered here when it was emitted
            yield from self.json.loads(body)
